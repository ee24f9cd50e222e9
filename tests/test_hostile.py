"""A hostile service: a raw-socket server on 127.0.0.1 that answers as no well-behaved
service does — trickling, stalling after the head, huge and endless bodies, a gzip bomb,
invalid JSON, an absurd Retry-After, status 999, non-ASCII headers, a redirect loop, garbage.

Each case runs the real `sagactl run` in its own process and checks its exit code, what the
server received, and that it ended in bounded time and memory (the child's own peak RSS).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import ROOT
from sagactl.journal import open_journal

Behaviour = Callable[[socket.socket], None]


@dataclass
class Hostile:
    """Answers every request with `behaviour`; records each request's head."""

    behaviour: Behaviour
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closing = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client gave up: that is what is tested
            while True:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                head, _, rest = head.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.received.append(head)
                self.behaviour(conn)

    def close(self) -> None:
        self.closing.set()
        self.sock.close()


def respond(
    status: str = "200 OK",
    body: bytes = b"{}",
    headers: tuple[str, ...] = ("Content-Type: application/json",),
) -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        head = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "", ""]
        conn.sendall("\r\n".join(head).encode("latin-1") + body)

    return behaviour


def trickle(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        conn.sendall(b"x")
        time.sleep(0.2)  # every byte within any read timeout, the whole far past it


def stall_after_head(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n")
    time.sleep(60)


def trickle_head(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


def huge(size: int) -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        block = b"x" * (1 << 20)
        for _ in range(size >> 20):
            conn.sendall(block)

    return behaviour


def endless(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    block = b"x" * 65536
    while True:
        conn.sendall(b"%x\r\n%s\r\n" % (len(block), block))


@functools.cache
def _bomb() -> bytes:
    """512 MiB of zeros, gzipped to about 500 KiB (built a block at a time: the test's own
    memory stays small)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(packer.compress(block) for _ in range(512)) + packer.flush()


def gzip_bomb(conn: socket.socket) -> None:
    bomb = _bomb()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: "
        b"application/json\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
    )


def garbage(conn: socket.socket) -> None:
    conn.sendall(b"\x00\x01 this is not HTTP \xff\r\n\r\n")
    conn.close()


SAGA = """\
version: 1
name: hostile
env: [GOOD, BAD]
defaults:
  timeout: 1s
  retry: {{attempts: {attempts}, backoff: 10ms, max_backoff: 500ms, jitter: false}}
steps:
  - id: first
    action: {{method: PUT, url: "{{{{ env.GOOD }}}}/first/{{{{ run.id }}}}"}}
    compensate: {{method: DELETE, url: "{{{{ env.GOOD }}}}/first/{{{{ run.id }}}}"}}
  - id: hostile
    action: {{method: PUT, url: "{{{{ env.BAD }}}}/h/{{{{ run.id }}}}"{extra}}}
{outputs}    compensate:
      method: DELETE
      url: "{{{{ env.GOOD }}}}/h/{{{{ run.id }}}}"
      expect: {{status: [200, 404]}}
"""


@dataclass
class Outcome:
    exit_code: int
    seconds: float
    max_rss_mib: float
    stdout: str
    stderr: str
    journal: Path


@pytest.fixture
def good() -> Iterator[object]:
    from sagactl.testing.service import Service

    with Service() as service:
        yield service


def run_against(
    tmp_path: Path,
    good: object,
    behaviour: Behaviour,
    *,
    attempts: int = 1,
    extra: str = "",
    outputs: str = "",
    args: tuple[str, ...] = (),
) -> tuple[Outcome, Hostile]:
    hostile = Hostile(behaviour)
    saga = tmp_path / "hostile.yaml"
    saga.write_text(SAGA.format(attempts=attempts, extra=extra, outputs=outputs))
    journal = tmp_path / "journal.db"
    env = {
        **os.environ,
        "GOOD": good.url,
        "BAD": hostile.url,  # type: ignore[attr-defined]
        "SAGACTL_JOURNAL": str(journal),
        "NO_COLOR": "1",
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagactl", "run", str(saga), "--durability", "normal", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    read: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, pipe=pipe: read.__setitem__(name, pipe.read()))
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    peak = 0
    # The child's own peak memory: its VmHWM, read until it exits. (The ru_maxrss that
    # wait4 gives counts this process's memory too, from before the child's exec.)
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.005)
    seconds = time.monotonic() - started
    for reader in readers:
        reader.join(timeout=30)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    hostile.close()
    out, err = read.get("out", b"").decode(), read.get("err", b"").decode()
    assert "Traceback" not in out + err, out + err
    return Outcome(proc.returncode, seconds, peak / 1024, out, err, journal), hostile


def attempts_of(outcome: Outcome) -> list[tuple[str, str | None, int | None, bool]]:
    with open_journal(outcome.journal) as store:
        run_id = store.list_runs()[0].id
        return [
            (a.outcome or "", a.error_class, a.status, a.in_doubt)
            for a in store.attempts(run_id)
            if (a.step_id, a.phase) == ("hostile", "action")
        ]


@pytest.mark.parametrize(
    "behaviour",
    [trickle, stall_after_head, trickle_head, endless],
    ids=["trickled body", "stalled after the head", "trickled head", "endless body"],
)
def test_an_answer_that_never_ends_is_cut_off_at_the_timeout(
    tmp_path: Path, good: object, behaviour: Behaviour
) -> None:
    """Each read comes within any read timeout; the whole never does. The attempt ends at
    its 1 s timeout, in doubt (the request reached the service), and the step is undone."""
    outcome, hostile = run_against(tmp_path, good, behaviour, attempts=2)
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert len(hostile.received) == 2
    assert outcome.seconds < 2 * 1 + 4, outcome.seconds  # two attempts of 1 s, and start-up
    assert [(o, doubt) for o, _, _, doubt in attempts_of(outcome)] == [
        ("retryable", True),
        ("retryable", True),
    ]
    assert "within the timeout (1s)" in outcome.stdout
    assert good.requests("DELETE", "/h/")  # type: ignore[attr-defined]
    assert outcome.max_rss_mib < 100


def test_a_huge_body_nothing_reads_is_read_in_bounded_memory(tmp_path: Path, good: object) -> None:
    outcome, _ = run_against(tmp_path, good, huge(200 << 20))
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert outcome.max_rss_mib < 100, outcome.max_rss_mib


def test_a_huge_body_that_outputs_read_fails_naming_max_response(
    tmp_path: Path, good: object
) -> None:
    outcome, _ = run_against(
        tmp_path,
        good,
        huge(200 << 20),
        extra=", max_response: 1MiB",
        outputs='    outputs: {id: "{{ response.json.id }}"}\n',
    )
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert "larger than max_response (1MiB)" in outcome.stdout
    assert outcome.max_rss_mib < 100, outcome.max_rss_mib
    assert good.requests("DELETE", "/h/")  # type: ignore[attr-defined]  # it took effect


def test_a_gzip_bomb_is_read_in_bounded_memory(tmp_path: Path, good: object) -> None:
    _bomb()  # built before the run, not while it waits
    outcome, _ = run_against(
        tmp_path, good, gzip_bomb, outputs='    outputs: {id: "{{ response.json.id }}"}\n'
    )
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert "max_response (16MiB)" in outcome.stdout, outcome.stdout
    assert outcome.max_rss_mib < 150, outcome.max_rss_mib


def test_invalid_json_under_a_json_content_type(tmp_path: Path, good: object) -> None:
    outcome, _ = run_against(
        tmp_path,
        good,
        respond(body=b'{"id": "r-1", oops'),
        outputs='    outputs: {id: "{{ response.json.id }}"}\n',
    )
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert "outputs.id: cannot read the response" in outcome.stdout


def test_an_absurd_retry_after_waits_no_longer_than_max_backoff(
    tmp_path: Path, good: object
) -> None:
    outcome, hostile = run_against(
        tmp_path,
        good,
        respond("503 Service Unavailable", headers=("Retry-After: 99999999999",)),
        attempts=3,
    )
    assert outcome.exit_code == 1
    assert len(hostile.received) == 3
    assert outcome.seconds < 2 * 0.5 + 4, outcome.seconds


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("999 Whatever", "status 999"),
        ("302 Found", "status 302"),
    ],
)
def test_odd_statuses_are_failures(tmp_path: Path, good: object, status: str, message: str) -> None:
    headers = ("Location: /h/again",) if status.startswith("302") else ()
    outcome, hostile = run_against(tmp_path, good, respond(status, headers=headers))
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert message in outcome.stdout and len(hostile.received) == 1  # no redirect followed


def test_non_ascii_response_headers_are_read_as_latin_1(tmp_path: Path, good: object) -> None:
    outcome, _ = run_against(
        tmp_path,
        good,
        respond(headers=("Content-Type: application/json", "X-Name: caf\u00e9 \u00ff")),
        outputs="    outputs: {name: \"{{ response.headers['x-name'] }}\"}\n",
    )
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    with open_journal(outcome.journal) as store:
        run_id = store.list_runs()[0].id
        assert store.steps(run_id)[("hostile", "action")].outputs == {"name": "café ÿ"}


def test_garbage_instead_of_http_is_in_doubt(tmp_path: Path, good: object) -> None:
    outcome, _ = run_against(tmp_path, good, garbage)
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert attempts_of(outcome)[0][3] is True
    assert good.requests("DELETE", "/h/")  # type: ignore[attr-defined]


def test_the_json_of_a_hostile_run_is_still_json(tmp_path: Path, good: object) -> None:
    """Whatever the service sent, `--output json` stays one JSON object per line."""
    outcome, _ = run_against(
        tmp_path,
        good,
        respond(body=b'\xff\xfe"\x00\\u0000\n</script>'),
        args=("--output", "json", "-v"),
    )
    assert outcome.exit_code == 0, outcome.stderr
    records = [json.loads(line) for line in outcome.stdout.splitlines()]
    bodies = [r["response_body"] for r in records if r["event"] == "attempt_finished"]
    assert '\ufffd\ufffd"\x00\\u0000\n</script>' in bodies


def test_a_body_in_a_charset_that_is_no_text_encoding_is_still_a_success(
    tmp_path: Path, good: object
) -> None:
    """`charset=hex` names a codec that is not a text encoding: the body is read as UTF-8,
    and the 201 is a success, not an attempt in doubt sent again."""
    outcome, hostile = run_against(
        tmp_path,
        good,
        respond(
            "201 Created", body=b'{"id": "1"}', headers=("Content-Type: text/plain; charset=hex",)
        ),
        attempts=2,
        outputs='    outputs: {id: "{{ response.json.id }}"}\n',
    )
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert len(hostile.received) == 1


def test_json_nested_past_what_can_be_read_is_a_failure_not_a_doubt(
    tmp_path: Path, good: object
) -> None:
    deep = respond(body=b"[" * 100_000 + b"]" * 100_000)
    outcome, hostile = run_against(
        tmp_path, good, deep, attempts=2, outputs='    outputs: {x: "{{ response.json[0] }}"}\n'
    )
    assert outcome.exit_code == 1, outcome.stdout + outcome.stderr
    assert len(hostile.received) == 1  # not sent again
    assert attempts_of(outcome) == [("failure", "Expectation", 200, False)]


def test_a_lone_surrogate_in_a_services_json_is_stored_and_shown_without_a_traceback(
    tmp_path: Path, good: object
) -> None:
    """JSON may escape a lone surrogate (`\\ud800`), which UTF-8 cannot hold: the journal keeps
    its escape, the terminal a replacement, and a request built from it is refused."""
    outcome, _ = run_against(
        tmp_path,
        good,
        respond(body=b'{"name": "x\\ud800"}'),
        outputs='    outputs: {name: "{{ response.json.name }}"}\n',
        args=("--output", "json"),
    )
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    with open_journal(outcome.journal) as store:
        run_id = store.list_runs()[0].id
        assert store.steps(run_id)[("hostile", "action")].outputs == {"name": "x\ud800"}
