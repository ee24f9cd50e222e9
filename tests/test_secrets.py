"""No secret in any byte (SPEC §2.2, §2.7, §4): secrets drawn from a hostile alphabet, placed
in every location a saga can put them, through every filter, sent to a service that echoes
the whole request back in every encoding it knows, on the success, failure and retry paths;
then every byte of every sink is searched for every form of every secret and of every value
derived from one.

The forms searched for, and the values a template derives, are computed here, independently
of sagactl: with the standard library's encoders and a plain Jinja2 environment.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import jinja2
import markupsafe
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import cli

CASES = int(os.environ.get("SAGACTL_SECRET_CASES", "300"))


# --- the echo service ------------------------------------------------------------------------


class Echo:
    """Answers every request with all of it — request line (as sent, and decoded), headers,
    body — in its body (as JSON, percent-encoded, form-encoded, base64…) and in its headers.
    `/fail` answers 422, `/flaky` 503 on the first attempt of each key, `/ok` 200."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
                request = f"{self.command} {self.path}\n{unquote(self.path)}\n{head}\n\n{body}"
                encoded = request.encode("utf-8", "replace")
                echoed = {
                    "request": request,
                    "quoted": quote(request, safe=""),
                    "quoted_slash": quote(request),
                    "lower": lower_hex(quote(request, safe="")),
                    "form": quote_plus(request),
                    "b64": base64.b64encode(encoded).decode(),
                    "b64url": base64.urlsafe_b64encode(encoded).decode().rstrip("="),
                    # and each header value on its own, as a service that logs one would
                    "header_b64": {
                        k: base64.b64encode(v.encode()).decode() for k, v in self.headers.items()
                    },
                    "header_b64url": {
                        k: base64.urlsafe_b64encode(v.encode()).decode()
                        for k, v in self.headers.items()
                    },
                }
                key = self.headers.get("Idempotency-Key", "")
                status = 200
                if self.path.startswith("/fail"):
                    status = 422
                elif self.path.startswith("/flaky") and key not in echo.seen:
                    echo.seen.add(key)
                    status = 503
                ascii_only = "ascii" in self.path
                data = json.dumps(echoed, ensure_ascii=ascii_only).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Echo", quote(request, safe=""))
                self.send_header("X-Echo-B64", echoed["b64"])
                self.send_header("Set-Cookie", f"echo={echoed['quoted'][:200]}")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    service = Echo()
    yield service
    service.server.shutdown()
    service.server.server_close()


# --- secrets, where they go, what is done to them -----------------------------------------------

HOSTILE = "/+=%&?#:@\"'\\ \t-_.~!$*,;()[]<>{}|^`" + "éß€日本😀"
FILTERS = {
    "none": "{x}",
    "urlencode": "{x} | urlencode",
    "b64encode": "{x} | b64encode",
    "b64url": "{x} | b64encode(urlsafe=true)",
    "lower": "{x} | lower",
    "upper": "{x} | upper",
    "slice": "{x}[1:]",
    "concat": "{x} ~ '.tail'",
    "tojson": "{x} | tojson",
    "trim": "{x} | trim",
    "replace": "{x} | replace('a', '@@')",
}
LOCATIONS = (
    "path",
    "query",
    "header",
    "basic",
    "bearer",
    "json",
    "form",
    "body",
    "vars",
    "env",
    "compensate",
    "foreach",
)
PATHS = ("ok", "ok-ascii", "fail", "flaky")


def secret_values() -> st.SearchStrategy[str]:
    """8 to 64 characters, most of them hostile around a plain core that begins `Qz`: it
    keeps a secret from being a string that sagactl writes anyway (four spaces, `NULL`),
    which would be found where no secret went."""
    hostile = st.text(st.sampled_from(HOSTILE), max_size=28)
    core = st.text(
        st.sampled_from("abcdefghijkmnopqrstuvwxyzBCDEFGHJKLMNPRSTUVWXY3456789"),
        min_size=6,
        max_size=6,
    ).map(lambda c: "Qz" + c)
    return st.tuples(hostile, core, hostile).map("".join).filter(lambda s: len(s) <= 64)


@dataclass
class Case:
    secret: str
    other: str
    location: str
    filter: str
    path: str


cases = st.builds(
    Case,
    secret_values(),
    secret_values(),
    st.sampled_from(LOCATIONS),
    st.sampled_from(list(FILTERS)),
    st.sampled_from(PATHS),
)


def expression(case: Case, source: str = "secrets.S") -> str:
    return FILTERS[case.filter].format(x=source)


