"""Sagas validated once: the cache of checked models (`definition.cache`), judged by what a
load imports and does, and by entries nobody should trust."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sagactl
from helpers import SAGAS, imported
from sagactl.definition import cache, kinds, loader
from sagactl.errors import DefinitionErrors
from sagactl.model import Saga

TEXT = (SAGAS / "add-product.yaml").read_text()


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own, and a count of the validations done."""
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    done: list[str] = []
    real = loader._validated

    def counted(text: str, file: str) -> Saga:
        done.append(file)
        return real(text, file)

    monkeypatch.setattr(loader, "_validated", counted)
    yield done


def entries(home: Path) -> list[Path]:
    """The cache's entries (and none of the directory's other files)."""
    return sorted((home / "sagactl" / "sagas").glob("*.pickle"))


def test_a_text_is_validated_once_then_read_back(cache_home: Path, validations: list[str]) -> None:
    first = loader.load_text(TEXT, "a.yaml")
    again = loader.load_text(TEXT, "elsewhere/b.yaml")
    assert validations == ["a.yaml"]
    assert again.path == "elsewhere/b.yaml"  # named as loaded this time
    assert again == first.__class__(**{**first.__dict__, "path": "elsewhere/b.yaml"})
    (entry,) = entries(cache_home)
    assert entry.stat().st_mode & 0o777 == 0o600
    assert (cache_home / "sagactl" / "sagas").stat().st_mode & 0o777 == 0o700
    # Another text (one byte more) is another entry, validated on its own.
    loader.load_text(TEXT + "\n", "a.yaml")
    assert validations == ["a.yaml", "a.yaml"]
    assert len(entries(cache_home)) == 2


def test_a_file_with_errors_is_not_cached(cache_home: Path, validations: list[str]) -> None:
    for _ in range(2):
        with pytest.raises(DefinitionErrors):
            loader.load_text("version: 1\nname: x\nsteps: []\n", "bad.yaml")
    assert len(validations) == 2
    assert entries(cache_home) == []


def _rewrite(entry: Path, payload: bytes, *, checksum: bytes | None = None) -> None:
    digest = hashlib.sha256(payload).digest() if checksum is None else checksum
    entry.write_bytes(cache._MAGIC + digest + payload)


