"""Keep secrets out of everything sagactl writes: the one redactor every sink goes through.

A secret is a declared secret's value; any string a template produced while reading one (or a
secret output, or a value sent as a credential header); a value sent as `Authorization`,
`Cookie` or `Proxy-Authorization`; a secret output (SPEC §4). The engine and the templates
`add` each as they meet it; every sink masks them as `***`:

- the journal (the engine masks what it journals), the terminal (the command line wraps its
  standard output and error in `Redactor.stream`), JSON lines, JUnit, `show`, `plan`, and error
  messages — `tests/test_sinks.py` lists the places that write, and fails on a new one.

Each secret is masked in every form it may take on its way to a service and back (`FORMS`):
as it is; percent-encoded, any of its characters, with either case of hex (so with `/` kept or
not); form-encoded (`+` for a space); JSON-escaped (`\\uXXXX` with either case, `\\/`, `\\"`,
`\\\\`); base64 and base64url, with or without padding, also inside a longer base64 text (the
secret after 1 or 2 other bytes, as in a Basic credential); HTML- and XML-escaped (`&amp;`,
`&lt;`, `&#34;`, `&#x27;`…, as pages, reports and JUnit write it). A service that transforms
a secret beyond these (hashes it, encrypts it) is beyond any redactor.

`Authorization`, `Cookie`, `Proxy-Authorization` and `Set-Cookie` header values are masked
whatever they hold.
"""

from __future__ import annotations

import base64
import io
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

__all__ = ["FORMS", "MASK", "MIN_DERIVED", "SENSITIVE_HEADERS", "Redactor"]

MASK = "***"
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "set-cookie"})
MIN_DERIVED = 4
"""A value derived from a secret (by a template, or a part of a credential header) is masked
only from this length: masking a one-letter slice would garble every message."""

FORMS = (
    "literal",
    "percent",
    "percent-lowercase",
    "form",
    "json",
    "base64",
    "base64url",
    "base64-embedded",
    "html",
)
"""The forms masked: each can be left out (`Redactor(forms=…)`), to check that the tests
notice its absence."""

# Characters that no encoder above changes: the literal parts every form of a secret shares.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]+")


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode())


def _json_escapes(char: str) -> list[str]:
    """JSON's escapes for a character (json.dumps, or any encoder with other choices)."""
    code = ord(char)
    forms = []
    if char in '"\\/':
        forms.append("\\" + char)
    named = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in named:
        forms.append(named[char])
    if code < 0x20 or code > 0x7E or char in "\"\\/<>&'":
        if code > 0xFFFF:
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            units = [high, low]
        else:
            units = [code]
        forms.append("".join(f"\\u{u:04x}" for u in units))
        forms.append("".join(f"\\u{u:04X}" for u in units))
    return forms


_HTML_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def _html_escapes(char: str) -> list[str]:
    """The character references HTML and XML writers use for a character that must not
    appear as itself (`&`, `<`, `>`, quotes), named and numbered."""
    if char not in _HTML_NAMED:
        return []
    code = ord(char)
    return [_HTML_NAMED[char], f"&#{code};", f"&#x{code:x};", f"&#x{code:X};"]


def _char_pattern(char: str, forms: frozenset[str]) -> str:
    if _PLAIN.fullmatch(char):
        return re.escape(char)
    options = [char] if "literal" in forms else []
    if "percent" in forms:
        options.append(_percent(char))
    if "percent-lowercase" in forms:
        options.append(_percent(char).lower())
    if "form" in forms and char == " ":
        options.append("+")
    if "json" in forms:
        options += _json_escapes(char)
    if "html" in forms:
        options += _html_escapes(char)
    options = sorted(set(options), key=len, reverse=True)
    if not options:
        return "(?!)"  # this character has no form left: nothing matches
    escaped = [re.escape(o) for o in options]
    return escaped[0] if len(escaped) == 1 else f"(?:{'|'.join(escaped)})"


