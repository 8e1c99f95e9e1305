"""process_partition(): the one place where I/O meets the kernel.

A partition is a `PlanSlice` (shard number + byte range of the plan, ~100 bytes); the worker
reads its own items from the plan, and takes everything shared by the job's partitions (roots,
classes, formats, options, limits) from an `ExportContext` sent once per worker. Inputs are read
a few items ahead on threads (object storage latency overlaps rendering). For each item: parse
the annotation, render once, let every requested format encode from the same stamps, and collect
the blobs; the partition's blobs are written concurrently in batches on a background thread
while later items render (bounded bytes in flight), then the records of the formats that keep
them (PART_RECORDS: one object per format, the partition's records in item order, failed items
left out), then - last - its manifest part `_manifest/part-NNNNN-TOKEN.jsonl`, named with the
plan's token (manifest_store). The part's existence is the partition's commit: a rerun skips
committed partitions, and since every key is a pure function of (output, format, item), a
retried partition overwrites its own half-written objects (and records) and never duplicates
them. An item carried forward unchanged (--incremental) is not read nor rendered; its records
are read back from its own record objects (`record_key`) - if one is missing or is not one
line, the item is exported again.

Error classification (per-item isolation, all the way down):
- Anything raised while handling one item - parsing, rendering, encoding (RecursionError,
  OverflowError, ValueError, KeyError, cv2.error, MemoryError, ...) and input reads that fail
  because of that item (missing object, a folder or a name the filesystem refuses: ENOENT,
  ENAMETOOLONG, ENOTDIR, EISDIR, EINVAL, ELOOP; PermissionError on a local input) - becomes that
  item's `failed` line: `"<ExceptionType>: <one-line reason>"` (maskjob's own ItemError keeps its
  "Expected X. Got Y instead." message), at most `MAX_REASON` characters; the traceback goes to
  the debug log only.
- Storage faults fail the partition so Dask retries it: any other OSError from a read
  (connection reset, timeout, a remote PermissionError: credentials or ACL), errors raised by
  the object-store clients (botocore, aiohttp, s3fs, ...), and every write error but one.
- A batch write that fails with a path error (ENAMETOOLONG, ENOTDIR, EISDIR, EEXIST, EINVAL) is
  retried item by item: the item whose key the filesystem refuses fails alone.
- A native crash that kills the worker process is handled by the driver (jobs/run.py): the
  partition is re-run by `process_partition_isolated`, which exports its items one by one in a
  child process; an item whose child dies is failed with `WORKER_DIED`, the rest is exported
  and committed in the same part.
- Time (`limits.max_item_seconds`, 0: none; an item's time runs from the start of its reads to
  the end of its rendering, its output writes left out): on a Dask worker, the process's
  watchdog (jobs/watchdog.py) ends the worker process when an item runs over the limit - a
  thread cannot be stopped inside a native call - so the partition goes isolated as after a
  crash; there the parent kills the child when an item runs over the limit, fails that item
  with `overtime(limit)` and goes on in a new child. An item that finishes over the limit
  fails too (`overtime(limit, took)`): in the driver's own process (`--workers 0`) nothing is
  killed, the watchdog only warns, and the item fails when it ends.
Returns only counts: the driver never receives pixels or manifest rows.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from maskcore.errors import ItemError, MaskjobError
from maskcore.formats import FORMATS, INPUT_FORMATS
from maskcore.formats.base import Blob, ItemContext, ItemOutput
from maskcore.limits import Limits, SizeReader
from maskcore.manifest import ManifestEntry, fingerprint
from maskcore.model import ClassTable

from .listing import ItemRef, read_annotation, read_image_size
from .manifest_store import PlanSlice, delete_keys, part_key, read_slice, records_key
from .secrets import redact_text
from .storage import Root
from .watchdog import OnOverdue, Watch

log = logging.getLogger("maskjob")

FLUSH_BYTES = 32 * 1024 * 1024
FLUSH_OBJECTS = 256
READ_AHEAD = 4  # items whose inputs are being read while the current one renders
MAX_REASON = 300
WORKER_DIED = "the worker process died while exporting this item"
WATCHDOG_EXIT = 124  # a worker's exit code when its watchdog ends it (as timeout(1))
# Test-only: a worker whose environment names an item kills itself with SIGSEGV when it reaches
# that item (a stand-in for a native crash), or hangs there - sleeping, or in a C call that
# holds the GIL. Only the process environment can set them (read when the module is imported).
CRASH_ENV = "MASKJOB_TEST_CRASH_ITEM"
HANG_ENV = "MASKJOB_TEST_HANG_ITEM"
HANG_GIL_ENV = "MASKJOB_TEST_HANG_GIL_ITEM"

_ITEM_ERRNOS = {errno.ENOENT, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EINVAL,
                errno.ELOOP, errno.EILSEQ}
_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EINVAL,
                errno.ELOOP, errno.EILSEQ}
_CLIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "urllib3",
                   "requests", "fsspec")


@dataclass(frozen=True)
class ExportContext:
    """What every partition of a job shares (sent once per worker, not once per task)."""

    source: Root
    dest: Root
    classes: ClassTable
    formats: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    reader: str = "supervisely"
    settings_hash: str = ""
    incremental: bool = False
    plan_token: str = ""  # the adopted plan's (jobs/plan.py prepare_plan): names the parts


class StorageFault(Exception):
    """The object store failed (not the item): the partition fails and Dask retries it."""


Item = tuple[ItemRef, dict[str, Any] | None]  # a ref and its baseline entry, if any


def reason(e: BaseException) -> str:
    """One bounded line naming the exception: `"<Type>: <message>"` (maskjob's own errors keep
    their message as is), secrets removed (a client error may quote a URL or its headers)."""
    try:
        msg = redact_text(str(e)[:65536])
    except Exception:  # a hostile __str__
        msg = ""
    msg = " ".join(msg[:4 * MAX_REASON].split())
    text = msg if isinstance(e, MaskjobError) else f"{type(e).__name__}: {msg}".rstrip(": ")
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def is_storage_fault(e: BaseException, *, local: bool) -> bool:
    """Whether an error raised by an input read is the store's fault rather than the item's."""
    if isinstance(e, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(e, PermissionError):
        return not local
    if isinstance(e, OSError):
        return e.errno not in _ITEM_ERRNOS
    return type(e).__module__.split(".")[0] in _CLIENT_MODULES


def _is_path_error(e: BaseException) -> bool:
    return isinstance(e, IsADirectoryError | NotADirectoryError | FileExistsError) or (
        isinstance(e, OSError) and e.errno in _PATH_ERRNOS)


def _read_input(ctx: ExportContext, fn: Any, *args: Any) -> bytes:
    try:
        return fn(*args)
    except Exception as e:
        if is_storage_fault(e, local=ctx.source.is_local):
            raise StorageFault(reason(e)) from e
        raise


def _unchanged(ctx: ExportContext, ref: ItemRef, prev: dict[str, Any] | None
               ) -> ManifestEntry | None:
    """The previous entry carried forward, when annotation, image and settings are the same.
    A malformed previous entry is never carried forward (the item is exported again)."""
    if not (ctx.incremental and prev) or ref.problem:  # a plan-time problem is never carried
        return None
    try:
        if prev.get("status") not in ("ok", "unchanged"):
            return None
        inputs = prev.get("inputs") or {}
        same = (inputs.get("settings") == ctx.settings_hash
                and (inputs.get("annotation") or {}).get("tag") == ref.ann_tag
                and (inputs.get("image") or {}).get("tag") == ref.image_tag)
        if not same:
            return None
        entry = ManifestEntry(**{k: prev[k] for k in ManifestEntry.__dataclass_fields__
                                 if k in prev})
    except Exception:
        return None
    entry.status = "unchanged"
    return entry


def _needs_image(ctx: ExportContext) -> bool:
    return any(ctx.options[f].needs_image() for f in ctx.formats)


def _record_formats(ctx: ExportContext) -> list[str]:
    return [f for f in ctx.formats if FORMATS[f].PART_RECORDS]


Records = dict[str, bytes]  # {format: one record line} of an item


def _carried_records(ctx: ExportContext, entry: ManifestEntry) -> Records | None:
    """The records of an item carried forward, read back from its record objects; None when
    one is not among its outputs, is missing or is not one line (it is then exported again)."""
    keys = {f: FORMATS[f].record_key(entry.dataset, entry.item, ctx.options[f])
            for f in _record_formats(ctx)}
    if not keys:
        return {}
    outputs = {o.get("key") for o in entry.outputs if isinstance(o, dict)}
    if not all(k in outputs for k in keys.values()):
        return None
    try:
        got = ctx.dest.read_many([k for k in keys.values() if k is not None])
    except Exception as e:
        if is_storage_fault(e, local=ctx.dest.is_local):
            raise StorageFault(reason(e)) from e
        return None
    records = {f: got[k].strip() for f, k in keys.items() if k is not None}
    if not all(r and b"\n" not in r and b"\r" not in r for r in records.values()):
        return None
    return records


@dataclass
class _Fetched:
    """An item's input bytes, read ahead on a thread while earlier items are rendered; for an
    item carried forward unchanged, its previous entry and records instead."""

    ann: bytes | None = None
    image: bytes | None = None
    error: BaseException | None = None
    carried: ManifestEntry | None = None
    records: Records = field(default_factory=dict)


def _fetch(ctx: ExportContext, ref: ItemRef, with_image: bool,
           carried: ManifestEntry | None = None) -> _Fetched:
    if carried is not None:
        try:
            records = _carried_records(ctx, carried)
        except StorageFault as e:
            return _Fetched(error=e)
        if records is not None:
            return _Fetched(carried=carried, records=records)
    got = _Fetched()
    try:
        if ref.ann_inline is None and ref.ann_key is not None and not ref.problem:
            got.ann = _read_input(ctx, read_annotation, ctx.source, ref)
        if with_image and ref.image_key is not None and not ref.problem:
            got.image = _read_input(ctx, ctx.source.read, ref.image_key)
    except Exception as e:  # raised again when the item is handled (item or storage fault)
        got.error = e
    return got


Fetched = Future[_Fetched] | _Fetched
_Ahead = tuple[ItemRef, Fetched]


def _start(ctx: ExportContext, ref: ItemRef, prev: dict[str, Any] | None, with_image: bool,
           submit: Any) -> Fetched:
    """Begin an item: `submit(_fetch, ...)` its reads, unless it is carried forward unchanged
    and no records must be read back (then it is never read)."""
    carried = _unchanged(ctx, ref, prev)
    if carried is not None and not _record_formats(ctx):
        return _Fetched(carried=carried)
    return submit(_fetch, ctx, ref, with_image, carried)


def _read_ahead(ctx: ExportContext, items: list[Item], window: int = READ_AHEAD
                ) -> Iterator[_Ahead]:
    """Yield (ref, the future of its bytes - or its carried-forward entry); at most `window`
    items are in flight, so object-store latency overlaps rendering while worker memory stays
    bounded. Unchanged items are decided here, once."""
    with_image = _needs_image(ctx)
    if ctx.source.is_local:  # a local read takes microseconds: threads would only cost
        yield from _read_inline(ctx, items, with_image)  # GIL hand-offs (futex calls)
        return
    with ThreadPoolExecutor(max_workers=min(window, 8), thread_name_prefix="read") as pool:

        def start(item: Item) -> _Ahead:
            return item[0], _start(ctx, item[0], item[1], with_image, pool.submit)

        it = iter(items)
        pending: deque[_Ahead] = deque(start(r) for _, r in zip(range(window), it, strict=False))
        while pending:
            yield pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(start(nxt))


def _read_inline(ctx: ExportContext, items: list[Item], with_image: bool) -> Iterator[_Ahead]:
    """`_read_ahead` without threads: each item's bytes are read when it is reached."""
    for ref, prev in items:
        yield ref, _start(ctx, ref, prev, with_image, _call)


