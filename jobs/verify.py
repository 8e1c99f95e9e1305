"""`maskjob verify OUTPUT`: re-check every output object listed in the manifest.

For each `outputs[]` entry of `manifest.jsonl`: the object exists, has the recorded size and
the recorded checksum. Prints each problem with the object's key; exit 1 if any, else 0.
A missing `manifest.json` (export not completed) is a problem too.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from maskcore.manifest import ManifestEntry, checksum

from .manifest_store import MANIFEST_LINES, MANIFEST_SUMMARY
from .storage import Root

log = logging.getLogger("maskjob")


def _check(dest: Root, out: dict) -> str | None:
    key = out["key"]
    try:
        data = dest.read(key)
    except FileNotFoundError:
        return f"missing: {key}"
    if len(data) != out["size"]:
        return f"size differs: {key} ({len(data)} bytes, manifest says {out['size']})"
    if checksum(data) != out["checksum"]:
        return f"checksum differs: {key}"
    return None


def verify(dest: Root, threads: int = 16) -> int:
    problems: list[str] = []
    if not dest.exists(MANIFEST_SUMMARY):
        problems.append(f"missing: {MANIFEST_SUMMARY} (the export did not complete)")
    try:
        lines = dest.read(MANIFEST_LINES).decode().splitlines()
    except FileNotFoundError:
        log.error("missing: %s", MANIFEST_LINES)
        return 1
    outputs = [o for line in lines if line.strip()
               for o in ManifestEntry.from_line(line).outputs]
    with ThreadPoolExecutor(threads) as pool:
        for p in pool.map(lambda o: _check(dest, o), outputs):
            if p:
                problems.append(p)
    for p in problems:
        log.error("%s", p)
    log.info("verified %d objects: %d problems", len(outputs), len(problems))
    return 1 if problems else 0
