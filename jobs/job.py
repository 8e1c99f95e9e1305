"""One export job on the driver: plan -> run (bounded, retries) -> finalize barrier.

    plan (jobs/plan.py) -> run partitions (jobs/run.py) -> finalize (jobs/finalize.py)

The items arrive as a stream (`refs()`, sorted by (dataset, name)) and are written to plan
shards under `OUTPUT/_manifest/plan/`; partitions are byte ranges of those shards, so the
driver's memory does not depend on the number of items.

Finalize runs only when every partition committed; `manifest.json` is the last object written.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from maskcore import __version__
from maskcore.manifest import Summary

from .clashes import detect_clashes
from .finalize import finalize_export
from .listing import ItemRef
from .manifest_store import PlanSlice
from .plan import auto_partition_size, prepare_plan, write_plan
from .run import run_partitions
from .secrets import redact
from .storage import Root
from .tasks import ExportContext

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
    refs: Callable[[], Iterator[ItemRef]],
    count: int,
    classes: Any,
    spec: Any,
    reader: str,
    client: Any | None,
    progress: Callable[[int], None] | None = None,
    incremental: bool = False,
) -> RunResult:
    """Plan `count` items streamed from `refs()` (sorted by (dataset, name)), run the partitions
    not committed yet, then finalize. Driver memory does not depend on the number of items."""
    started = time.time()
    options = {name: spec.options[name] for name in spec.formats}
    size = spec.partition_size or auto_partition_size(count)
    # output clashes and bad names fail their items at plan time (jobs/clashes.py)
    with detect_clashes(refs(), formats=spec.formats, options=options) as clashes:
        plan = write_plan(dest, clashes.annotate(refs()), partition_size=size,
                          incremental=incremental,
                          settings=f"{spec.config_hash}|incremental={incremental}")
    try:
        done = prepare_plan(dest, plan)
    finally:
        plan.close()
    n_parts, count, removed = plan.n_parts, plan.count, plan.removed_keys
    ctx = ExportContext(source, dest, classes, spec.formats, options, spec.limits, reader,
                        spec.settings_hash, incremental, plan.token)
    if progress and done:
        progress(sum(plan.items_in(p) for p in done))

    def on_done(part: PlanSlice) -> None:
        if progress:
            progress(plan.items_in(part.pid))

    todo = (plan.slice(pid) for pid in range(n_parts) if pid not in done)
    run_partitions(todo, ctx=ctx, client=client, max_in_flight=spec.max_in_flight,
                   on_done=on_done)
    ended = time.time()
    meta = {
        "software": {"name": "maskjob", "version": __version__,
                     "python": sys.version.split()[0]},
        "input": {**redact({"url": source.url, "storage_options": source.storage_options}),
                  "format": reader},
        "output": {"url": redact(dest.url)},
        "formats": list(spec.formats),
        "classes": [{"index": i, "name": c.name, "color": list(c.color)}
                    for i, c in enumerate(classes.classes, start=1)],
        "config": redact(spec.raw),
        "config_hash": spec.config_hash,
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "ended": datetime.fromtimestamp(ended, UTC).isoformat(),
        "seconds": round(ended - started, 3),
        "items_per_second": round(count / max(ended - started, 1e-9), 2),
        "partitions": n_parts,
        "partitions_resumed": len(done),
        "incremental": incremental,
        "outputs_removed": removed,
        "host": os.uname().nodename,
    }
    summary = finalize_export(dest=dest, n_parts=n_parts, plan_token=plan.token,
                              formats=spec.formats, options=options, classes=classes, meta=meta)
    return RunResult(summary, n_parts, len(done), ended - started)