def _base64_forms(secret: str, forms: frozenset[str]) -> set[str]:
    raw = secret.encode()
    out: set[str] = set()
    encoders: list[Callable[[bytes], bytes]] = []
    if "base64" in forms:
        encoders.append(base64.b64encode)
    if "base64url" in forms:
        encoders.append(base64.urlsafe_b64encode)
    for encode in encoders:
        whole = encode(raw).decode()
        out |= {whole, whole.rstrip("=")}
        if "base64-embedded" in forms:
            # Inside a longer base64 text (`user:password` in a Basic credential), every
            # group of four characters that encodes only the secret's bytes, whatever came
            # before it (0, 1 or 2 bytes past a group) and whatever comes after.
            for before in (0, 1, 2):
                encoded = encode(b"\0" * before + raw).decode()
                first, last = -(-before // 3), (before + len(raw)) // 3
                out.add(encoded[4 * first : 4 * last])
    return {form for form in out if len(form) >= MIN_DERIVED}


class _Secret:
    """One secret value, compiled: a pattern matching it in every form, and literal anchors,
    one of which any form contains, to skip texts it cannot be in."""

    __slots__ = ("anchors", "pattern", "size")

    def __init__(self, value: str, forms: frozenset[str]) -> None:
        self.size = len(value)
        parts = "".join(_char_pattern(char, forms) for char in value)
        literals = sorted(_base64_forms(value, forms), key=len, reverse=True)
        self.pattern: re.Pattern[str] | None = re.compile(
            "|".join([parts, *map(re.escape, literals)])
        )
        runs = _PLAIN.findall(value)
        longest = max(runs, key=len) if runs else ""
        # Without a plain run of two characters or more, every text is searched.
        self.anchors: tuple[str, ...] | None = (longest, *literals) if len(longest) >= 2 else None

    def found_in(self, text: str) -> bool:
        return self.anchors is None or any(anchor in text for anchor in self.anchors)


class Redactor:
    """Masks every secret value it was given, in every form, wherever it appears. Shared by
    the threads of a run: `add` may be called while another thread masks."""

    def __init__(self, secrets: Iterable[str] = (), *, forms: Iterable[str] = FORMS) -> None:
        self._forms = frozenset(forms)
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._secrets: tuple[_Secret, ...] = ()
        for secret in secrets:
            self.add(secret, derived=False)

    def add(self, value: Any, *, derived: bool = True) -> None:
        """Mask `value` from now on: a string, or every string (and long number) in a list or
        mapping. A derived value shorter than MIN_DERIVED is not masked."""
        values: list[str] = []
        _collect(value, values)
        new = [
            v
            for v in values
            if v and v not in self._values and (not derived or len(v) >= MIN_DERIVED)
        ]
        if not new:
            return
        with self._lock:
            compiled = [_Secret(v, self._forms) for v in new if v not in self._values]
            self._values.update(new)
            # Longest first: a secret is masked whole rather than around a shorter one.
            self._secrets = tuple(sorted((*self._secrets, *compiled), key=lambda s: -s.size))

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret.pattern is not None and secret.found_in(text):
                text = secret.pattern.sub(MASK, text)
        return text

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            name: MASK if name.lower() in SENSITIVE_HEADERS else self.text(str(value))
            for name, value in headers.items()
        }

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string in it (keys too) masked."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def credentials(self, name: str, value: str) -> None:
        """A credential header about to be sent: its value is a secret, and so are the
        credentials in it (a Bearer token, a Basic pair and its password, cookie values)."""
        lowered = name.lower()
        if lowered not in SENSITIVE_HEADERS or not value:
            return
        found = [value]
        if lowered in ("authorization", "proxy-authorization"):
            scheme, _, credentials = value.strip().partition(" ")
            found.append(credentials.strip())
            if scheme.lower() == "basic":
                try:
                    pair = base64.b64decode(credentials.strip(), validate=True).decode()
                except ValueError:
                    pair = ""
                found += [pair, pair.partition(":")[2]]
        else:  # Cookie, Set-Cookie: name=value; …
            for cookie in value.split(";"):
                found.append(cookie.partition("=")[2].strip())
        self.add([f for f in found if f])

    def stream(self, target: IO[str]) -> io.TextIOBase:
        """`target`, with everything written to it masked first."""
        return _MaskedStream(self, target)


def _collect(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        if len(str(value)) >= MIN_DERIVED:
            out.append(str(value))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(key, out)
            _collect(item, out)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect(item, out)


class _MaskedStream(io.TextIOBase):
    """A text stream that masks secrets in what is written to it, then passes it on."""

    def __init__(self, redactor: Redactor, target: IO[str]) -> None:
        super().__init__()
        self._redactor = redactor
        self._target = target

    def write(self, text: str) -> int:
        masked = self._redactor.text(text) if self._redactor else text
        try:
            self._target.write(masked)
        except UnicodeEncodeError:
            # A lone surrogate (from a service's JSON) cannot be written as UTF-8.
            self._target.write(masked.encode("utf-8", "replace").decode("utf-8"))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    # No `buffer`: a library that looks for the binary stream under a text one (click does)
    # then writes text, through the mask, rather than bytes past it.