def _call(fn: Any, *args: Any) -> _Fetched:
    return fn(*args)


# {item name: hook}, read once: workers and isolated children are new processes (an os.environ
# lookup per item would cost ~0.3 % of a tiny item's time)
_HOOKS = {os.environ[k]: k for k in (CRASH_ENV, HANG_ENV, HANG_GIL_ENV) if k in os.environ}


def _test_hooks(name: str) -> None:
    hook = _HOOKS.get(name)
    if hook == CRASH_ENV:
        os.kill(os.getpid(), signal.SIGSEGV)
    if hook == HANG_ENV:
        while True:
            time.sleep(3600)
    if hook == HANG_GIL_ENV:
        import ctypes

        while True:
            ctypes.PyDLL(None).sleep(3600)  # PyDLL: the GIL stays held


def overtime(limit: float, took: float | None = None) -> str:
    """The reason of an item over `limits.max_item_seconds`: stopped, or finished late."""
    if took is None:
        return f"took longer than limits.max_item_seconds = {limit:g} s and was stopped"
    return f"took {took:.1f} s, longer than limits.max_item_seconds = {limit:g} s"


Exported = tuple[ManifestEntry, list[Blob], Records]


def _export_item(ctx: ExportContext, ref: ItemRef, fetched: Fetched | None = None) -> Exported:
    got = fetched.result() if isinstance(fetched, Future) else fetched or _Fetched()
    if got.carried is not None:
        return got.carried, [], got.records
    if got.error is not None:
        raise got.error
    _test_hooks(ref.name)
    entry = ManifestEntry(dataset=ref.dataset, item=ref.name, status="ok")
    entry.inputs["settings"] = ctx.settings_hash
    if ref.image_key:
        entry.inputs["image"] = {"key": ref.image_key, "tag": ref.image_tag}
    if ref.problem:
        raise ItemError(ref.problem)
    if ref.ann_inline is None and ref.ann_key is None:
        raise ItemError("Expected an annotation file for this image. Got none instead.")
    ann = ref.ann_inline if ref.ann_inline is not None else (
        got.ann if got.ann is not None else _read_input(ctx, read_annotation, ctx.source, ref))
    entry.inputs["annotation"] = {**fingerprint(ref.ann_key or "", ann), "tag": ref.ann_tag}
    reader = INPUT_FORMATS[ctx.reader]
    item = reader.parse_item(ann, ctx.classes, dataset=ref.dataset, name=ref.name,
                             image_key=ref.image_key, ann_key=ref.ann_key, limits=ctx.limits,
                             image_size=_size_reader(ctx, ref.image_key))

    def read_image() -> bytes:
        assert ref.image_key is not None
        data = got.image if got.image is not None else \
            _read_input(ctx, ctx.source.read, ref.image_key)
        entry.inputs["image"] = {**fingerprint(ref.image_key, data), "tag": ref.image_tag}
        return data

    ictx = ItemContext(item, ctx.classes, read_image if ref.image_key else None, ann,
                       ctx.limits, reader.RULE, reader.EXIF, ctx.dest.uri, ctx.source.uri,
                       reader.ANN_FORMAT)
    blobs: list[Blob] = []
    records: Records = {}
    first: ItemOutput | None = None
    for name in ctx.formats:
        result = FORMATS[name].write_item(ictx, ctx.options[name])
        first = first or result
        blobs.extend(result.blobs)
        if result.record is not None:
            records[name] = result.record
    if first is not None:
        entry.class_pixels = first.class_pixels or {}
        entry.instances = first.instances or 0
        entry.not_painted = first.not_painted or {}
    entry.outputs = [fingerprint(b.key, b.data) for b in blobs]
    return entry, blobs, records


