"""Finalize an export once every partition committed: dataset-level files of each format, the
merged `manifest.jsonl` (parts streamed in order), the formats' finishing steps and the preview
(jobs/assemble.py), then `manifest.json` LAST - its presence means the export completed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from maskcore.manifest import ManifestEntry, Summary

from .assemble import assemble
from .manifest_store import MANIFEST_LINES, MANIFEST_SUMMARY, iter_parts
from .storage import Root


def open_output(dest: Root, key: str) -> Any:
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
        for data in iter_parts(dest, n_parts):
            out.write(data)
            for line in data.decode().splitlines():
                if line.strip():
                    summary.add(ManifestEntry.from_line(line))
    assemble(dest, meta, summary)  # frames.jsonl, zarr groups + consolidation, preview.html
    body = {**meta, "summary": summary.to_dict()}
    dest.write(MANIFEST_SUMMARY, json.dumps(body, indent=2, ensure_ascii=False).encode())
    return summary
