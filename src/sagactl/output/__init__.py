"""What users see: plain and JSON lines (`lines`), the live view (`live`), JUnit reports
(`junit`), views of journaled runs (`run_views`: `list`, `show`) and of sagas (`saga_views`:
`validate`, `plan`, `graph`). Renderers read events and records; none drives the engine.
"""
