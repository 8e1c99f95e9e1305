"""One export job on the driver: plan -> run (bounded, retries) -> finalize barrier.

    plan (jobs/plan.py) -> run partitions (jobs/run.py) -> finalize (jobs/finalize.py)

Finalize runs only when every partition committed; `manifest.json` is the last object written.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from maskcore import __version__
from maskcore.manifest import Summary, summarize

from .finalize import finalize_export
from .listing import ItemRef
from .manifest_store import MANIFEST_LINES
from .plan import chunk, load_baseline, plan_fingerprint, prepare_plan, removed_outputs
from .run import run_partitions
from .storage import Root, redact
from .tasks import PartitionJob

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    summary: Summary
    partitions: int
    skipped: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


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
    ended = time.time()
    meta = {
        "software": {"name": "maskjob", "version": __version__,
                     "python": sys.version.split()[0]},
        "input": {"url": source.url, "storage_options": redact(source.storage_options)},
        "output": {"url": dest.url},
        "formats": list(spec.formats),
        "classes": [{"index": i, "name": c.name, "color": list(c.color)}
                    for i, c in enumerate(classes.classes, start=1)],
        "config": spec.raw,
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
    summary = finalize_export(dest=dest, n_parts=len(parts), formats=spec.formats,
                              options=options, classes=classes, meta=meta)
    return RunResult(summary, len(parts), len(done), ended - started)


def read_summary_lines(dest: Root) -> Summary:
    return summarize(dest.read(MANIFEST_LINES).decode().splitlines())