def saga_text(case: Case) -> str:
    """Step `a` carries the secret as the case says; step `b` sends a's echo back as a bearer
    token and a's output as a header (both outputs hold the secret); for `foreach`, step
    `d` runs once per item of a list holding the secret, each item in its URL; `c` fails on
    the failure path, so that `a`, `b` (and `d`) are compensated."""
    x = "{{ " + expression(case) + " }}"
    url = f"/{case.path}/a"
    fields: dict[str, str] = {}
    base = "{{ env.BASE }}"
    if case.location == "path":
        url += "/" + x
    elif case.location == "query":
        fields["query"] = "{k: " + json.dumps(x) + "}"
    elif case.location == "header":
        fields["headers"] = "{X-Key: " + json.dumps(x) + "}"
    elif case.location == "basic":
        fields["auth"] = "{basic: [user, " + json.dumps(x) + "]}"
    elif case.location == "bearer":
        fields["auth"] = "{bearer: " + json.dumps(x) + "}"
    elif case.location == "json":
        fields["json"] = "{v: " + json.dumps(x) + ", n: 1}"
    elif case.location == "form":
        fields["form"] = "{v: " + json.dumps(x) + "}"
    elif case.location == "body":
        fields["body"] = json.dumps("text " + x)
    elif case.location == "vars":
        fields["headers"] = '{X-Var: "{{ vars.v }}"}'
    elif case.location == "env":
        base = "{{ env.AUTH_BASE }}"
    action = ", ".join(
        [
            f"method: PUT, url: {json.dumps(url)}",
            f"base_url: {json.dumps(base)}",
            *(f"{k}: {v}" for k, v in fields.items()),
        ]
    )
    compensate = f'url: "/ok/undo-a{"/" + x if case.location == "compensate" else ""}"'
    lines = [
        "version: 1",
        "name: secrets",
        "env: [BASE, AUTH_BASE]",
        "secrets: [S, OTHER]",
        "vars:",
        f"  v: {json.dumps(x)}",
        "defaults:",
        '  base_url: "{{ env.BASE }}"',
        "  timeout: 2s",
        "  retry: {attempts: 2, backoff: 1ms, jitter: false}",
        '  headers: {X-Other: "{{ secrets.OTHER }}"}',
        "steps:",
        "  - id: a",
        f"    action: {{{action}}}",
        "    outputs:",
        '      echo: "{{ response.json.request }}"',
        '      token: {value: "{{ response.json.b64 }}", secret: true}',
        f"    compensate: {{method: DELETE, {compensate}}}",
        "  - id: b",
        '    action: {method: PUT, url: "/ok/b", headers: {X-Echo: '
        '"{{ steps.a.outputs.echo | urlencode }}"}, auth: {bearer: '
        '"{{ steps.a.outputs.token }}"}}',
        '    outputs: {text: "{{ response.text }}"}',
        '    compensate: {method: DELETE, url: "/ok/undo-b"}',
    ]
    if case.location == "foreach":
        lines += [
            "  - id: d",
            f"    foreach: {json.dumps('{{ [' + expression(case) + ', ' + repr('plain') + '] }}')}",
            "    as: v",
            f'    action: {{method: PUT, url: "/{case.path}/d/{{{{ item.v }}}}"}}',
            '    outputs: {echo: "{{ response.json.request }}"}',
            '    compensate: {method: DELETE, url: "/ok/undo-d/{{ item.v }}"}',
        ]
    lines += [
        "  - id: c",
        f'    action: {{method: PUT, url: "/{"fail" if case.path == "fail" else "ok"}/c"}}',
    ]
    return "\n".join(lines) + "\n"


# --- what the oracle looks for -----------------------------------------------------------------

_PLAIN_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)
_PLAIN_JINJA.filters["b64encode"] = lambda v, urlsafe=False: (
    base64.urlsafe_b64encode if urlsafe else base64.b64encode
)(str(v).encode()).decode()


def derived(case: Case) -> set[str]:
    """Every value a template of the saga derives from a secret, computed with plain
    Jinja2: the value itself, the filtered one, and credentials built from them."""
    filtered = _PLAIN_JINJA.from_string("{{ " + expression(case, "s") + " }}").render(s=case.secret)
    values = {case.secret, case.other, filtered}
    if case.location == "basic":
        pair = f"user:{filtered}"
        values |= {pair, base64.b64encode(pair.encode()).decode()}
    if case.location == "env":
        values.add(quote(case.secret, safe=""))
    return {v for v in values if len(v) >= 4}


