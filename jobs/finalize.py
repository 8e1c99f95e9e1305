"""Finalize an export once every partition committed: ONE streaming pass, then `manifest.json`.

    finalize_export(dest=, n_parts=, plan_token=, formats=, options=, classes=, meta=) -> Summary

1. One pass over the committed parts of the plan of `plan_token`
   (`manifest_store.iter_part_batches`, fetched a batch at a time concurrently; each part read
   once): the part's bytes are appended to `manifest.jsonl` (the merge), and each of its lines
   is decoded once (`FinalEntry`: only the fields finalize uses) and given to the Summary, the
   preview sampler and every requested format's streaming `finalizer` (cvat subset lists and
   zip, zarr intermediate groups, the supervisely archive); formats with PART_RECORDS also get
   each partition's records, read in the same batches (clearml frames.jsonl: a concatenation of
   per-partition blocks).
2. The finalizers close (their last batch, their list objects, their archives); what each
   records (`FinalizeIO.record`) goes to manifest.json under `format_details.<format>`. When
   the pass fails, a finalizer with `abort` discards what it was streaming instead.
3. The formats' dataset-level files (meta.json, labelmap.txt, mask_labels.json, zarr root).
4. `preview.html`, from the sampled lines; parts of other plans (stale) are deleted.
5. `manifest.json` LAST: its presence means the export completed.

Driver memory is O(1) in the number of items: one batch of parts, one batch per finalizer,
a dozen sampled lines, counters and per-class totals (the Summary lists at most 1000
failures). jobs/ never names a format: everything format-specific is behind the Writer
protocol (maskcore/formats/base.py), which gets its I/O as a `FinalizeIO` built here.
What finalize cannot do (a sidecar whose key is taken by a folder, a frame that is missing, an
id a list cannot hold) is reported as a problem in manifest.json and the log, never a crash
after all the work is done; storage errors propagate (the run exits 3; rerunning resumes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import msgspec

from maskcore.errors import ItemError
from maskcore.formats import FORMATS
from maskcore.formats.base import Blob, FinalEntry, FinalizeIO, Finalizer, RecordsFinalizer
from maskcore.manifest import Summary
from maskcore.model import ClassTable

from . import scratch
from .manifest_store import (
    MANIFEST_LINES,
    MANIFEST_SUMMARY,
    iter_part_batches,
    records_key,
    sweep_parts,
)
from .preview import Sampler, write_preview
from .storage import Root

log = logging.getLogger("maskjob")

_DECODE = msgspec.json.Decoder(FinalEntry).decode


def _read_local(path: str) -> bytes | None:
    """A regular file's bytes, None if absent (or not a regular file). Plain os calls: a third
    of fsspec's per-file cost."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # absent, a link, a folder on the way
        return None
    try:
        size = os.fstat(fd)
        if not stat.S_ISREG(size.st_mode):
            return None
        chunks, left = [], size.st_size
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_many(dest: Root, keys: list[str], missing_ok: bool) -> dict[str, bytes]:
    """One concurrent read; with `missing_ok`, absent keys - and keys that are not clean
    relative keys (a tampered part) - are left out, for the finalizer to report."""
    if not keys:
        return {}
    if not missing_ok:
        return dest.read_many(keys)
    full = {}
    for k in keys:
        try:
            full[dest.full(k)] = k
        except ItemError:
            continue
    if dest.is_local:
        found = ((k, _read_local(p)) for p, k in full.items())
        return {k: data for k, data in found if data is not None}
    got = dest.fs.cat(list(full), on_error="omit")
    return {full[p]: data for p, data in got.items() if isinstance(data, bytes)}


def finalize_io(dest: Root, summary: Summary) -> FinalizeIO:
    """The I/O a format's finalizer gets: reads, writes and streamed outputs under `dest`;
    problems go to the summary and the log."""

    def problem(message: str) -> None:
        log.warning("finalize: %s", message)
        summary.problem(message)

    return FinalizeIO(
        read=dest.read,
        read_many=lambda keys, missing_ok=False: _read_many(dest, keys, missing_ok),
        write_many=dest.write_many,
        open_output=dest.open_write,
        problem=problem,
        exists=dest.exists,
        delete=dest.delete,
        move=dest.move,
        scratch=lambda: scratch.make("maskjob-finalize-"),
        drop_scratch=scratch.remove,
    )