def _size_reader(ctx: ExportContext, key: str | None) -> SizeReader | None:
    """What reads the size of an item's image from its header, called by the reader only when
    the annotation lacks it (SPEC 3); a failed read is a storage or an item fault as any."""
    if key is None:
        return None
    return lambda: _read_input(ctx, read_image_size, ctx.source, key, ctx.limits)


def _failed(ref: ItemRef, why: str) -> ManifestEntry:
    return ManifestEntry(dataset=ref.dataset, item=ref.name, status="failed", error=why)


def handle_item(ctx: ExportContext, ref: ItemRef, fetched: Fetched | None = None) -> Exported:
    """One item, isolated: its entry, blobs and records, or its failed entry; a StorageFault
    (or a BaseException such as KeyboardInterrupt) propagates."""
    try:
        return _export_item(ctx, ref, fetched)
    except StorageFault:
        raise
    except Exception as e:
        log.debug("item %s/%s failed", ref.dataset, ref.name, exc_info=True)
        return _failed(ref, reason(e)), [], {}


def write_batch(dest: Root, batch: dict[str, bytes], owner: dict[str, int]) -> dict[int, str]:
    """Write a batch of blobs; on a path error, retry item by item: returns {item index: reason}
    of the items whose keys the store refused (their other objects removed)."""
    try:
        dest.write_many(batch)
        return {}
    except OSError as e:
        if not _is_path_error(e):
            raise
    by_item: dict[int, list[str]] = {}
    for k in batch:
        by_item.setdefault(owner[k], []).append(k)
    failed = {}
    for idx, keys in by_item.items():
        try:
            dest.write_many({k: batch[k] for k in keys})
        except OSError as e:
            if not _is_path_error(e):
                raise
            failed[idx] = reason(e)
            with contextlib.suppress(OSError):
                delete_keys(dest, [k for k in keys if len(k.rsplit("/", 1)[-1]) < 250])
    return failed