def lower_hex(text: str) -> str:
    """Percent-encoding with lowercase hex digits, as some encoders write it."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def forms(value: str) -> set[str]:
    raw = value.encode()
    found = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        lower_hex(quote(value, safe="")),
        lower_hex(quote(value)),
        lower_hex(quote_plus(value)),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(value)[1:-1].replace("/", "\\/"),
        html.escape(value),  # pages, reports (&amp; &lt; &gt; &quot; &#x27;)
        html.escape(value, quote=False),
        str(markupsafe.escape(value)),  # Jinja2's: &#34; &#39;
        html.escape(json.dumps(value)[1:-1]),  # a JSON body shown on a page
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        found |= {whole, whole.rstrip("=")}
        for before in (0, 1, 2):  # inside a longer base64 text
            encoded = encode(b"\0" * before + raw).decode()
            first, last = -(-before // 3), (before + len(raw)) // 3
            found.add(encoded[4 * first : 4 * last])
    return {f for f in found if len(f) >= 4}


@dataclass
class Sinks:
    """Every byte sagactl wrote, by where it went."""

    parts: dict[str, bytes]

    def leaks(self, values: set[str]) -> list[tuple[str, str, str]]:
        found = []
        for value in values:
            for form in forms(value):
                needle = form.encode()
                for name, data in self.parts.items():
                    if needle in data:
                        found.append((name, value, form))
        return found


def on_a_terminal(args: list[str], env: dict[str, str], columns: int) -> bytes:
    """Every byte the command line writes to a terminal (a pseudo-terminal: the live view),
    stdout and stderr both."""
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagactl", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, **env, "TERM": "xterm", "COLUMNS": str(columns), "LINES": "30"},
        close_fds=True,
    )
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: the process is gone
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    proc.wait(timeout=60)
    return bytes(out)


def pages(journal: Path, run_id: str) -> dict[str, bytes]:
    """The dashboard's pages of the journal: the list, searched too, and the run."""
    import asyncio

    import httpx

    from sagactl.cli import _run_data
    from sagactl.journal import open_journal
    from sagactl.output.pages.server import create_app

    async def fetch(app: Any) -> dict[str, bytes]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            paths = ("/", f"/runs/{run_id}", "/?status=compensated", "/?q=Qz")
            answers = {path: await client.get(path) for path in paths}
        assert all(a.status_code == 200 for a in answers.values()), answers
        return {f"page {path}": answer.content for path, answer in answers.items()}

    with open_journal(journal) as store:
        return asyncio.run(fetch(create_app(store, lambda run: _run_data(store, run))))


def run_everything(tmp: Path, echo: Echo, case: Case, *, terminal: bool = False) -> Sinks:
    saga = tmp / "secrets.yaml"
    saga.write_text(saga_text(case))
    journal = tmp / "journal.db"
    junit = tmp / "report.xml"
    env = {
        "BASE": echo.url,
        "S": case.secret,
        "OTHER": case.other,
        "NO_COLOR": "1",
        "AUTH_BASE": f"http://admin:{quote(case.secret, safe='')}@{echo.url[7:]}",
        "SAGACTL_JOURNAL": str(journal),
        "XDG_CACHE_HOME": str(tmp / "cache"),  # the checked sagas, read below
    }
    parts: dict[str, bytes] = {}

    def keep(name: str, *args: str) -> str:
        result = cli(*args, env=env)  # type: ignore[arg-type]
        parts[f"{name} stdout"] = result.stdout.encode()
        parts[f"{name} stderr"] = result.stderr.encode()
        return result.stdout

    if terminal:
        for columns in (100, 40):
            parts[f"terminal {columns}"] = on_a_terminal(["run", str(saga)], env, columns)
    first = keep(
        "run -v", "run", str(saga), "-v", "--junit", str(junit), "--report", str(tmp / "r.html")
    )
    notified = tmp / "notified.json"
    keep(
        "run json",
        "run",
        str(saga),
        "--output",
        "json",
        "--notify",
        f"cat >> {notified}",
        "--notify-on",
        "stuck,compensated,succeeded",
    )
    lines = tmp / "lines.jsonl"
    lines.write_text("{}\n{}\n")
    keep("each json", "run", str(saga), "--each", str(lines), "--output", "json")
    keep("submit", "submit", str(saga), "--each", str(lines))
    keep("worker", "worker", "--until-idle")
    keep("plan", "plan", str(saga))
    keep("validate", "validate", str(saga))
    run_id = first.splitlines()[0] if first else ""
    if len(run_id) == 26:
        keep("show", "show", run_id)
        keep("show json", "show", run_id, "--output", "json")
        keep("resume", "resume", run_id)
        keep("report", "report", run_id, "-o", str(tmp / "report.html"))
        parts.update(pages(journal, run_id))
    for path in tmp.iterdir():
        if path.name.startswith("journal.db") or path.name in (
            "report.xml",
            "notified.json",
            "r.html",
            "report.html",
        ):
            parts[path.name] = path.read_bytes()
    for path in (tmp / "cache").rglob("*"):
        if path.is_file():
            parts[f"cache {path.name}"] = path.read_bytes()
    if len(run_id) == 26:  # the saga was valid, so it was cached: the cache was searched
        assert any(name.startswith("cache ") for name in parts), "nothing was cached"
    return Sinks(parts)


@settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases)
@example(case=Case("ab+/Qzcd=ef", "tok-5ecr3t/+=value", "query", "urlencode", "ok"))
@example(case=Case("p@ss w0rd/Qzé", "tok-5ecr3t/+=value", "basic", "none", "flaky"))
@example(case=Case('Qzq9x\n"\\<>', "tok-5ecr3t/+=value", "header", "none", "ok"))
@example(case=Case("p/Qzé ?#x", "tok-5ecr3t/+=value", "foreach", "urlencode", "fail"))
def test_no_form_of_any_secret_reaches_any_sink(
    case: Case, echo: Echo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("secrets")
    sinks = run_everything(tmp, echo, case)
    assert sinks.parts["run -v stdout"] or sinks.parts["run -v stderr"]
    leaks = sinks.leaks(derived(case))
    assert not leaks, leaks[:5]


@pytest.mark.parametrize(
    "case",
    [
        Case("ab+/Qzcd=ef", "tok-5ecr3t/+=value", "query", "urlencode", "fail"),
        Case("p@ss w0rd/Qzé", "tok-5ecr3t/+=value", "basic", "none", "flaky"),
        Case('Qz>?~ a b+/"cd=é', "tok-5ecr3t/+=value", "header", "none", "fail"),
    ],
    ids=["query-fail", "basic-flaky", "header-fail"],
)
def test_the_live_view_on_a_terminal_shows_no_secret(
    case: Case, echo: Echo, tmp_path: Path
) -> None:
    """The live view (rich, on a pseudo-terminal) at two widths: every byte, control
    sequences and all, searched as the other sinks are."""
    sinks = run_everything(tmp_path, echo, case, terminal=True)
    for columns in (100, 40):
        shown = sinks.parts[f"terminal {columns}"]
        assert b"\x1b[" in shown and b"tries" in shown, shown[:500]  # it was the live view
        if case.path == "fail":
            # the summary quotes the request and the echoed answer: masked
            assert b"response: " in shown and b"***" in shown, shown[-2000:]
    leaks = sinks.leaks(derived(case))
    assert not leaks, leaks[:5]


MUTATION_CASE = Case('Qz>?~ a b+/"cd=é', "tok-5ecr3t/+=value", "header", "none", "ok")
"""A secret with a space, `/`, `+`, `"` and a non-ASCII letter, whose base64 and base64url
differ: every form of it is met."""


@pytest.mark.parametrize(
    "form",
    [
        "literal",
        "percent",
        "percent-lowercase",
        "form",
        "json",
        "base64",
        "base64url",
        "base64-embedded",
    ],
)
def test_each_form_the_redactor_masks_is_needed(
    form: str, echo: Echo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With any one form left out of the redactor, a secret leaks in that form, and the
    search above finds it: no form is masked for nothing, and none goes unchecked."""
    import sagactl.redact

    assert form in sagactl.redact.FORMS
    raw = MUTATION_CASE.secret.encode()
    assert base64.b64encode(raw) != base64.urlsafe_b64encode(raw)
    whole = sagactl.redact.Redactor
    kept = [f for f in sagactl.redact.FORMS if f != form]

    class WithoutOne(whole):  # type: ignore[misc, valid-type]
        def __init__(self, secrets: Any = (), *, forms: Any = None) -> None:
            super().__init__(secrets, forms=kept)

    monkeypatch.setattr(sagactl.redact, "Redactor", WithoutOne)
    leaks = run_everything(tmp_path, echo, MUTATION_CASE).leaks(derived(MUTATION_CASE))
    assert leaks, f"nothing leaked without the {form} form"


def test_an_html_escaped_secret_is_masked_in_a_page_rendered_whole() -> None:
    """Pages and reports pass through the redactor once rendered, escaped: the secrets they
    show are masked in the journal already, but a secret the run learnt later (a secret
    output) must not survive in its escaped form. The html form is what catches it, so it is
    checked here, on the rendered text, rather than end to end."""
    import sagactl.redact

    secret = "p&ss<w0rd>\"'x"
    page = f"<td>{markupsafe.escape(secret)}</td><td>{html.escape(secret)}</td>"
    masked = sagactl.redact.Redactor([secret]).text(page)
    assert masked == "<td>***</td><td>***</td>"
    without = [f for f in sagactl.redact.FORMS if f != "html"]
    assert sagactl.redact.Redactor([secret], forms=without).text(page) == page