def _write_sidecars(dest: Root, blobs: list[Blob], io: FinalizeIO) -> None:
    """All dataset files in one concurrent call; if that fails (a folder where a file must go:
    a dataset named like a sidecar), one by one, reporting each that cannot be written."""
    try:
        dest.write_many({b.key: b.data for b in blobs})
        return
    except (OSError, ValueError):
        pass
    for b in blobs:
        try:
            dest.write(b.key, b.data)
        except (OSError, ValueError) as e:
            io.problem(f"{b.key} not written: {type(e).__name__}: {e}")


def _entries(data: bytes, io: FinalizeIO) -> Iterator[tuple[FinalEntry, bytes]]:
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            yield _DECODE(line), line
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            io.problem(f"a manifest line that cannot be read ({e}): {line[:120]!r}")


def _parts(dest: Root, n_parts: int, token: str, record_formats: Sequence[str],
           io: FinalizeIO) -> Iterator[tuple[int, bytes, dict[str, bytes | None]]]:
    """(partition id, part bytes, {format: its records or None if missing}), in order; a batch
    of parts, then its records, each with one concurrent read."""
    for batch in iter_part_batches(dest, n_parts, token):
        keys = {(f, p): records_key(f, p, token) for p, _ in batch for f in record_formats}
        got = io.read_many(list(keys.values()), True)
        for pid, data in batch:
            yield pid, data, {f: got.get(keys[f, pid]) for f in record_formats}


def finalize_export(*, dest: Root, n_parts: int, plan_token: str, formats: Sequence[str],
                    options: Mapping[str, Any], classes: ClassTable, meta: dict[str, Any]
                    ) -> Summary:
    """Merge the parts of the plan of `plan_token`, run every format's streaming finalize,
    write the dataset files, the preview, and `manifest.json` last (see the module
    docstring)."""
    summary = Summary()
    io = finalize_io(dest, summary)
    sampler = Sampler()
    finalizers: list[Finalizer] = []
    details: dict[str, Any] = {}  # format -> what its finalizer records (manifest.json)
    failure: BaseException | None = None
    record_formats = [f for f in formats if FORMATS[f].PART_RECORDS]
    with dest.open_write(MANIFEST_LINES) as merged:  # lines: storage's LINES_BLOCK parts
        try:
            for f in formats:
                own = dataclasses.replace(io, record=lambda d, f=f: details.__setitem__(f, d))
                finalizers.append(FORMATS[f].finalizer(classes, options[f], own))
            takes_records = {f: cast(RecordsFinalizer, fin)
                             for f, fin in zip(formats, finalizers, strict=True)
                             if f in record_formats}
            for pid, data, records in _parts(dest, n_parts, plan_token, record_formats, io):
                merged.write(data)
                if data and not data.endswith(b"\n"):
                    merged.write(b"\n")
                for entry, line in _entries(data, io):
                    summary.add(entry)
                    sampler.offer(entry, line)
                    for fin in finalizers:
                        fin.take(entry)
                for f, rfin in takes_records.items():
                    rfin.take_records(pid, records[f])
        except BaseException as e:
            failure = e
            raise
        finally:
            errors = []
            for fin in finalizers:  # each closes even if another fails
                try:
                    if failure is not None:
                        fin.abort(failure)  # discard instead of commit
                    else:
                        fin.close()
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
    _write_sidecars(dest, [b for f in formats
                           for b in FORMATS[f].dataset_files(classes, options[f])], io)
    totals = summary.to_dict()
    try:
        write_preview(dest, meta, totals, sampler.picked)
    except (OSError, ValueError, ItemError) as e:
        io.problem(f"preview.html not written: {type(e).__name__}: {e}")
    _, stale = sweep_parts(dest, plan_token, 0)  # committed late by a dead driver's tasks
    if stale:
        log.info("finalize: deleted %d parts of another plan (never merged)", stale)
    body = {**meta, **({"format_details": details} if details else {}),
            "summary": summary.to_dict()}
    dest.write(MANIFEST_SUMMARY, json.dumps(body, indent=2, ensure_ascii=False).encode())
    return summary
