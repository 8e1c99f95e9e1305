"""Plan partitions, run them on Dask with a bounded number in flight, then finalize.

    plan -> submit (bounded, retries) -> finalize barrier

- Plan: items (sorted keys) cut into partitions of `partition_size`; `_manifest/plan.json`
  records the plan's fingerprint (keys, object tags, settings). A rerun of an unfinished run
  with the same plan skips every partition whose manifest part exists (one listing of
  `_manifest/`, no HEAD per output); a different plan (input or settings changed) or a finished
  run (manifest.json present) discards the old parts first.
- Submit: futures with explicit keys, at most `max_in_flight` at once (default: twice the
  cluster's threads), `retries=2` for exceptions; a killed worker is rescheduled by Dask.
  `workers=0` runs the partitions in this process (debugging, unit tests).
- Finalize (only when every partition committed): dataset-level files of each format, the
  merged `manifest.jsonl` (parts streamed in order), then `manifest.json` LAST - its presence
  means the export completed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from maskcore import __version__
from maskcore.formats import FORMATS
from maskcore.manifest import ManifestEntry, Summary, summarize

from .assemble import assemble
from .listing import ItemRef
from .secrets import redact
from .storage import Root
from .tasks import MANIFEST_DIR, PartitionJob, part_key, process_partition

log = logging.getLogger("maskjob")

PLAN_KEY = f"{MANIFEST_DIR}/plan.json"
BASELINE_KEY = f"{MANIFEST_DIR}/baseline.jsonl"
MANIFEST_LINES = "manifest.jsonl"
MANIFEST_SUMMARY = "manifest.json"


@dataclass
class RunResult:
    summary: Summary
    partitions: int
    skipped: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def chunk(items: list[ItemRef], size: int) -> list[tuple[ItemRef, ...]]:
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


def plan_fingerprint(items: list[ItemRef], partition_size: int, config_hash: str) -> str:
    h = hashlib.sha256()
    h.update(f"{partition_size}|{config_hash}|{__version__}\n".encode())
    for r in items:  # the tags: a changed object is a new plan, never a resumed one
        h.update(f"{r.dataset}\x00{r.name}\x00{r.ann_key}\x00{r.image_key}\x00{r.ann_tag}"
                 f"\x00{r.image_tag}\n".encode())
    return "sha256:" + h.hexdigest()


def committed_parts(dest: Root) -> set[int]:
    done = set()
    for key in dest.list_files(MANIFEST_DIR):
        name = key.rsplit("/", 1)[-1]
        if name.startswith("part-") and name.endswith(".jsonl"):
            try:
                done.add(int(name[5:-6]))
            except ValueError:
                continue
    return done


def prepare_plan(dest: Root, fingerprint: str, n_parts: int) -> set[int]:
    """Committed partitions that belong to this plan (stale parts are removed)."""
    try:
        previous = json.loads(dest.read(PLAN_KEY))
    except (FileNotFoundError, ValueError):
        previous = None
    done = committed_parts(dest)
    completed = dest.exists(MANIFEST_SUMMARY)  # a finished run is never resumed, only redone
    if previous is None or previous.get("fingerprint") != fingerprint or completed:
        if done:
            log.info("input or settings changed since the last run: discarding %d old parts",
                     len(done))
            dest.delete([part_key(p) for p in sorted(done)])
        for stale in (MANIFEST_SUMMARY, MANIFEST_LINES):
            if dest.exists(stale):
                dest.delete([stale])
        dest.write(PLAN_KEY, json.dumps({"fingerprint": fingerprint, "partitions": n_parts})
                   .encode())
        return set()
    return {p for p in done if p < n_parts}


def load_baseline(dest: Root) -> dict[tuple[str, str], str]:
    """The previous completed run's manifest lines by (dataset, item), for --incremental.

    A completed run (manifest.json present) is copied to `_manifest/baseline.jsonl` first, so
    an incremental run that crashes and is rerun still compares against the same baseline."""
    if dest.exists(MANIFEST_SUMMARY) and dest.exists(MANIFEST_LINES):
        dest.write(BASELINE_KEY, dest.read(MANIFEST_LINES))
    try:
        data = dest.read(BASELINE_KEY).decode()
    except FileNotFoundError:
        return {}
    out = {}
    for line in data.splitlines():
        if line.strip():
            e = json.loads(line)
            out[(e["dataset"], e["item"])] = line
    return out


def removed_outputs(baseline: dict[tuple[str, str], str], refs: list[ItemRef]) -> list[str]:
    """Output keys of items that were in the baseline and are gone from the input."""
    present = {(r.dataset, r.name) for r in refs}
    keys = []
    for k, line in baseline.items():
        if k not in present:
            keys.extend(o["key"] for o in json.loads(line).get("outputs", []))
    return keys


def run_partitions(jobs: list[PartitionJob], *, client: Any | None, max_in_flight: int,
                   on_done: Callable[[dict[str, int]], None]) -> None:
    if client is None:
        for j in jobs:
            on_done(process_partition(j))
        return
    from distributed import as_completed

    if max_in_flight <= 0:
        threads = sum(client.nthreads().values()) or 1
        max_in_flight = 2 * threads
    token = hashlib.sha1(f"{jobs[0].dest.url}{time.time_ns()}".encode()).hexdigest()[:8] \
        if jobs else ""
    queue = iter(jobs)

    def submit(j: PartitionJob) -> Any:
        return client.submit(process_partition, j, key=f"maskjob-part-{j.pid:05d}-{token}",
                             retries=2, pure=False)

    initial = [submit(j) for _, j in zip(range(max_in_flight), queue, strict=False)]
    ac = as_completed(initial)
    for fut in ac:
        counts = fut.result()
        fut.release()
        on_done(counts)
        nxt = next(queue, None)
        if nxt is not None:
            ac.add(submit(nxt))


def _parts(dest: Root, n_parts: int, batch: int = 64) -> Iterator[bytes]:
    """The committed manifest parts in order, fetched `batch` at a time concurrently."""
    for start in range(0, n_parts, batch):
        keys = [part_key(p) for p in range(start, min(n_parts, start + batch))]
        got = dest.read_many(keys)
        for k in keys:
            yield got[k]


def _entries(dest: Root, n_parts: int) -> Iterator[ManifestEntry]:
    """Every manifest line of the run, streamed from the committed parts."""
    for data in _parts(dest, n_parts):
        for line in data.decode().splitlines():
            if line.strip():
                yield ManifestEntry.from_line(line)


def _open_output(dest: Root, key: str) -> Any:
    """A binary file to stream one large output object into (an archive)."""
    path = dest.full(key)
    if dest.is_local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return dest.fs.open(path, "wb")


def finalize(dest: Root, n_parts: int, dataset_blobs: Iterable[Any], meta: dict[str, Any]
             ) -> Summary:
    """Sidecars, merged manifest lines, then the summary last."""
    dest.write_many({b.key: b.data for b in dataset_blobs})
    fs, _ = dest.fs_path
    summary = Summary()
    with fs.open(dest.full(MANIFEST_LINES), "wb") as out:
        for data in _parts(dest, n_parts):
            out.write(data)
            for line in data.decode().splitlines():
                if line.strip():
                    summary.add(ManifestEntry.from_line(line))
    assemble(dest, meta, summary)  # frames.jsonl, zarr groups + consolidation, preview.html
    body = {**meta, "summary": summary.to_dict()}
    dest.write(MANIFEST_SUMMARY, json.dumps(body, indent=2, ensure_ascii=False).encode())
    return summary


def export(
    *,
    source: Root,
    dest: Root,
    refs: list[ItemRef],
    classes: Any,
    spec: Any,
    reader: str,
    client: Any | None,
    progress: Callable[[int], None] | None = None,
    incremental: bool = False,
) -> RunResult:
    started = time.time()
    options = {name: spec.options[name] for name in spec.formats}
    removed: list[str] = []
    if incremental:
        baseline = load_baseline(dest)
        removed = removed_outputs(baseline, refs)
        refs = [dataclasses.replace(r, previous=baseline.get((r.dataset, r.name)))
                for r in refs]
    parts = chunk(refs, spec.partition_size)
    fp = plan_fingerprint(refs, spec.partition_size,
                          f"{spec.config_hash}|incremental={incremental}")
    done = prepare_plan(dest, fp, len(parts))
    jobs = [PartitionJob(pid, items, source, dest, classes, spec.formats, options, spec.limits,
                         reader, spec.settings_hash, incremental)
            for pid, items in enumerate(parts) if pid not in done]
    if progress and done:
        progress(sum(len(parts[p]) for p in done))

    def on_done(counts: dict[str, int]) -> None:
        if progress:
            progress(counts["items"])

    run_partitions(jobs, client=client, max_in_flight=spec.max_in_flight, on_done=on_done)
    if removed:
        log.info("removing %d outputs of %d items deleted from the input", len(removed),
                 len({k.rsplit("/", 1)[0] for k in removed}))
        existing = [k for k in removed if dest.exists(k)]
        dest.delete(existing)
    blobs = [b for f in spec.formats for b in FORMATS[f].dataset_files(classes, options[f])]
    for f in spec.formats:  # writers whose sidecars list the exported items (cvat)
        hook = getattr(FORMATS[f], "finalize_files", None)
        if hook is not None:
            blobs += hook(classes, options[f], _entries(dest, len(parts)), dest.read,
                          lambda key: _open_output(dest, key))
    ended = time.time()
    meta = {
        "software": {"name": "maskjob", "version": __version__,
                     "python": sys.version.split()[0]},
        "input": redact({"url": source.url, "storage_options": source.storage_options}),
        "output": {"url": redact(dest.url)},
        "formats": list(spec.formats),
        "classes": [{"index": i, "name": c.name, "color": list(c.color)}
                    for i, c in enumerate(classes.classes, start=1)],
        "config": redact(spec.raw),
        "config_hash": spec.config_hash,
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "ended": datetime.fromtimestamp(ended, UTC).isoformat(),
        "seconds": round(ended - started, 3),
        "items_per_second": round(len(refs) / max(ended - started, 1e-9), 2),
        "partitions": len(parts),
        "partitions_resumed": len(done),
        "incremental": incremental,
        "outputs_removed": len(removed),
        "host": os.uname().nodename,
    }
    summary = finalize(dest, len(parts), blobs, meta)
    return RunResult(summary, len(parts), len(done), ended - started)


def read_summary_lines(dest: Root) -> Summary:
    return summarize(dest.read(MANIFEST_LINES).decode().splitlines())
