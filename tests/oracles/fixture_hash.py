"""Content hash of the inputs the Supervisely goldens were made from (stdlib only).

Shared by the oracle (which records it in tests/golden/supervisely/ORACLE.json) and by
tests/test_supervisely_golden.py (which checks that the fixture has not changed since the
goldens were made). The digest covers every file under FIXTURE_TREES (a tree may also be a
single file): for each file, sorted by its POSIX path relative to the repo root, the line
"<path>\\0<sha256 of bytes>\\n" is fed to one sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FIXTURE_TREES = ("tests/data/sly_project", "tests/data/sly_many_classes", "tests/data/configs")


def fixture_sha256(repo_root: Path, trees: tuple[str, ...] = FIXTURE_TREES) -> str:
    entries = []
    for tree in trees:
        base = repo_root / tree
        for path in [base] if base.is_file() else base.rglob("*"):
            if path.is_file():
                rel = path.relative_to(repo_root).as_posix()
                entries.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
    digest = hashlib.sha256()
    for rel, file_sha in sorted(entries):
        digest.update(f"{rel}\0{file_sha}\n".encode())
    return digest.hexdigest()
