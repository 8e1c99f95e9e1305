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
from maskcore.formats import FORMATS
from maskcore.manifest import Summary, summarize

from .clashes import detect_clashes
from .finalize import finalize, open_output
from .listing import ItemRef
from .manifest_store import MANIFEST_LINES, iter_entries
from .plan import chunk, load_baseline, plan_fingerprint, prepare_plan, removed_outputs
from .run import run_partitions
from .secrets import redact
from .storage import Root
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
    # h/clashes wiring: output clashes and bad names fail their items at plan time
    with detect_clashes(refs, formats=spec.formats, options=options) as clashes:
        refs = list(clashes.annotate(refs))
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
            blobs += hook(classes, options[f], iter_entries(dest, len(parts)), dest.read,
                          lambda key: open_output(dest, key))
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
