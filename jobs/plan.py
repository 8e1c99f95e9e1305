"""Plan an export: cut the items into partitions, fingerprint the plan, and decide what a rerun
may keep.

- Partitions: items (sorted by dataset, name) cut into chunks of `partition_size`.
- Fingerprint: keys, object tags and settings; `_manifest/plan.json` records it. A rerun of an
  unfinished run with the same plan keeps every committed partition (one listing of
  `_manifest/`, no HEAD per output); a different plan (input or settings changed) or a finished
  run (manifest.json present) discards the old parts first.
- Incremental runs: the previous completed run's lines (the baseline) by (dataset, item), and
  the outputs of items that are gone from the input.
"""

from __future__ import annotations

import hashlib
import json
import logging

from maskcore import __version__

from .listing import ItemRef
from .manifest_store import (
    BASELINE_KEY,
    MANIFEST_LINES,
    MANIFEST_SUMMARY,
    PLAN_KEY,
    committed_parts,
    part_key,
)
from .storage import Root

log = logging.getLogger(__name__)


def chunk(items: list[ItemRef], size: int) -> list[tuple[ItemRef, ...]]:
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


def plan_fingerprint(items: list[ItemRef], partition_size: int, config_hash: str) -> str:
    h = hashlib.sha256()
    h.update(f"{partition_size}|{config_hash}|{__version__}\n".encode())
    for r in items:  # the tags: a changed object is a new plan, never a resumed one
        h.update(f"{r.dataset}\x00{r.name}\x00{r.ann_key}\x00{r.image_key}\x00{r.ann_tag}"
                 f"\x00{r.image_tag}\n".encode())
    return "sha256:" + h.hexdigest()


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