class _BackgroundWriter:
    """Writes batches of blobs on one thread while the partition goes on rendering; at most one
    batch is in flight and one filling, so memory stays bounded (~2 x FLUSH_BYTES)."""

    def __init__(self, dest: Root) -> None:
        self.dest = dest
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        self.inflight: Future[dict[int, str]] | None = None

    def submit(self, batch: dict[str, bytes], owner: dict[str, int]) -> dict[int, str]:
        failed = self.wait()
        if batch:
            self.inflight = self.pool.submit(write_batch, self.dest, batch, owner)
        return failed

    def wait(self) -> dict[int, str]:
        if self.inflight is not None:
            fut, self.inflight = self.inflight, None
            return fut.result()  # a storage error propagates: Dask retries the partition
        return {}

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


class _PartLines:
    """The partition's manifest lines, records and per-item counts (amended when a write
    fails: the item's line becomes a failed one, its records are dropped)."""

    def __init__(self, record_formats: list[str]) -> None:
        self.lines: list[str] = []
        self.stats: list[tuple[str, int, int]] = []
        self.refs: list[ItemRef] = []
        self.records: list[Records] = []
        self.record_formats = record_formats

    def add(self, ref: ItemRef, entry: ManifestEntry, records: Records) -> int:
        self.lines.append(entry.to_line())
        self.stats.append((entry.status, len(entry.outputs),
                           sum(int(o.get("size", 0)) for o in entry.outputs)))
        self.refs.append(ref)
        self.records.append(records if entry.status != "failed" else {})
        return len(self.lines) - 1

    def fail(self, failed: dict[int, str]) -> None:
        for idx, why in failed.items():
            self.lines[idx] = _failed(self.refs[idx], why).to_line()
            self.stats[idx] = ("failed", 0, 0)
            self.records[idx] = {}

    def counts(self) -> dict[str, int]:
        c = {"items": 0, "ok": 0, "failed": 0, "unchanged": 0, "outputs": 0, "bytes": 0}
        for status, n_out, n_bytes in self.stats:
            c["items"] += 1
            c[status] += 1
            if status == "ok":
                c["outputs"] += n_out
                c["bytes"] += n_bytes
        return c

    def commit(self, dest: Root, pid: int, token: str) -> dict[str, int]:
        """Write the records of each format, then - the commit - the manifest part."""
        dest.write_many({records_key(f, pid, token): b"".join(
            r[f] + b"\n" for r in self.records if f in r) for f in self.record_formats})
        dest.write(part_key(pid, token), "".join(self.lines).encode())
        return self.counts()


