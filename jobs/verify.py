"""`maskjob verify OUTPUT`: re-check every output object listed in the manifest.

For each `outputs[]` entry of `manifest.jsonl`: the object exists, has the recorded size and
the recorded checksum. Prints each problem with the object's key; exit 1 if any, else 0.
A missing `manifest.json` (export not completed) is a problem too. Dataset-level objects a
format records in `manifest.json` under `format_details.<format>` as `{key, size, checksum}`
entries (e.g. the Supervisely archive pieces) are checked the same way, streamed in CHUNK
reads (a piece can be GiBs) and never past their recorded size + 1 byte.

The manifest is data, not trust (SPEC 4): it is streamed line by line (never read whole; a line
longer than MAX_LINE is a problem, not a memory spike), and a line that is not a JSON object, an
`outputs` that is not a list of {key, size, checksum}, or a key that is not a clean relative key
(`../x`, absolute, control characters, not a string: `maskcore.paths.key_problem`) is reported
as a problem and never followed. Objects are read in batches of at most BATCH_OBJECTS /
BATCH_BYTES (recorded sizes) with ONE concurrent call per batch (`cat_ranges`: s3fs sends the
GETs together), each read capped at its recorded size + 1 byte, so a replaced larger object
shows as a size problem without being read whole. Problems beyond SHOWN are counted, not
printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import IO, Any

from maskcore.manifest import checksum
from maskcore.paths import key_problem

from .manifest_store import MANIFEST_LINES, MANIFEST_SUMMARY
from .storage import Root

log = logging.getLogger("maskjob")

MAX_LINE = 16 * 1024 * 1024  # one manifest line (an item with many instance masks is ~100 KB)
MAX_SIZE = 1 << 34  # a recorded size beyond this (16 GiB) is not believed
BATCH_OBJECTS = 256
BATCH_BYTES = 64 * 1024 * 1024
SHOWN = 1000
CHUNK = 1 << 20


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number from 1, line bytes or None when longer than MAX_LINE), streamed in
    chunks; an over-long line is skipped without being held."""
    buf, number, skipping, max_line = b"", 0, False, MAX_LINE
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            break
        buf += chunk
        pos = 0
        while True:
            cut = buf.find(b"\n", pos)
            if cut < 0:
                break
            number += 1
            yield number, (None if skipping else buf[pos:cut])
            pos, skipping = cut + 1, False
        buf = buf[pos:]
        if len(buf) > max_line:
            buf, skipping = b"", True
    if buf or skipping:
        yield number + 1, None if skipping else buf


def _output_problem(out: Any) -> str | None:
    """Why an `outputs[]` entry cannot be checked, or None."""
    if not isinstance(out, dict):
        return f"an output entry that is not an object ({type(out).__name__})"
    key, size, digest = out.get("key"), out.get("size"), out.get("checksum")
    problem = key_problem(key)  # type: ignore[arg-type]
    if problem:
        return f"bad key, not followed: {problem}"
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        return f"bad size for {key}: {str(size)[:40]!r}"
    if not isinstance(digest, str):
        return f"bad checksum for {key}: {str(digest)[:40]!r}"
    return None


def _entries(f: IO[bytes], problems: list[str]) -> Iterator[dict[str, Any]]:
    """Checkable output entries of the manifest; every bad line or entry becomes a problem."""
    for number, line in _lines(f):
        where = f"{MANIFEST_LINES} line {number}"
        if line is None:
            problems.append(f"{where}: longer than {MAX_LINE} bytes")
            continue
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            problems.append(f"{where}: not JSON")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        outputs = entry.get("outputs", [])
        if not isinstance(outputs, list):
            problems.append(f"{where}: 'outputs' is not a list")
            continue
        for out in outputs:
            problem = _output_problem(out)
            if problem:
                problems.append(f"{where}: {problem}")
            else:
                yield out


def _content_problem(out: dict[str, Any], got: int, digest: str, *, source: str) -> str | None:
    """What differs between an object read back (`got` bytes, at most size + 1, with checksum
    `digest`) and its recorded entry; `source` names the file that recorded it."""
    key, size = out["key"], out["size"]
    if got != size:
        shown = f"more than {size}" if got > size else str(got)
        return f"size differs: {key} ({shown} bytes, {source} says {size})"
    if digest != out["checksum"]:
        return f"checksum differs: {key}"
    return None


