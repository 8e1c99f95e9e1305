"""process_partition(): the one place where I/O meets the kernel.

A partition is a list of item keys. Inputs are read a few items ahead on threads (object
storage latency overlaps rendering). For each item: parse the annotation, render once,
let every requested format encode from the same stamps, and collect the blobs; the partition's
blobs are written concurrently in batches on a background thread while later items render
(bounded bytes in flight), then - last - its manifest part `_manifest/part-NNNNN.jsonl`.
The part's existence is the partition's commit: a rerun skips committed partitions, and since
every key is a pure function of (output, format, item), a retried partition overwrites its
own half-written objects and never duplicates them.

Per-item data errors (`ItemError`, `InputError`) become `failed` manifest lines; anything else
(storage down, worker killed) propagates, so Dask retries the whole partition.
Returns only counts: the driver never receives pixels or manifest rows.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from maskcore.errors import InputError, ItemError
from maskcore.formats import FORMATS, INPUT_FORMATS
from maskcore.formats.base import Blob, ItemContext, ItemOutput
from maskcore.limits import Limits
from maskcore.manifest import ManifestEntry, fingerprint
from maskcore.model import ClassTable

from .listing import ItemRef, read_annotation
from .manifest_store import part_key
from .storage import Root

log = logging.getLogger("maskjob")

FLUSH_BYTES = 32 * 1024 * 1024
FLUSH_OBJECTS = 256
READ_AHEAD = 4  # items whose inputs are being read while the current one renders


@dataclass(frozen=True)
class PartitionJob:
    """Everything a worker needs for one partition (small and picklable: keys, no pixels)."""

    pid: int
    items: tuple[ItemRef, ...]
    source: Root
    dest: Root
    classes: ClassTable
    formats: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    reader: str = "supervisely"
    settings_hash: str = ""
    incremental: bool = False


def _unchanged(job: PartitionJob, ref: ItemRef) -> ManifestEntry | None:
    """The previous entry carried forward, when annotation, image and settings are the same."""
    if not (job.incremental and ref.previous):
        return None
    prev = ManifestEntry.from_line(ref.previous)
    if prev.status not in ("ok", "unchanged"):
        return None
    same = (prev.inputs.get("settings") == job.settings_hash
            and prev.inputs.get("annotation", {}).get("tag") == ref.ann_tag
            and prev.inputs.get("image", {}).get("tag") == ref.image_tag)
    if not same:
        return None
    prev.status = "unchanged"
    return prev


def _needs_image(job: PartitionJob) -> bool:
    return any(job.options[f].needs_image() for f in job.formats)


@dataclass
class _Fetched:
    """An item's input bytes, read ahead on a thread while earlier items are rendered."""

    ann: bytes | None = None
    image: bytes | None = None
    error: BaseException | None = None


def _fetch(job: PartitionJob, ref: ItemRef, with_image: bool) -> _Fetched:
    got = _Fetched()
    try:
        if ref.ann_inline is None and ref.ann_key is not None and not ref.problem:
            got.ann = read_annotation(job.source, ref)
        if with_image and ref.image_key is not None and not ref.problem:
            got.image = job.source.read(ref.image_key)
    except FileNotFoundError as e:  # vanished since listing: that item fails alone
        got.error = ItemError(f"Expected the input object to exist. Got {e} instead.")
    return got


_Ahead = tuple[ItemRef, ManifestEntry | None, Future[_Fetched] | None]


def _read_ahead(job: PartitionJob, refs: tuple[ItemRef, ...], window: int = READ_AHEAD
                ) -> Iterator[_Ahead]:
    """Yield (ref, its carried-forward entry if unchanged, else the future of its bytes); at
    most `window` items are in flight, so object-store latency overlaps rendering while worker
    memory stays bounded. Unchanged items are decided here, once, and never read."""
    with_image = _needs_image(job)
    with ThreadPoolExecutor(max_workers=min(window, 8), thread_name_prefix="read") as pool:

        def start(ref: ItemRef) -> _Ahead:
            carried = _unchanged(job, ref)
            fut = None if carried else pool.submit(_fetch, job, ref, with_image)
            return ref, carried, fut

        it = iter(refs)
        pending: deque[_Ahead] = deque(start(r) for _, r in zip(range(window), it, strict=False))
        while pending:
            yield pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(start(nxt))