def process_partition(ctx: ExportContext, part: PlanSlice, *, on_worker: bool = False
                      ) -> dict[str, int]:
    """Export one partition; write its outputs, then its records, then its manifest part.
    Returns counts. `on_worker`: this is a Dask worker, which ends itself when an item runs
    over `limits.max_item_seconds` (module doc); else the watchdog only warns."""
    items = read_slice(ctx.dest, part)
    out = _PartLines(_record_formats(ctx))
    pending: dict[str, bytes] = {}
    owner: dict[str, int] = {}
    pending_bytes = 0
    limit = ctx.limits.max_item_seconds
    writer = _BackgroundWriter(ctx.dest)
    try:
        with Watch(limit, _on_overdue(items, limit, on_worker), deadman=on_worker) as watch:
            t0 = watch.begin(0)
            for i, (ref, fetched) in enumerate(_read_ahead(ctx, items)):
                entry, blobs, records = handle_item(ctx, ref, fetched)
                took = watch.end(t0)
                if took is not None:
                    entry, blobs, records = _failed(ref, overtime(limit, took)), [], {}
                idx = out.add(ref, entry, records)
                for b in blobs:
                    pending[b.key] = b.data
                    owner[b.key] = idx
                    pending_bytes += len(b.data)
                if pending_bytes >= FLUSH_BYTES or len(pending) >= FLUSH_OBJECTS:
                    out.fail(writer.submit(pending, owner))
                    pending, owner, pending_bytes = {}, {}, 0
                t0 = watch.begin(i + 1)  # the next item's reads are its own time
        out.fail(writer.submit(pending, owner))
        out.fail(writer.wait())
    finally:
        writer.close()
    # the commit: written only after every output of the partition is stored
    return out.commit(ctx.dest, part.pid, ctx.plan_token)


