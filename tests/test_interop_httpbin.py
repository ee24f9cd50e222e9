"""Against a service nobody here wrote: httpbin (from PyPI), served on 127.0.0.1 by werkzeug in
a thread. Its endpoints delay, drip, stream, compress, redirect, fail and echo as real services
do; each case runs the real command line and checks what sagactl made of it."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cli
from sagactl.journal import Journal, open_journal

httpbin = pytest.importorskip("httpbin")  # the `test` extra installs it


def _serve() -> Iterator[str]:
    """httpbin on a free port of 127.0.0.1, in a thread, for as long as the generator runs."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("httpbin").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, httpbin.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    yield from _serve()


@pytest.fixture(scope="module")
def other() -> Iterator[str]:
    """A second httpbin: another origin (another port), for redirects across origins."""
    yield from _serve()


def saga(action: str, *, outputs: str = "", timeout: str = "2s", attempts: int = 1) -> str:
    return f"""\
version: 1
name: interop
env: [BIN]
defaults:
  base_url: "{{{{ env.BIN }}}}"
  timeout: {timeout}
  retry: {{attempts: {attempts}, backoff: 10ms, jitter: false}}
steps:
  - id: first
    action: {{method: POST, url: /anything/first}}
    compensate: {{method: DELETE, url: /anything/first}}
  - id: call
    action: {action}
{outputs}    compensate: {{method: DELETE, url: /anything/undo}}
"""