def _check_batch(dest: Root, batch: list[dict[str, Any]]) -> Iterator[str]:
    """Problems of a batch of outputs, read with one concurrent call (size + 1 bytes each)."""
    fs, _ = dest.fs_path
    paths = [dest.full(o["key"]) for o in batch]
    got = fs.cat_ranges(paths, [0] * len(batch), [o["size"] + 1 for o in batch],
                        on_error="return")
    for out, data in zip(batch, got, strict=True):
        key = out["key"]
        if isinstance(data, FileNotFoundError):
            yield f"missing: {key}"
        elif isinstance(data, BaseException):
            yield f"unreadable: {key} ({type(data).__name__})"
        else:
            digest = checksum(data) if len(data) == out["size"] else ""
            problem = _content_problem(out, len(data), digest, source="manifest")
            if problem:
                yield problem


MAX_SUMMARY = 64 * 1024 * 1024  # manifest.json is counters and format details: small


def _recorded(node: Any, depth: int = 0) -> Iterator[Any]:
    """Every `{key, size, checksum}` entry under a `format_details` tree (bounded depth)."""
    if depth > 8:
        return
    if isinstance(node, dict):
        if {"key", "size", "checksum"} <= node.keys():
            yield node
            return
        for value in node.values():
            yield from _recorded(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _recorded(value, depth + 1)


def _stream_problem(dest: Root, out: dict[str, Any]) -> str | None:
    """Size and checksum of one (possibly huge) object, read in CHUNK pieces."""
    key, size = out["key"], out["size"]
    fs, _ = dest.fs_path
    digest, got = hashlib.md5(usedforsecurity=False), 0
    try:
        with fs.open(dest.full(key), "rb") as f:
            while got <= size:
                chunk = f.read(min(CHUNK * 8, size + 1 - got))
                if not chunk:
                    break
                digest.update(chunk)
                got += len(chunk)
    except FileNotFoundError:
        return f"missing: {key}"
    except OSError as exc:
        return f"unreadable: {key} ({type(exc).__name__})"
    return _content_problem(out, got, "md5:" + digest.hexdigest(), source=MANIFEST_SUMMARY)


def _summary_objects(dest: Root, problems: list[str]) -> Iterator[dict[str, Any]]:
    """Checkable objects recorded in manifest.json's `format_details`; a bad entry is a problem."""
    fs, _ = dest.fs_path
    try:
        with fs.open(dest.full(MANIFEST_SUMMARY), "rb") as f:
            raw = f.read(MAX_SUMMARY + 1)
    except FileNotFoundError:
        return
    if len(raw) > MAX_SUMMARY:
        problems.append(f"{MANIFEST_SUMMARY}: longer than {MAX_SUMMARY} bytes")
        return
    try:
        summary = json.loads(raw)
    except (ValueError, RecursionError):
        problems.append(f"{MANIFEST_SUMMARY}: not JSON")
        return
    details = summary.get("format_details", {}) if isinstance(summary, dict) else {}
    for out in _recorded(details):
        problem = _output_problem(out)
        if problem:
            problems.append(f"{MANIFEST_SUMMARY} format_details: {problem}")
        else:
            yield out


def verify(dest: Root) -> int:
    problems: list[str] = []  # printed as they come, beyond SHOWN only counted
    count = {"objects": 0, "problems": 0}

    def report() -> None:
        for p in problems:
            if count["problems"] < SHOWN:
                log.error("%s", p)
            count["problems"] += 1
        problems.clear()

    if not dest.exists(MANIFEST_SUMMARY):
        problems.append(f"missing: {MANIFEST_SUMMARY} (the export did not complete)")
    fs, _ = dest.fs_path
    try:
        f = fs.open(dest.full(MANIFEST_LINES), "rb")
    except FileNotFoundError:
        problems.append(f"missing: {MANIFEST_LINES}")
        report()
        return 1
    with f:
        batch: list[dict[str, Any]] = []
        size = 0
        for out in _entries(f, problems):
            batch.append(out)
            size += out["size"]
            if len(batch) >= BATCH_OBJECTS or size >= BATCH_BYTES:
                problems.extend(_check_batch(dest, batch))
                count["objects"] += len(batch)
                batch, size = [], 0
            report()
        problems.extend(_check_batch(dest, batch))
        count["objects"] += len(batch)
    for out in _summary_objects(dest, problems):
        problem = _stream_problem(dest, out)
        if problem:
            problems.append(problem)
        count["objects"] += 1
    report()
    if count["problems"] > SHOWN:
        log.error("... and %d more problems", count["problems"] - SHOWN)
    log.info("verified %d objects: %d problems", count["objects"], count["problems"])
    return 1 if count["problems"] else 0