def _on_overdue(items: list[Item], limit: float, on_worker: bool) -> OnOverdue:
    def overdue(i: int, took: float) -> None:
        name = "/".join((items[i][0].dataset, items[i][0].name)) if i < len(items) else "?"
        if on_worker:
            log.error("item %s has run for %.0f s, over limits.max_item_seconds = %g s: ending "
                      "this worker process; its partition is re-run item by item in child "
                      "processes, where the item is stopped at the limit", name, took, limit)
            os._exit(WATCHDOG_EXIT)
        log.warning("item %s has run for %.0f s, over limits.max_item_seconds = %g s; in this "
                    "process it cannot be stopped: it fails when it ends (Dask workers stop it "
                    "at the limit: interrupt and rerun with --workers N, or without --workers - "
                    "an unfinished job resumes on a LocalCluster)", name, took, limit)
    return overdue


# -- the safety net for native crashes --------------------------------------------------------

def process_partition_isolated(ctx: ExportContext, part: PlanSlice) -> dict[str, int]:
    """Re-run a partition whose worker died: its items are exported one by one in a child
    process (`python -m jobs.tasks`); an item during which the child dies fails with
    `WORKER_DIED`, one that runs over `limits.max_item_seconds` is stopped (the child killed)
    and fails with `overtime`, and a new child goes on with the next item. One part is
    committed."""
    items = read_slice(ctx.dest, part)
    out = _PartLines(_record_formats(ctx))
    limit = ctx.limits.max_item_seconds
    i = 0
    while i < len(items):
        results, stopped = _run_child(ctx, items[i:], limit)
        for ref, entry, records in results:
            out.add(ref, entry, records)
        i += len(results)
        if i < len(items):  # the child died while exporting items[i] (_run_child checked)
            ref = items[i][0]
            why = overtime(limit) if stopped else WORKER_DIED
            log.warning("item %s/%s: %s", ref.dataset, ref.name, why)
            out.add(ref, _failed(ref, why), {})
            i += 1
    return out.commit(ctx.dest, part.pid, ctx.plan_token)