class _Planted:
    """A pickle that runs code when loaded: what a cache entry must never be trusted to hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "spoil",
    [
        "truncated",
        "flipped byte",
        "checksum of something else",
        "not a saga",
        "a saga of another text",
        "empty",
        "group-writable",
        "world-writable directory",
    ],
)
def test_an_entry_not_to_be_trusted_is_ignored_and_rebuilt(
    spoil: str, cache_home: Path, validations: list[str], tmp_path: Path
) -> None:
    good = loader.load_text(TEXT, "a.yaml")
    (entry,) = entries(cache_home)
    data = entry.read_bytes()
    payload = data[len(cache._MAGIC) + 32 :]
    marker = tmp_path / "planted-code-ran"
    if spoil == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif spoil == "flipped byte":
        spoiled = bytearray(data)
        spoiled[-10] ^= 0xFF
        entry.write_bytes(bytes(spoiled))
    elif spoil == "checksum of something else":
        _rewrite(entry, payload, checksum=hashlib.sha256(b"other").digest())
    elif spoil == "not a saga":
        _rewrite(entry, pickle.dumps({"name": "x"}))
    elif spoil == "a saga of another text":
        other = loader.load_text(TEXT.replace("add-product", "other-product"), "o.yaml")
        _rewrite(entry, pickle.dumps(other))
    elif spoil == "empty":
        entry.write_bytes(b"")
    elif spoil == "group-writable":
        # A valid entry, checksum and all, that would run code: another user could have
        # written it, so it is not even read.
        _rewrite(entry, pickle.dumps(_Planted(marker)))
        entry.chmod(0o660)
    elif spoil == "world-writable directory":
        _rewrite(entry, pickle.dumps(_Planted(marker)))
        entry.parent.chmod(0o777)
    again = loader.load_text(TEXT, "a.yaml")
    assert again == good
    assert validations.count("a.yaml") == 2
    assert not marker.exists()


def test_an_entry_is_rewritten_after_a_bad_one(cache_home: Path, validations: list[str]) -> None:
    loader.load_text(TEXT, "a.yaml")
    (entry,) = entries(cache_home)
    entry.write_bytes(b"garbage")
    loader.load_text(TEXT, "a.yaml")
    loader.load_text(TEXT, "a.yaml")
    assert validations == ["a.yaml", "a.yaml"]


def test_a_cache_that_cannot_be_written_only_costs_the_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validations: list[str]
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert loader.load_text(TEXT, "a.yaml").name == "add-product"
    assert loader.load_text(TEXT, "a.yaml").name == "add-product"
    assert len(validations) == 2
    assert blocked.read_text() == "not a directory"
    assert not list(tmp_path.glob(".*.pickle*"))


def test_another_version_of_sagactl_validates_again(
    cache_home: Path, validations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loader.load_text(TEXT, "a.yaml")
    monkeypatch.setattr(sagactl, "__version__", "99.0.0")
    cache._fingerprint.cache_clear()
    try:
        loader.load_text(TEXT, "a.yaml")
    finally:
        monkeypatch.undo()
        cache._fingerprint.cache_clear()
    assert len(validations) == 2
    assert len(entries(cache_home)) == 2


def test_sagas_are_not_cached_while_another_kind_of_step_is_registered(
    cache_home: Path, validations: list[str]
) -> None:
    kind = kinds.Kind(
        name="shell",
        schema={"type": "object"},
        build=lambda raw, phase, line: None,  # type: ignore[arg-type,return-value]
    )
    kinds.register(kind)
    try:
        loader.load_text(TEXT, "a.yaml")
        loader.load_text(TEXT, "a.yaml")
    finally:
        kinds.unregister("shell")
    assert len(validations) == 2
    assert entries(cache_home) == []


def test_old_entries_are_pruned(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch, validations: list[str]
) -> None:
    monkeypatch.setattr(cache, "_KEEP", 4)
    for n in range(6):
        loader.load_text(TEXT + "#" * n + "\n", "a.yaml")
    assert len(entries(cache_home)) <= 4
    # The newest is kept.
    loader.load_text(TEXT + "#" * 5 + "\n", "a.yaml")
    assert len(validations) == 6


def test_a_saga_seen_before_is_run_without_the_validation_libraries(
    tmp_path: Path, service: Any, write: Any
) -> None:
    """The point of the cache: `validate` and `run` of a text seen before import neither YAML
    nor jsonschema; and `run -q` never imports rich, nor httpx's own command line (click,
    pygments)."""
    saga = write(
        "version: 1\nname: one\nenv: [BASE]\nsteps:\n  - id: a\n"
        '    action: {method: PUT, url: "{{ env.BASE }}/a/{{ run.id }}"}\n'
        '    compensate: {method: DELETE, url: "{{ env.BASE }}/a/{{ run.id }}"}\n'
    )
    env = {
        "SAGACTL_JOURNAL": str(tmp_path / "j.db"),
        "BASE": service.url,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    heavy = ("yaml", "jsonschema", "jsonschema_rs", "rich", "click", "pygments")
    # The first time, a valid file is judged by the compiled validator alone.
    assert imported(["validate", str(saga)], heavy, env) == ("0", ["jsonschema_rs", "yaml"])
    assert imported(["validate", str(saga)], heavy, env) == ("0", [])
    assert imported(["run", str(saga), "-q"], heavy, env) == ("0", [])
    assert len(service.requests("PUT", "/a/")) == 1


def test_the_cache_lives_under_xdg_cache_home_or_the_home_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.directory() == tmp_path / "sagactl" / "sagas"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for ignored in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert cache.directory() == tmp_path / "home" / ".cache" / "sagactl" / "sagas"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.directory() == tmp_path / "home" / ".cache" / "sagactl" / "sagas"


def test_a_run_of_a_cached_saga_parses_none_of_its_plain_templates(
    cache_home: Path, service: Any, tmp_path: Path
) -> None:
    """Plain templates (text and lookups) are compiled from the plans kept with the checked
    saga: the run sends the same requests without Jinja2 parsing any of them; the one
    template that computes something is parsed."""
    from sagactl.api import start_run
    from sagactl.definition import templating
    from sagactl.journal import open_journal

    text = (
        "version: 1\nname: plans\nenv: [BASE]\ninputs:\n  n: {type: integer}\n"
        'defaults:\n  base_url: "{{ env.BASE }}"\nsteps:\n'
        "  - id: a\n"
        '    action: {method: PUT, url: "/a/{{ run.id }}", json: {n: "{{ inputs.n }}"}}\n'
        '    outputs: {got: "{{ response.json.n }}"}\n'
        '    compensate: {method: DELETE, url: "/a/{{ run.id }}"}\n'
        "  - id: b\n"
        '    action: {method: PUT, url: "/b/{{ steps.a.outputs.got }}/{{ inputs.n + 1 }}"}\n'
    )
    loader.load_text(text, "plans.yaml")  # checked, and cached
    templating._COMPILED.clear()
    templating._parse.cache_clear()
    saga = loader.load_text(text, "plans.yaml")  # read back
    assert "{{ env.BASE }}" in saga.plans
    with open_journal(tmp_path / "j.db") as journal:
        _, status = start_run(saga, {"n": 7}, journal, {"BASE": service.url}, on_event=print)
    assert status.value == "succeeded"
    assert [r.path for r in service.requests("PUT", "/")] == [
        f"/a/{saga_run_id(service)}",
        "/b/7/8",
    ]
    assert templating._parse.cache_info().misses == 1  # "/b/{{ ... }}/{{ inputs.n + 1 }}"


def saga_run_id(service: Any) -> str:
    return str(service.requests("PUT", "/a/")[0].path.rsplit("/", 1)[1])


@pytest.mark.parametrize("where", ["sagas", "sagactl"])
def test_a_cache_directory_that_is_a_link_is_neither_read_nor_written(
    where: str, cache_home: Path, validations: list[str], tmp_path: Path
) -> None:
    """Someone who can write an ancestor of the cache (a shared XDG_CACHE_HOME) could point it
    at a directory of this user's: nothing is read from a link, written to it or pruned in it."""
    loader.load_text(TEXT, "a.yaml")
    (entry,) = entries(cache_home)
    elsewhere = tmp_path / "elsewhere"
    moved = cache_home / "sagactl" if where == "sagactl" else entry.parent
    moved.rename(elsewhere)
    (elsewhere if where == "sagas" else elsewhere / "sagas").joinpath("mine.pickle").write_text("x")
    moved.symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.rglob("*"))
    loader.load_text(TEXT, "a.yaml")
    loader.load_text(TEXT + "\n", "a.yaml")
    assert len(validations) == 3  # the entry behind the link was not read
    assert sorted(p.name for p in elsewhere.rglob("*")) == before  # nor anything written