def run(tmp_path: Path, base: str, text: str, *args: str) -> tuple[int, str, Journal]:
    path = tmp_path / "interop.yaml"
    path.write_text(text)
    journal = tmp_path / "journal.db"
    result = cli(
        "run", str(path), *args, env={"BIN": base, "NO_COLOR": "1", "SAGACTL_JOURNAL": str(journal)}
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout + result.stderr, open_journal(journal)


def call_attempts(store: Journal) -> list[tuple[str | None, int | None, bool]]:
    run_id = store.list_runs()[0].id
    return [
        (a.outcome, a.status, a.in_doubt)
        for a in store.attempts(run_id)
        if (a.step_id, a.phase) == ("call", "action")
    ]


def undone(store: Journal) -> bool:
    run_id = store.list_runs()[0].id
    return ("call", "compensate") in store.steps(run_id)


def test_delay_past_the_timeout_is_in_doubt_and_undone(tmp_path: Path, base: str) -> None:
    code, out, store = run(tmp_path, base, saga("{method: POST, url: /delay/3}", timeout="500ms"))
    assert code == 1, out
    assert call_attempts(store) == [("retryable", None, True)] and undone(store)


def test_drip_is_cut_off_at_the_timeout(tmp_path: Path, base: str) -> None:
    """httpbin sends the head, then a byte at a time: each within any read timeout."""
    started = time.monotonic()
    code, out, store = run(
        tmp_path,
        base,
        saga(
            "{method: GET, url: /drip, query: {duration: 6, numbytes: 6, delay: 0}}", timeout="1s"
        ),
    )
    assert time.monotonic() - started < 4
    assert code == 1, out
    assert call_attempts(store) == [("retryable", None, True)] and undone(store)
    assert "status 200, but the body did not end within the timeout (1s)" in out


@pytest.mark.parametrize("path", ["/bytes/102400", "/stream-bytes/102400"])
def test_binary_bodies_nothing_reads(tmp_path: Path, base: str, path: str) -> None:
    code, out, store = run(tmp_path, base, saga(f"{{method: GET, url: {path}}}"))
    assert code == 0, out
    run_id = store.list_runs()[0].id
    body = next(a.response_body for a in store.attempts(run_id) if a.step_id == "call")
    assert body is not None and 60_000 < len(body.encode()) <= 64 * 1024 + 20


def test_a_binary_body_past_max_response(tmp_path: Path, base: str) -> None:
    code, out, _ = run(
        tmp_path,
        base,
        saga(
            "{method: GET, url: /stream-bytes/102400, max_response: 64KiB}",
            outputs='    outputs: {n: "{{ response.text | length }}"}\n',
        ),
    )
    assert code == 1 and "larger than max_response (64KiB)" in out, out


@pytest.mark.parametrize(
    ("status", "code", "attempts"),
    [
        (200, 0, 1),
        (503, 1, 3),
        (429, 1, 3),
        (418, 1, 1),
        (404, 1, 1),
    ],
)
def test_statuses(tmp_path: Path, base: str, status: int, code: int, attempts: int) -> None:
    exit_code, out, store = run(
        tmp_path, base, saga(f"{{method: POST, url: /status/{status}}}", attempts=3)
    )
    assert exit_code == code, out
    assert len(call_attempts(store)) == attempts
    assert not undone(store) or status == 200  # a definite refusal is not undone


def test_redirects_are_not_followed(tmp_path: Path, base: str) -> None:
    code, out, store = run(
        tmp_path, base, saga("{method: POST, url: /redirect-to, query: {url: /anything/elsewhere}}")
    )
    assert code == 1 and "status 302" in out, out
    assert call_attempts(store) == [("failure", 302, False)]


def test_redirects_are_followed_when_asked(tmp_path: Path, base: str) -> None:
    """A 302 after a POST becomes a GET of the new place (as browsers and httpx do); relative
    and absolute redirects are followed, each within the attempt's one timeout."""
    code, out, store = run(
        tmp_path,
        base,
        saga(
            "{method: POST, url: /redirect-to, query: {url: /anything/elsewhere}, "
            "json: {n: 1}, follow_redirects: true}",
            outputs='    outputs: {method: "{{ response.json.method }}", '
            'url: "{{ response.json.url }}", body: "{{ response.json.data }}"}\n',
        ),
    )
    assert code == 0, out
    run_id = store.list_runs()[0].id
    assert store.steps(run_id)[("call", "action")].outputs == {
        "method": "GET",
        "url": f"{base}/anything/elsewhere",
        "body": "",
    }
    for path in ("/redirect/3", "/absolute-redirect/3", "/relative-redirect/3"):
        code, out, _ = run(
            tmp_path, base, saga(f"{{method: GET, url: {path}, follow_redirects: true}}")
        )
        assert code == 0, (path, out)


def test_a_307_keeps_the_method_and_the_body(tmp_path: Path, base: str) -> None:
    code, out, store = run(
        tmp_path,
        base,
        saga(
            "{method: PUT, url: /redirect-to, query: {url: /anything/kept, status_code: 307}, "
            "json: {n: 1}, follow_redirects: true}",
            outputs='    outputs: {method: "{{ response.json.method }}", '
            'n: "{{ response.json.json.n }}"}\n',
        ),
    )
    assert code == 0, out
    run_id = store.list_runs()[0].id
    assert store.steps(run_id)[("call", "action")].outputs == {"method": "PUT", "n": 1}


def test_more_than_ten_redirects_fail_the_attempt(tmp_path: Path, base: str) -> None:
    code, out, store = run(
        tmp_path, base, saga("{method: GET, url: /redirect/11, follow_redirects: true}")
    )
    assert code == 1, out
    assert "more than 10 redirects (the last to " in out, out
    assert call_attempts(store) == [("failure", None, False)]


def test_a_redirect_to_another_origin_carries_no_credentials(
    tmp_path: Path, base: str, other: str
) -> None:
    """Checked on the receiving server: its echo of what it received."""
    text = """\
version: 1
name: cross
env: [BIN, OTHER]
secrets: [TOKEN]
defaults:
  base_url: "{{ env.BIN }}"
  retry: {attempts: 1}
steps:
  - id: call
    action:
      method: GET
      url: /redirect-to
      query: {url: "{{ env.OTHER }}/anything/landed"}
      headers:
        X-Token: "{{ secrets.TOKEN }}"
        Cookie: "s={{ secrets.TOKEN }}"
        X-Plain: hi
      auth: {bearer: "{{ secrets.TOKEN }}"}
      follow_redirects: true
    outputs:
      received: "{{ response.json.headers }}"
"""
    path = tmp_path / "cross.yaml"
    path.write_text(text)
    journal = tmp_path / "journal.db"
    token = "cross-origin-token-4711"
    result = cli(
        "run",
        str(path),
        env={
            "BIN": base,
            "OTHER": other,
            "TOKEN": token,
            "NO_COLOR": "1",
            "SAGACTL_JOURNAL": str(journal),
        },
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    with open_journal(journal) as store:
        run_id = store.list_runs()[0].id
        received = store.steps(run_id)[("call", "action")].outputs["received"]
    names = {name.lower() for name in received}
    assert not names & {"authorization", "cookie", "x-token", "x-plain"}, received
    assert received["Idempotency-Key"] == f"{run_id}.call.action"
    assert received["User-Agent"].startswith("sagactl/")
    assert token not in json.dumps(received)
    # the same request to the same origin carries them all
    same = text.replace('"{{ env.OTHER }}/anything/landed"', "/anything/landed").replace(
        "response.json.headers }}", "response.json.headers | list }}"
    )
    path.write_text(same)
    result = cli(
        "run",
        str(path),
        env={"BIN": base, "OTHER": other, "TOKEN": token, "SAGACTL_JOURNAL": str(journal)},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    with open_journal(journal) as store:
        run_id = store.list_runs()[0].id
        received = store.steps(run_id)[("call", "action")].outputs["received"]
    # (their values held the secret: outputs holding one are not journaled, the names are)
    assert {"Authorization", "Cookie", "X-Token", "X-Plain"} <= set(received), received


def test_anything_echoes_what_was_sent(tmp_path: Path, base: str) -> None:
    code, out, store = run(
        tmp_path,
        base,
        saga(
            '{method: PUT, url: "/anything/item", query: {q: "a/b c"}, json: {n: 1}, '
            "headers: {X-Note: café}}",
            outputs='    outputs: {method: "{{ response.json.method }}", '
            'q: "{{ response.json.args.q }}", n: "{{ response.json.json.n }}", '
            "note: \"{{ response.json.headers['X-Note'] }}\", "
            "key: \"{{ response.json.headers['Idempotency-Key'] }}\"}\n",
        ),
    )
    assert code == 0, out
    run_id = store.list_runs()[0].id
    outputs = store.steps(run_id)[("call", "action")].outputs
    assert outputs == {
        "method": "PUT",
        "q": "a/b c",
        "n": 1,
        "note": "café",
        "key": f"{run_id}.call.action",
    }


def test_gzip_is_decoded(tmp_path: Path, base: str) -> None:
    code, out, _ = run(
        tmp_path,
        base,
        saga("{method: GET, url: /gzip, expect: {that: ['response.json.gzipped == true']}}"),
    )
    assert code == 0, out


def test_brotli_is_refused_clearly_when_read(tmp_path: Path, base: str) -> None:
    """sagactl asks for gzip or deflate only; httpbin's /brotli answers br all the same."""
    code, out, _ = run(
        tmp_path,
        base,
        saga("{method: GET, url: /brotli, expect: {that: ['response.json.brotli == true']}}"),
    )
    assert code == 1 and "encoded with br, which sagactl does not decode" in out, out
    code, out, _ = run(tmp_path / "..", base, saga("{method: GET, url: /brotli}"))
    assert code == 0, out  # nothing reads the body: the status is all that counts


def test_utf8_html(tmp_path: Path, base: str) -> None:
    code, out, _ = run(
        tmp_path,
        base,
        saga(
            "{method: GET, url: /encoding/utf8, expect: {that: [\"'∮ E⋅da = Q' in response.text\","
            " 'response.json == none']}}"
        ),
    )
    assert code == 0, out
    records = [
        json.loads(line)
        for line in run(
            tmp_path, base, saga("{method: GET, url: /encoding/utf8}"), "--output", "json"
        )[1].splitlines()
        if line.startswith("{")
    ]
    assert records[-1]["status"] == "succeeded"


def test_a_body_that_is_not_json_says_so(tmp_path: Path, base: str) -> None:
    code, out, _ = run(
        tmp_path, base, saga("{method: GET, url: /html, expect: {that: ['response.json.ok']}}")
    )
    assert code == 1, out
    assert (
        "expect.that[0] response.json.ok: 'None' has no attribute 'ok' (the body is not JSON; "
        "Content-Type: text/html; charset=utf-8)" in out
    ), out
    code, out, _ = run(
        tmp_path,
        base,
        saga(
            "{method: GET, url: /status/204}",
            outputs='    outputs: {id: "{{ response.json.id }}"}\n',
        ),
    )
    assert code == 1, out
    assert "outputs.id: cannot read the response: " in out and "(the body is empty" in out, out


def test_anything_echoes_secrets_in_its_own_encoding_and_none_shows(
    tmp_path: Path, base: str
) -> None:
    """httpbin echoes the URL as werkzeug rebuilds it, the query decoded, every header and
    the body: each form of the secret it chose is masked in every sink."""
    import base64
    from urllib.parse import quote, quote_plus

    secret = "ab+/cd=ef g?&é"
    text = """\
version: 1
name: echoed
env: [BIN]
secrets: [S]
steps:
  - id: echo
    action:
      method: PUT
      url: "{{ env.BIN }}/anything/{{ secrets.S | urlencode }}"
      query: {k: "{{ secrets.S }}"}
      headers: {X-Key: "{{ secrets.S | urlencode }}"}
      auth: {basic: [user, "{{ secrets.S }}"]}
      json: {v: "{{ secrets.S }}"}
    outputs:
      url: "{{ response.json.url }}"
      args: "{{ response.json.args }}"
      auth: "{{ response.json.headers.Authorization }}"
"""
    path = tmp_path / "echoed.yaml"
    path.write_text(text)
    env = {
        "BIN": base,
        "S": secret,
        "NO_COLOR": "1",
        "SAGACTL_JOURNAL": str(tmp_path / "journal.db"),
    }
    outputs = [
        cli("run", str(path), "-v", env=env),
        cli("run", str(path), "--output", "json", env=env),
    ]
    assert outputs[0].exit_code == 0, outputs[0].stdout
    run_id = outputs[0].stdout.splitlines()[0]
    outputs += [cli("show", run_id, env=env), cli("show", run_id, "--output", "json", env=env)]
    sinks = "".join(o.stdout + o.stderr for o in outputs).encode() + b"".join(
        p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("journal.db")
    )
    pair = f"user:{secret}".encode()
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        base64.b64encode(pair).decode(),
        quote(quote(secret, safe=""), safe=""),
    }
    leaked = [form for form in forms if form.encode() in sinks]
    assert leaked == []
    assert b"***" in sinks


def test_httpbin_accepts_the_credentials_auth_builds(tmp_path: Path, base: str) -> None:
    """httpbin checks them itself: 401 unless Basic user:password, or a Bearer token, is right."""
    secret = "pa55-w0rd-for-httpbin"
    text = """\
version: 1
name: creds
env: [BIN, EXPECTED]
secrets: [S]
defaults: {base_url: "{{ env.BIN }}", retry: {attempts: 1}}
steps:
  - id: basic
    action:
      method: GET
      url: "/basic-auth/shop/{{ env.EXPECTED }}"
      auth: {basic: [shop, "{{ secrets.S }}"]}
      expect: {that: ["response.json.authenticated == true"]}
  - id: bearer
    action:
      method: GET
      url: /bearer
      auth: {bearer: "{{ secrets.S }}"}
      expect: {that: ["response.json.authenticated == true"]}
  - id: headers
    action: {method: GET, url: /response-headers, query: {Location: /elsewhere}}
    outputs: {where: "{{ response.headers.location }}"}
"""
    path = tmp_path / "creds.yaml"
    path.write_text(text)
    journal = tmp_path / "journal.db"
    env = {
        "BIN": base,
        "S": secret,
        "EXPECTED": secret,
        "NO_COLOR": "1",
        "SAGACTL_JOURNAL": str(journal),
    }
    result = cli("run", str(path), env=env)
    assert result.exit_code == 0, result.stdout + result.stderr
    with open_journal(journal) as store:
        run_id = store.list_runs()[0].id
        assert store.steps(run_id)[("headers", "action")].outputs == {"where": "/elsewhere"}
    wrong = cli("run", str(path), env={**env, "S": "not-the-password"})
    assert wrong.exit_code == 1 and "status 401" in wrong.stdout, wrong.stdout


def test_a_cookie_a_service_sets_is_never_sent_again(tmp_path: Path, base: str) -> None:
    """httpbin sets a session cookie; the next request, to it or after a redirect, carries no
    cookie the saga did not write (and nothing would mask it)."""
    code, out, store = run(
        tmp_path,
        base,
        saga(
            "{method: GET, url: /cookies, follow_redirects: false}",
            outputs='    outputs: {cookies: "{{ response.json.cookies }}"}\n',
        ).replace(
            "action: {method: POST, url: /anything/first}",
            "action: {method: GET, url: /cookies/set, query: {sid: SESSIONVALUE}, "
            "expect: {status: [302]}}",
        ),
    )
    assert code == 0, out
    run_id = store.list_runs()[0].id
    assert store.steps(run_id)[("call", "action")].outputs == {"cookies": {}}
    code, out, store = run(
        tmp_path,
        base,
        saga(
            "{method: GET, url: /cookies/set, query: {sid: SESSIONVALUE}, follow_redirects: true}",
            outputs='    outputs: {cookies: "{{ response.json.cookies }}"}\n',
        ),
    )
    assert code == 0, out
    run_id = store.list_runs()[0].id
    assert store.steps(run_id)[("call", "action")].outputs == {"cookies": {}}


@pytest.mark.parametrize(
    "target",
    ["/status/404", "/status/500", "ftp://127.0.0.1/x", "/redirect/12"],
    ids=["404", "500", "another-scheme", "too-many"],
)
def test_a_post_answered_with_a_redirect_took_effect_whatever_follows(
    tmp_path: Path, base: str, target: str
) -> None:
    """A 303 after a POST says its effect is done: when the redirect then fails, the step is
    undone like one that took effect, not dropped like one that never did."""
    code, out, store = run(
        tmp_path,
        base,
        saga(
            "{method: POST, url: /redirect-to, query: {url: '" + target + "', status_code: 303}, "
            "follow_redirects: true}"
        ),
    )
    assert code == 1, out
    assert undone(store), out
