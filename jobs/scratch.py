"""Private scratch folders of a driver (listing spools, plan-time clash runs, finalize's
spooled lists), and the sweep of folders a dead driver left behind.

`make(prefix, directory)` creates `<directory or TMPDIR>/<prefix>XXXXXXXX/` with an
`owner.lock` that this process holds locked (`flock`, exclusive) until `remove(path)` or its
death: the kernel drops the lock however the process ends (SIGKILL, OOM killer, a node's
reboot). The lock file is locked before it gets its name, so a folder whose `owner.lock` anyone
else can lock has no living owner. The first `make` of a process in a directory removes every
such dead folder of ours there (`PREFIXES`, owned by this user): a driver killed while listing
10M items leaves gigabytes of spool, and every rerun would add its own. Folders without an
`owner.lock` (being made, or left by an older version) and folders of other users are never
touched; links are not followed. Where `fcntl.flock` does not exist (Windows) no lock is taken
and nothing is swept.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("maskjob")

PREFIXES = ("maskjob-spool-", "maskjob-clashes-", "maskjob-finalize-")  # every one made here
LOCK = "owner.lock"
_FLAGS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_locks: dict[str, int] = {}  # folder -> the descriptor holding its lock
_swept: set[str] = set()  # directories this process has swept


def make(prefix: str, directory: str | None = None) -> str:
    """A new private folder (mode 0700) under `directory` (default: the temporary folder),
    locked by this process; sweeps dead folders there first, once per process."""
    assert prefix in PREFIXES, prefix
    base = directory or tempfile.gettempdir()
    if base not in _swept:
        _swept.add(base)
        sweep(base)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    if fcntl is not None:
        fresh = os.path.join(path, LOCK + ".new")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(fresh, os.path.join(path, LOCK))
        _locks[path] = fd
    return path


def remove(path: str) -> None:
    """Remove a folder made by `make` and release its lock (idempotent)."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _locks.pop(path, None)
    if fd is not None:
        os.close(fd)


def sweep(base: str) -> int:
    """Remove the scratch folders under `base` whose owner is gone; returns their number."""
    if fcntl is None:
        return 0
    try:
        with os.scandir(base) as it:
            entries = [e for e in it if e.name.startswith(PREFIXES)]
    except OSError:
        return 0
    removed = 0
    for e in entries:
        if e.path in _locks:
            continue  # one of ours
        try:
            if not e.is_dir(follow_symlinks=False) or \
                    e.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(e.path, LOCK), os.O_RDONLY | _FLAGS)
        except OSError:  # no lock file: being made, or not ours to judge
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a living owner
        else:
            shutil.rmtree(e.path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d scratch folders of dead maskjob processes in %s", removed, base)
    return removed
