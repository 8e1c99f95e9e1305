"""Plan an export: stream the items into plan shards, fingerprint the plan, merge the baseline,
and decide what a rerun may keep.

- Plan shards: the refs (sorted by dataset, name) are streamed once into
  `_manifest/plan/shard-NNNNN.jsonl` (manifest_store), cut into partitions of `partition_size`;
  the driver keeps only counters and 20 bytes per partition (its byte range), never the items.
- Partition size (`partition_size: auto`, the default): `auto_partition_size(count)`:
  small jobs are spread over up to 64 partitions (80 items -> 40 partitions of 2, never 50 + 30);
  from 6,400 items on, 100 items per partition; from 500k items on, at most 5,000 tasks (1M ->
  200 items per partition, 10M -> 2,000: 4-8 s of work at 2-4 ms per item). The scheduler
  spends ~4 ms of CPU per task and the driver ~2 ms (benchmarks/bench_driver.py, a loaded
  machine), i.e. ~250 tasks/s: 5,000 tasks of 4+ s keep 1,000+ cores busy. An explicit number
  always wins.
- Fingerprint: plan size, settings, version and every plan line (keys, object tags, baseline
  line): `_manifest/plan.json` records it. A rerun of an unfinished run with the same plan keeps
  every committed partition (one listing of `_manifest/`, no HEAD per output); a different plan
  or a finished run (manifest.json present) discards the old parts first.
- Token: `_manifest/plan.json` also records the plan's token, fresh for every adopted plan and
  kept by a resume; tasks name their parts with it (manifest_store). Parts of another token
  (a dead driver's task that committed after the plan was replaced) are ignored and deleted.
- Incremental runs: the previous completed run's lines (`_manifest/baseline.jsonl`, sorted by
  (dataset, item) like the plan) are merge-joined with the refs while the shards are written
  (O(1) memory): a matched line rides in the item's plan line (the worker decides "unchanged"),
  an unmatched one is an item removed from the input whose output keys go to a temporary file on
  the driver's disk and are deleted in bulk batches when the new plan is adopted.
- Order of a new plan (a failed run never leaves the next worse off): shards written, old
  parts deleted, removed outputs deleted, then manifest.json and manifest.jsonl, then plan.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import IO, Any

from maskcore import __version__

from .listing import ItemRef
from .manifest_store import (
    MANIFEST_LINES,
    MANIFEST_SUMMARY,
    PLAN_KEY,
    SHARD_BYTES,
    PlanSlice,
    ShardWriter,
    delete_keys,
    encode_ref,
    is_token,
    iter_baseline,
    new_token,
    plan_shards,
    shard_key,
    snapshot_baseline,
    sweep_parts,
)
from .storage import Root

log = logging.getLogger(__name__)

AUTO = 0  # partition_size 0 (config `auto`): chosen from the item count
TARGET_ITEMS = 100
MIN_PARTITIONS = 64
MAX_TASKS = 5_000  # for large jobs (the bound is 100,000 at 10M items)


_KEY_ENCODER = json.JSONEncoder()


def auto_partition_size(count: int) -> int:
    """Items per partition for `count` items (the rule in the module docstring)."""
    spread = -(-count // MIN_PARTITIONS)  # small jobs: up to MIN_PARTITIONS partitions
    return max(1, min(TARGET_ITEMS, spread), -(-count // MAX_TASKS))


@dataclass
class Plan:
    """A written plan: counters and partition byte ranges, never the items."""

    fingerprint: str
    partition_size: int
    count: int
    shards: ShardWriter
    n_shards: int
    baseline_lines: int = 0
    removed_items: int = 0
    removed_keys: int = 0
    _removed: IO[str] | None = field(default=None, repr=False)
    token: str = ""  # set when the plan is adopted (prepare_plan)

    @property
    def n_parts(self) -> int:
        return self.shards.n_parts

    def slice(self, pid: int) -> PlanSlice:
        return self.shards.slice(pid)

    def items_in(self, pid: int) -> int:
        return min(self.partition_size, self.count - pid * self.partition_size)

    def removed_outputs(self) -> Iterator[str]:
        if self._removed is None:
            return
        self._removed.seek(0)
        for line in self._removed:
            yield json.loads(line)

    def close(self) -> None:
        if self._removed is not None:
            self._removed.close()
            self._removed = None


def write_plan(dest: Root, refs: Iterable[ItemRef], *, partition_size: int, settings: str,
               incremental: bool = False, shard_bytes: int = SHARD_BYTES) -> Plan:
    """Stream `refs` into plan shards, merge-joining the baseline when `incremental`; returns
    the Plan (fingerprinted) - nothing is adopted yet. The refs must be sorted by (dataset,
    name) when a baseline is merged (ValueError otherwise); without one, their order is kept."""
    baseline: Iterator[tuple[tuple[str, str], str, list[str]]] = iter(())
    merging = incremental and snapshot_baseline(dest)
    if merging:
        baseline = iter_baseline(dest)
    h = hashlib.sha256(f"{partition_size}|{settings}|{__version__}\n".encode())
    shards = ShardWriter(dest, shard_bytes)
    removed = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - Plan.close()
    stats = {"baseline": 0, "items": 0, "keys": 0}

    def gone(keys: list[str]) -> None:
        stats["items"] += 1
        stats["keys"] += len(keys)
        for k in keys:
            removed.write(_KEY_ENCODER.encode(k) + "\n")

    cur = next(baseline, None)
    last: tuple[str, str] | None = None
    n = 0
    for ref in refs:
        key = (ref.dataset, ref.name)
        if merging and last is not None and key < last:
            removed.close()
            raise ValueError(f"Expected the listing sorted by (dataset, name). Got {key!r} "
                             f"after {last!r} instead.")
        last = key
        while cur is not None and cur[0] < key:
            gone(cur[2])
            cur = next(baseline, None)
        prev = "null"
        if cur is not None and cur[0] == key:
            prev = cur[1]
            stats["baseline"] += 1
            cur = next(baseline, None)
        line = f'{{"r":{encode_ref(ref)},"p":{prev}}}\n'.encode()
        h.update(line)
        shards.add(line)
        n += 1
        if n % partition_size == 0:
            shards.end_partition()
    if n % partition_size:
        shards.end_partition()
    while cur is not None:
        gone(cur[2])
        cur = next(baseline, None)
    n_shards = shards.close()
    return Plan("sha256:" + h.hexdigest(), partition_size, n, shards, n_shards,
                stats["baseline"], stats["items"], stats["keys"], removed)


def _read_plan_json(dest: Root) -> dict[str, Any] | None:
    try:
        previous = json.loads(dest.read(PLAN_KEY))
    except (FileNotFoundError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def prepare_plan(dest: Root, plan: Plan) -> AbstractSet[int]:
    """Adopt `plan` and set its token: the committed partitions that belong to it (a resume:
    the previous token is kept, parts of other tokens are deleted), or - for a new plan, with a
    new token - none, after removing every old part, removed items' outputs and the old
    manifest."""
    previous = _read_plan_json(dest)
    completed = dest.exists(MANIFEST_SUMMARY)  # a finished run is never resumed, only redone
    if previous is not None and previous.get("fingerprint") == plan.fingerprint \
            and is_token(previous.get("token")) and not completed:
        plan.token = previous["token"]
        done, stale = sweep_parts(dest, plan.token, plan.n_parts)
        if stale:
            log.info("ignored and deleted %d parts of another plan", stale)
        return done
    plan.token = new_token()
    _, old = sweep_parts(dest, None, 0)
    if old:
        log.info("input or settings changed since the last run: discarded %d old parts", old)
    if plan.removed_keys:
        log.info("removing %d outputs of %d items deleted from the input", plan.removed_keys,
                 plan.removed_items)
        delete_keys(dest, plan.removed_outputs())
    delete_keys(dest, [shard_key(s) for s in sorted(plan_shards(dest)) if s >= plan.n_shards])
    delete_keys(dest, [MANIFEST_SUMMARY, MANIFEST_LINES])
    dest.write(PLAN_KEY, json.dumps({"fingerprint": plan.fingerprint,
                                     "partitions": plan.n_parts,
                                     "partition_size": plan.partition_size,
                                     "items": plan.count, "shards": plan.n_shards,
                                     "token": plan.token}).encode())
    return set()