_EOF = object()


def _read_messages(stream: Any, into: queue.SimpleQueue[Any]) -> None:
    """The child's messages, read on a thread so that the parent can wait with a timeout."""
    try:
        while True:
            into.put(pickle.load(stream))
    except EOFError:
        into.put(_EOF)
    except BaseException as e:  # a truncated message: the child died mid-write
        into.put(e)


def _run_child(ctx: ExportContext, items: list[Item], limit: float
               ) -> tuple[list[tuple[ItemRef, ManifestEntry, Records]], bool]:
    """Run a child on `items` until it ends, dies, or spends over `limit` seconds reading and
    rendering one item (it is then killed, never while it writes): the results of the items
    it finished, and whether it was killed; when fewer than `items`, the child died (or was
    killed) while exporting the next one."""
    proc = subprocess.Popen([sys.executable, "-m", "jobs.tasks"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    messages: queue.SimpleQueue[Any] = queue.SimpleQueue()
    reader = threading.Thread(target=_read_messages, args=(proc.stdout, messages),
                              name="isolated-reader", daemon=True)
    reader.start()
    try:
        proc.stdin.write(pickle.dumps((ctx, items), protocol=pickle.HIGHEST_PROTOCOL))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    started, rendered, results, stopped = 0, 0, [], False
    try:
        while True:
            try:  # an item's time runs from "start" to "rendered" (start-up and writes left out)
                msg = messages.get(timeout=limit if limit and started > rendered else None)
            except queue.Empty:
                stopped = True
                break
            if msg is _EOF or isinstance(msg, BaseException):
                break
            if msg == "start":
                started += 1
            elif msg == "rendered":
                rendered += 1
            elif msg[0] == "fault":  # ("fault", reason): the store failed, not the item
                raise StorageFault(msg[1])
            else:
                results.append((items[len(results)][0], *msg))
    except BaseException:
        proc.kill()
        raise
    finally:
        if stopped:
            proc.kill()
        rc = proc.wait()
        reader.join()
        proc.stdout.close()
    if rc == 0 and len(results) != len(items):
        raise RuntimeError(f"Expected the export child to finish {len(items)} items. Got "
                           f"{len(results)} instead.")
    if rc != 0 and started == len(results):
        raise RuntimeError(f"Expected the export child to run. Got exit code {rc} instead.")
    return results, stopped


def _child_main() -> None:
    """The child side: export items one by one, writing each item's outputs before its line."""
    ctx, items = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the result stream
    for ref, prev in items:
        pickle.dump("start", out)
        out.flush()
        try:
            fetched = _start(ctx, ref, prev, False, lambda fn, *args: fn(*args))
            entry, blobs, records = handle_item(ctx, ref, fetched)
            pickle.dump("rendered", out)  # its time stops: writes are the store's
            out.flush()
            if blobs:
                failed = write_batch(ctx.dest, {b.key: b.data for b in blobs},
                                     {b.key: 0 for b in blobs})
                if failed:
                    entry, records = _failed(ref, failed[0]), {}
        except (StorageFault, OSError) as e:
            pickle.dump(("fault", reason(e)), out)
            out.flush()
            return
        pickle.dump((entry, records), out)
        out.flush()


if __name__ == "__main__":
    _child_main()
