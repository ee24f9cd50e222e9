"""HTTP steps: the request built from a step (`prepare`), one attempt of it and its
classification (`attempt`), and the transport that bounds each attempt (`transport`). The only
package that imports httpx."""