def test_a_cache_directory_others_can_write_is_not_used(
    cache_home: Path, validations: list[str]
) -> None:
    loader.load_text(TEXT, "a.yaml")
    (cache_home / "sagactl").chmod(0o775)
    loader.load_text(TEXT, "a.yaml")
    loader.load_text(TEXT + "\n", "a.yaml")
    assert len(validations) == 3
    assert len(entries(cache_home)) == 1  # and nothing written there


def test_the_key_follows_the_code_not_its_file_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds that give every file the same time (reproducible builds, Nix) must not share
    entries: a change of the code that checks sagas, of the same size, is another key."""
    import shutil

    package = Path(sagactl.__file__).parent
    copy = tmp_path / "sagactl"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*"):
        os.utime(path, (1, 1))
    monkeypatch.setattr(sagactl, "__file__", str(copy / "__init__.py"))
    cache._fingerprint.cache_clear()
    try:
        before = cache._fingerprint()
        build = copy / "definition" / "build.py"
        text = build.read_text()
        build.write_text(text.replace('raw.get("safe", False)', 'raw.get("safe", True )'))
        assert len(build.read_text()) == len(text)
        os.utime(build, (1, 1))
        cache._fingerprint.cache_clear()
        assert before is not None
        assert cache._fingerprint() not in (before, None)
    finally:
        monkeypatch.undo()
        cache._fingerprint.cache_clear()


def test_without_a_home_directory_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validations: list[str]
) -> None:
    """No HOME and no entry in the password database: `~` stays `~`, and a cache under the
    current directory would be a surprise."""
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)
    monkeypatch.chdir(tmp_path)
    assert cache.directory() is None
    loader.load_text(TEXT, "a.yaml")
    loader.load_text(TEXT, "a.yaml")
    assert len(validations) == 2
    assert list(tmp_path.iterdir()) == []


def test_the_entries_used_last_are_kept(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch, validations: list[str]
) -> None:
    monkeypatch.setattr(cache, "_KEEP", 5)
    texts = [TEXT + "#" * n + "\n" for n in range(6)]
    folder = cache_home / "sagactl" / "sagas"
    for number, text in enumerate(texts[:5]):
        loader.load_text(text, "a.yaml")
        name = cache._name(text)
        assert name is not None
        os.utime(folder / name, (1000 + number, 1000 + number))  # written a second apart
    loader.load_text(texts[0], "a.yaml")  # the oldest, used again: now the newest
    loader.load_text(texts[5], "a.yaml")  # a sixth: past the limit, the older half goes
    assert len(entries(cache_home)) == 3
    loader.load_text(texts[0], "a.yaml")
    assert len(validations) == 6  # texts[0] read back both times


def test_a_saga_pickle_cannot_take_is_still_loaded(
    cache_home: Path, validations: list[str]
) -> None:
    """A body nested past pickle's recursion limit passes every check: the saga loads, it
    is just not cached."""
    depth = 600
    body = "{a: " * depth + "1" + "}" * depth
    text = (
        "version: 1\nname: deep\nsteps:\n  - id: a\n    action:\n      method: POST\n"
        f"      url: http://127.0.0.1:1/\n      json: {body}\n"
    )
    assert loader.load_text(text, "deep.yaml").name == "deep"
    assert loader.load_text(text, "deep.yaml").name == "deep"
    assert len(validations) == 2
    assert entries(cache_home) == []


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_an_entry_that_is_no_file_is_ignored_and_holds_nothing_open(
    kind: str, cache_home: Path, validations: list[str]
) -> None:
    """A directory, or a FIFO (which would block a reader), in an entry's place: ignored, no
    descriptor left open, no wait."""
    loader.load_text(TEXT, "a.yaml")
    (entry,) = entries(cache_home)
    entry.unlink()
    if kind == "directory":
        entry.mkdir()
    else:
        os.mkfifo(entry, 0o600)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        loader.load_text(TEXT, "a.yaml")
    assert len(os.listdir("/proc/self/fd")) == before
    if kind == "directory":  # it stays: every load validates
        assert len(validations) == 21
    else:  # the first load's entry took its place
        assert len(validations) == 2
        assert entry.is_file()


def test_the_key_has_each_library_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jinja2, jsonschema, jsonschema-rs and PyYAML judge or parse a saga: their versions are
    in the key, found whatever the case of their metadata's name (`pyyaml-6.0.dist-info`)."""
    seen: list[str] = []
    real = cache.hashlib.sha256

    class Recording:
        def __init__(self) -> None:
            self._hash = real()

        def update(self, data: bytes) -> None:
            seen.append(data.decode("utf-8", "replace"))
            self._hash.update(data)

        def digest(self) -> bytes:
            return self._hash.digest()

    monkeypatch.setattr(cache.hashlib, "sha256", Recording)
    cache._fingerprint.cache_clear()
    try:
        assert cache._fingerprint() is not None
    finally:
        monkeypatch.undo()
        cache._fingerprint.cache_clear()
    libraries = "".join(seen)
    for metadata in ("jinja2-", "jsonschema-", "jsonschema_rs-", "pyyaml-"):
        assert f"{metadata}" in libraries.lower() and ".dist-info" in libraries