def _export_item(job: PartitionJob, ref: ItemRef, carried: ManifestEntry | None = None,
                 fetched: Future[_Fetched] | None = None) -> tuple[ManifestEntry, list[Blob]]:
    if carried is not None:
        return carried, []
    got = fetched.result() if fetched is not None else _Fetched()
    if got.error is not None:
        raise got.error
    entry = ManifestEntry(dataset=ref.dataset, item=ref.name, status="ok")
    entry.inputs["settings"] = job.settings_hash
    if ref.image_key:
        entry.inputs["image"] = {"key": ref.image_key, "tag": ref.image_tag}
    if ref.problem:
        raise ItemError(ref.problem)
    if ref.ann_inline is None and ref.ann_key is None:
        raise ItemError("Expected an annotation file for this image. Got none instead.")
    ann = ref.ann_inline if ref.ann_inline is not None else (
        got.ann if got.ann is not None else read_annotation(job.source, ref))
    entry.inputs["annotation"] = {**fingerprint(ref.ann_key or "", ann), "tag": ref.ann_tag}
    reader = INPUT_FORMATS[job.reader]
    item = reader.parse_item(ann, job.classes, dataset=ref.dataset, name=ref.name,
                             image_key=ref.image_key, ann_key=ref.ann_key, limits=job.limits)

    def read_image() -> bytes:
        assert ref.image_key is not None
        data = got.image if got.image is not None else job.source.read(ref.image_key)
        entry.inputs["image"] = {**fingerprint(ref.image_key, data), "tag": ref.image_tag}
        return data

    # the annotation is copied verbatim only into a project of its own format
    own_ann = ann if job.reader == "supervisely" else None
    ctx = ItemContext(item, job.classes, read_image if ref.image_key else None, own_ann,
                      job.limits, reader.RULE, job.dest.uri, job.source.uri)
    blobs: list[Blob] = []
    first: ItemOutput | None = None
    for name in job.formats:
        result = FORMATS[name].write_item(ctx, job.options[name])
        first = first or result
        blobs.extend(result.blobs)
    if first is not None:
        entry.class_pixels = first.class_pixels or {}
        entry.instances = first.instances or 0
    entry.outputs = [fingerprint(b.key, b.data) for b in blobs]
    return entry, blobs


class _BackgroundWriter:
    """Writes batches of blobs on one thread while the partition goes on rendering; at most one
    batch is in flight and one filling, so memory stays bounded (~2 x FLUSH_BYTES)."""

    def __init__(self, dest: Root) -> None:
        self.dest = dest
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        self.inflight: Future[None] | None = None

    def submit(self, batch: dict[str, bytes]) -> None:
        self.wait()
        if batch:
            self.inflight = self.pool.submit(self.dest.write_many, batch)

    def wait(self) -> None:
        if self.inflight is not None:
            fut, self.inflight = self.inflight, None
            fut.result()  # a storage error propagates: Dask retries the partition

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


def process_partition(job: PartitionJob) -> dict[str, int]:
    """Export one partition; write its outputs, then its manifest part. Returns counts."""
    lines: list[str] = []
    pending: dict[str, bytes] = {}
    pending_bytes = 0
    counts = {"items": 0, "ok": 0, "failed": 0, "unchanged": 0, "outputs": 0, "bytes": 0}
    writer = _BackgroundWriter(job.dest)
    try:
        for ref, carried, fetched in _read_ahead(job, job.items):
            try:
                entry, blobs = _export_item(job, ref, carried, fetched)
            except (ItemError, InputError) as e:
                entry = ManifestEntry(dataset=ref.dataset, item=ref.name, status="failed",
                                      error=str(e))
                blobs = []
            except MemoryError:
                entry = ManifestEntry(dataset=ref.dataset, item=ref.name, status="failed",
                                      error="Expected an item that fits in worker memory. "
                                            "Got a MemoryError instead.")
                blobs = []
            counts["items"] += 1
            counts[entry.status] += 1
            for b in blobs:
                pending[b.key] = b.data
                pending_bytes += len(b.data)
                counts["outputs"] += 1
                counts["bytes"] += len(b.data)
            if pending_bytes >= FLUSH_BYTES or len(pending) >= FLUSH_OBJECTS:
                writer.submit(pending)
                pending, pending_bytes = {}, 0
            lines.append(entry.to_line())
        writer.submit(pending)
        writer.wait()
    finally:
        writer.close()
    # the commit: written only after every output of the partition is stored
    job.dest.write(part_key(job.pid), "".join(lines).encode())
    return counts
