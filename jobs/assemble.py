"""Finishing steps that need every item, run once by `finalize.finalize` on the driver, after the
merged `manifest.jsonl` and before `manifest.json` (which stays the last object written):

- clearml: `clearml/frames.jsonl`, the per-item frames of the exported items in manifest order;
- zarr: the intermediate group nodes (datasets, sub-folders), then the root `zarr.json`
  consolidating the whole store (unless `zarr.consolidated: false`);
- `preview.html` (jobs/preview.py) from a sample of items.

One streaming pass over `manifest.jsonl`; the small per-item objects it needs (frames, item
group documents) are fetched in batches with one concurrent call each, and written out as they
come, so the driver holds one batch at a time, never pixels and never the whole list.
Items are taken from the manifest, not from a listing of the output: stale objects of items
that failed or were removed are never picked up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import IO, Any

from maskcore.formats import clearml, zarr_masks
from maskcore.manifest import Summary

from .preview import Sampler, write_preview
from .storage import Root

log = logging.getLogger("maskjob")

MANIFEST_LINES = "manifest.jsonl"
BATCH = 256
SHOWN = ("ok", "unchanged")
TMP = ".consolidating"  # the consolidated root is written aside, then moved over the plain one


def _entries(dest: Root) -> Iterator[dict[str, Any]]:
    fs, _ = dest.fs_path
    with fs.open(dest.full(MANIFEST_LINES), "rb") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _fetch(dest: Root, keys: list[str], missing_ok: bool = False) -> dict[str, bytes]:
    """key -> bytes for a batch of keys, one concurrent call (s3fs batches the GETs); missing
    keys are left out when `missing_ok`, else FileNotFoundError."""
    if not keys:
        return {}
    fs, _ = dest.fs_path
    full = {dest.full(k): k for k in keys}
    got = fs.cat(list(full), on_error="omit" if missing_ok else "raise")
    return {full[p]: data for p, data in got.items()}


class _Frames:
    """clearml/frames.jsonl, written as batches of per-item frames arrive."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.keys: list[str] = []

    def take(self, entry: Mapping[str, Any]) -> None:
        prefix = f"{clearml.NAME}/{clearml.FRAMES_DIR}/"
        self.keys += [o["key"] for o in entry["outputs"] if o["key"].startswith(prefix)]

    def flush(self, dest: Root) -> None:
        got = _fetch(dest, self.keys)
        for k in self.keys:
            self.out.write(got[k].rstrip(b"\n") + b"\n")
        self.keys = []

    def close(self) -> None:
        """frames.jsonl is closed with the other outputs of the pass."""


class _ZarrStore:
    """Intermediate groups, and the consolidated root streamed to `out` (when given).

    Every group is emitted once (an item group may also be the parent of another item's
    group: 'a/b' of 'b.jpg' and of 'b/c.jpg'); a parent that already exists is read, never
    overwritten, and a missing one is made empty."""

    def __init__(self, dest: Root, out: IO[bytes] | None) -> None:
        self.out = out
        self.nodes: list[tuple[str, bool]] = []  # (group path, is an item group)
        self.made: set[str] = set()
        self.first = True
        self.tail = b""
        if out is not None:
            root_doc = json.loads(dest.read(_zkey("")))
            head, self.tail = zarr_masks.consolidated_frame(root_doc)
            out.write(head)

    def take(self, entry: Mapping[str, Any]) -> None:
        for o in entry["outputs"]:
            group = zarr_masks.item_group_of(o["key"])
            if group is None:
                continue
            for path, is_item in [(p, False) for p in zarr_masks.ancestors(group)] + \
                    [(group, True)]:
                if path not in self.made:
                    self.made.add(path)
                    self.nodes.append((path, is_item))

    def flush(self, dest: Root) -> None:
        wanted = [p for p, is_item in self.nodes if self.out is not None or not is_item]
        got = _fetch(dest, [_zkey(p) for p in wanted], missing_ok=True)
        new = {_zkey(p): zarr_masks.empty_group() for p, is_item in self.nodes
               if not is_item and _zkey(p) not in got}
        dest.write_many(new)
        for p, is_item in self.nodes:
            if self.out is None:
                continue
            doc = got.get(_zkey(p))
            if doc is None and is_item:
                log.warning("zarr: %s/zarr.json is missing; left out of the consolidated "
                            "metadata", p)
                continue
            self.out.write(zarr_masks.consolidated_entries(p, doc, first=self.first))
            self.first = False
        self.nodes = []

    def close(self) -> None:
        if self.out is not None:
            self.out.write(self.tail)


def _zkey(group: str) -> str:
    """The key of a group's zarr.json ('' is the root)."""
    return "/".join(p for p in (zarr_masks.NAME, group, zarr_masks.META_FILE) if p)


def _zarr_options(meta: Mapping[str, Any]) -> zarr_masks.ZarrOptions:
    raw = (meta.get("config") or {}).get(zarr_masks.NAME) or {}
    return zarr_masks.ZarrOptions.from_mapping(raw, prefix=zarr_masks.NAME, defaults={})


def assemble(dest: Root, meta: Mapping[str, Any], summary: Summary) -> None:
    """Run the finishing steps of the formats in `meta['formats']`, then the preview."""
    formats = list(meta.get("formats", []))
    totals = summary.to_dict()
    sampler = Sampler(total=totals["ok"] + totals["unchanged"])
    consolidate = zarr_masks.NAME in formats and _zarr_options(meta).consolidated
    fs, _ = dest.fs_path
    with ExitStack() as stack:  # the folders exist: finalize wrote the formats' sidecars
        steps: list[Any] = []
        if clearml.NAME in formats:
            out = stack.enter_context(fs.open(dest.full(
                f"{clearml.NAME}/{clearml.FRAMES_FILE}"), "wb"))
            steps.append(_Frames(out))
        if zarr_masks.NAME in formats:
            root_out = stack.enter_context(fs.open(dest.full(_zkey("") + TMP), "wb")) \
                if consolidate else None
            steps.append(_ZarrStore(dest, root_out))
        pending = 0
        for entry in _entries(dest):
            sampler.offer(entry)
            if entry.get("status") not in SHOWN:
                continue
            for step in steps:
                step.take(entry)
            pending += 1
            if pending >= BATCH:
                for step in steps:
                    step.flush(dest)
                pending = 0
        for step in steps:
            step.flush(dest)
            step.close()
    if consolidate:
        # the consolidated root replaces the plain one in one step (rename, or copy on S3)
        fs.mv(dest.full(_zkey("") + TMP), dest.full(_zkey("")))
    write_preview(dest, meta, totals, sampler.picked)
