"""`maskjob verify` (jobs/verify.py): the manifest is data, not trust (SPEC 4).

Tampered lines (escaping or absolute keys, non-strings, non-JSON, non-objects, over-long
lines) are problems with exit 1 and no traceback, and no key outside OUTPUT is ever read; the
manifest is streamed; objects are read in batches with one call each; a replaced larger object
is reported without being read whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from jobs import verify as verify_mod
from jobs.cli import run
from jobs.storage import Root
from maskcore.manifest import fingerprint


def write_output(out: Path, objects: dict[str, bytes], extra_lines: list[str] = ()) -> None:
    """A finished OUTPUT holding `objects`, one manifest line per object, then `extra_lines`."""
    lines = []
    for key, data in objects.items():
        (out / key).parent.mkdir(parents=True, exist_ok=True)
        (out / key).write_bytes(data)
        lines.append(json.dumps({"dataset": "ds", "item": key, "status": "ok",
                                 "outputs": [fingerprint(key, data)]}))
    (out / "manifest.jsonl").write_text("".join(x + "\n" for x in [*lines, *extra_lines]))
    (out / "manifest.json").write_text("{}")


@pytest.fixture
def reads(monkeypatch):
    """Every path read through cat_ranges, and the number of calls (one per batch)."""
    seen: dict[str, list] = {"paths": [], "calls": []}
    original = LocalFileSystem.cat_ranges

    def spy(self, paths, starts, ends, **kw):
        seen["paths"] += paths
        seen["calls"].append(len(paths))
        return original(self, paths, starts, ends, **kw)

    monkeypatch.setattr(LocalFileSystem, "cat_ranges", spy)
    return seen


def line(key, size=5, digest="md5:0"):
    return json.dumps({"dataset": "ds", "item": "x", "status": "ok",
                       "outputs": [{"key": key, "size": size, "checksum": digest}]})


def test_tampered_lines_are_problems_never_followed(tmp_path, reads, caplog):
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.txt"  # outside OUTPUT, and exactly as the line describes it
    secret.write_bytes(b"12345")
    evil = fingerprint("../secret.txt", b"12345")
    bad = [
        json.dumps({"dataset": "ds", "item": "up", "status": "ok", "outputs": [evil]}),
        line(str(secret)),  # absolute
        line("C:/x.png"),
        line(42),
        line(["a"]),
        line("ok/../../x"),
        line("nl\n.png"),
        "{oops",
        "[1, 2]",
        "\"a string\"",
        json.dumps({"outputs": "not a list"}),
        json.dumps({"outputs": [7]}),
        line("good.png", size="big"),
        line("good.png", size=-1),
        line("good.png", size=True),
        line("good.png", digest=None),
        "[" * 100_000 + "]" * 100_000,  # nesting deep enough for a RecursionError
        "\xff\xfe not utf-8",
    ]
    write_output(out, {"good.png": b"fine"}, bad)
    caplog.set_level(logging.INFO)
    assert run(["verify", str(out)]) == 1
    problems = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(problems) == len(bad)
    for n in range(2, 2 + len(bad)):
        assert any(p.startswith(f"manifest.jsonl line {n}: ") for p in problems), n
    assert sum("bad key, not followed" in p for p in problems) == 7
    assert all(Path(p).resolve().is_relative_to(out.resolve()) for p in reads["paths"])
    assert [Path(p).name for p in reads["paths"]] == ["good.png"]
    assert "Traceback" not in caplog.text and "verified 1 objects: 18 problems" in caplog.text


def test_an_over_long_line_is_skipped_and_the_next_ones_checked(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(verify_mod, "CHUNK", 64)
    monkeypatch.setattr(verify_mod, "MAX_LINE", 1000)
    out = tmp_path / "out"
    out.mkdir()
    write_output(out, {"a.png": b"a"}, [line("x" * 5000), line("missing.png")])
    assert run(["verify", str(out)]) == 1
    assert "manifest.jsonl line 2: longer than 1000 bytes" in caplog.text
    assert "missing: missing.png" in caplog.text


def test_manifest_is_streamed_and_objects_read_in_batches(tmp_path, reads, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    write_output(out, {f"ds/m{i:03d}.png": b"x" * (i % 7) + b"!" for i in range(600)})

    def no_whole_read(self, key):
        raise AssertionError(f"read whole: {key}")

    monkeypatch.setattr(Root, "read", no_whole_read)
    monkeypatch.setattr(LocalFileSystem, "info", lambda *a, **k: pytest.fail("a HEAD per key"))
    monkeypatch.setattr(verify_mod.Root, "exists", lambda self, key: True)
    assert verify_mod.verify(Root(str(out))) == 0
    assert reads["calls"] == [256, 256, 88]


def test_batches_are_bounded_by_recorded_bytes(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(verify_mod, "BATCH_BYTES", 100)
    out = tmp_path / "out"
    out.mkdir()
    write_output(out, {f"o{i}.bin": bytes(60) for i in range(5)})
    assert verify_mod.verify(Root(str(out))) == 0
    assert reads["calls"] == [2, 2, 1]


def test_replaced_larger_object_is_reported_without_reading_it_whole(tmp_path, reads, caplog):
    out = tmp_path / "out"
    out.mkdir()
    write_output(out, {"a.png": b"small", "b.png": b"same size", "c.png": b"c"})
    (out / "a.png").write_bytes(b"x" * 1_000_000)
    (out / "b.png").write_bytes(b"SAME SIZE")
    (out / "c.png").unlink()
    (out / "c.png").mkdir()  # a folder where an object should be
    assert run(["verify", str(out)]) == 1
    assert "size differs: a.png (more than 5 bytes, manifest says 5)" in caplog.text
    assert "checksum differs: b.png" in caplog.text
    assert "c.png" in caplog.text and "Traceback" not in caplog.text


def test_missing_manifest_lines_and_summary(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    assert run(["verify", str(out)]) == 1
    assert "missing: manifest.json " in caplog.text and "missing: manifest.jsonl" in caplog.text


def test_problems_beyond_the_shown_ones_are_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(verify_mod, "SHOWN", 3)
    out = tmp_path / "out"
    out.mkdir()
    write_output(out, {}, ["{oops"] * 10)
    assert run(["verify", str(out)]) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4 and "and 7 more problems" in errors[-1].getMessage()


def test_objects_recorded_in_format_details_are_checked_streamed(tmp_path, caplog):
    """Archive pieces (manifest.json `format_details`) are verified too: a truncated, a changed,
    a missing and a grown piece are each named; an escaping key there is never followed."""
    out = tmp_path / "out"
    out.mkdir()
    write_output(out, {"m/a.png": b"aaaa"})
    pieces = {f"sly/p.tar.{n:03d}": bytes([n]) * 3000 for n in range(1, 6)}
    for key, data in pieces.items():
        (out / key).parent.mkdir(parents=True, exist_ok=True)
        (out / key).write_bytes(data)
    (tmp_path / "secret").write_bytes(b"x")
    recorded = [fingerprint(k, d) for k, d in pieces.items()]
    recorded.append({"key": "../secret", "size": 1, "checksum": fingerprint("", b"x")["checksum"]})
    summary = {"format_details": {"sly": {"archive": {"pieces": recorded}}}}
    (out / "manifest.json").write_text(json.dumps(summary))
    assert run(["verify", str(out)]) == 1  # the escaping key alone is a problem
    (out / "manifest.json").write_text(json.dumps({"format_details": {"sly": {"archive": {
        "pieces": recorded[:-1]}}}}))
    caplog.clear()
    assert run(["verify", str(out)]) == 0
    (out / "sly/p.tar.001").write_bytes(b"\1" * 2999)  # truncated
    (out / "sly/p.tar.002").write_bytes(b"\2" * 2999 + b"X")  # changed
    (out / "sly/p.tar.003").unlink()  # missing
    (out / "sly/p.tar.004").write_bytes(b"\4" * 30000)  # grown
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="maskjob"):
        assert run(["verify", str(out)]) == 1
    text = caplog.text
    assert "size differs: sly/p.tar.001 (2999 bytes" in text
    assert "checksum differs: sly/p.tar.002" in text
    assert "missing: sly/p.tar.003" in text
    assert "size differs: sly/p.tar.004 (more than 3000 bytes" in text
    assert "sly/p.tar.005" not in text
    assert "verified 6 objects: 4 problems" in text
