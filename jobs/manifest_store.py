"""The manifest layout under OUTPUT, owned here and nowhere else.

    OUTPUT/_manifest/plan.json          the plan's fingerprint and partition count
    OUTPUT/_manifest/part-NNNNN.jsonl   one line per item, written by the partition that made it
                                        (its existence is the partition's commit)
    OUTPUT/_manifest/baseline.jsonl     the previous completed run's lines (--incremental)
    OUTPUT/manifest.jsonl               all parts merged, in partition order
    OUTPUT/manifest.json                the summary, written LAST (the export completed)

Functions here read and write those objects through a `Root`; `ManifestEntry.from_line`
(maskcore.manifest) is the one line parser.
"""

from __future__ import annotations

from collections.abc import Iterator

from maskcore.manifest import ManifestEntry

from .storage import Root

MANIFEST_DIR = "_manifest"
PLAN_KEY = f"{MANIFEST_DIR}/plan.json"
BASELINE_KEY = f"{MANIFEST_DIR}/baseline.jsonl"
MANIFEST_LINES = "manifest.jsonl"
MANIFEST_SUMMARY = "manifest.json"


def part_key(pid: int) -> str:
    return f"{MANIFEST_DIR}/part-{pid:05d}.jsonl"


def committed_parts(dest: Root) -> set[int]:
    """Partition ids whose manifest part exists (one listing of `_manifest/`)."""
    done = set()
    for key in dest.list_files(MANIFEST_DIR):
        name = key.rsplit("/", 1)[-1]
        if name.startswith("part-") and name.endswith(".jsonl"):
            try:
                done.add(int(name[5:-6]))
            except ValueError:
                continue
    return done


def iter_parts(dest: Root, n_parts: int, batch: int = 64) -> Iterator[bytes]:
    """The committed manifest parts in order, fetched `batch` at a time concurrently."""
    for start in range(0, n_parts, batch):
        keys = [part_key(p) for p in range(start, min(n_parts, start + batch))]
        got = dest.read_many(keys)
        for k in keys:
            yield got[k]


def iter_entries(dest: Root, n_parts: int) -> Iterator[ManifestEntry]:
    """Every manifest line of the run, streamed from the committed parts."""
    for data in iter_parts(dest, n_parts):
        for line in data.decode().splitlines():
            if line.strip():
                yield ManifestEntry.from_line(line)
