"""jobs/scratch.py: a driver's scratch folders (spools, clash runs) outlive a killed driver only
until the next driver starts - real processes killed with SIGKILL; a living owner's folder,
folders without a lock, other names and links are never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs import scratch
from jobs.clashes import detect_clashes
from jobs.config import load
from jobs.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
HOLDER = textwrap.dedent("""
    import sys, time
    from jobs.spool import Spool
    s = Spool(sys.argv[1])
    s.execute("CREATE TABLE t (x)")
    s.insert("INSERT INTO t VALUES (?)", ((i,) for i in range(1000)))
    print(s.dir, flush=True)
    time.sleep(120)
""")

pytestmark = pytest.mark.skipif(scratch.fcntl is None, reason="needs fcntl.flock")


def holder(base: Path) -> tuple[subprocess.Popen, Path]:
    """A real process holding a spool under `base` (its folder, once made)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(base)], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout is not None
    return p, Path(p.stdout.readline().strip())


def kill(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)


def test_a_killed_drivers_spool_is_removed_by_the_next_one(tmp_path):
    p, dead = holder(tmp_path)
    try:
        assert (dead / "spool.db").exists() and (dead / scratch.LOCK).exists()
    finally:
        kill(p)
    assert dead.exists()  # SIGKILL: no clean-up ran
    with Spool(str(tmp_path)) as mine:  # the first scratch folder of this process here
        assert not dead.exists()
        assert Path(mine.dir).exists()
    assert not Path(mine.dir).exists()


def test_a_living_drivers_spool_is_kept(tmp_path):
    p, alive = holder(tmp_path)
    try:
        assert scratch.sweep(str(tmp_path)) == 0
        with Spool(str(tmp_path)):
            assert (alive / "spool.db").exists()
    finally:
        kill(p)
    assert scratch.sweep(str(tmp_path)) == 1 and not alive.exists()


def test_folders_it_cannot_judge_are_left_alone(tmp_path):
    (tmp_path / "maskjob-spool-old").mkdir()  # an older version's: no owner.lock
    (tmp_path / "maskjob-spool-old" / "spool.db").write_bytes(b"x")
    (tmp_path / "other-folder").mkdir()
    (tmp_path / "other-folder" / scratch.LOCK).write_bytes(b"")
    target = tmp_path / "target"
    target.mkdir()
    (target / scratch.LOCK).write_bytes(b"")  # a free lock, behind a link
    (tmp_path / "maskjob-spool-link").symlink_to(target)
    lock_link = tmp_path / "maskjob-clashes-x"
    lock_link.mkdir()
    (lock_link / scratch.LOCK).symlink_to(target / scratch.LOCK)
    assert scratch.sweep(str(tmp_path)) == 0
    for kept in ("maskjob-spool-old/spool.db", "other-folder", "target", "maskjob-spool-link",
                 "maskjob-clashes-x"):
        assert (tmp_path / kept).exists(), kept


def test_own_folders_survive_a_sweep_and_remove_releases_them(tmp_path):
    a = scratch.make("maskjob-spool-", str(tmp_path))
    b = scratch.make("maskjob-clashes-", str(tmp_path))
    assert scratch.sweep(str(tmp_path)) == 0 and Path(a).exists() and Path(b).exists()
    scratch.remove(a)
    scratch.remove(a)  # idempotent
    assert not Path(a).exists() and a not in scratch._locks
    scratch.remove(b)


def test_clash_detection_scratch_is_swept_too(tmp_path):
    p, dead = holder(tmp_path)
    kill(p)
    report = detect_clashes(iter(()), formats=("zarr",), options={"zarr": load().options["zarr"]},
                            workdir=str(tmp_path))
    try:
        assert not dead.exists()
        assert [x.name[:16] for x in tmp_path.iterdir()] == ["maskjob-clashes-"]
    finally:
        report.close()
    assert list(tmp_path.iterdir()) == []


def test_finalize_gives_formats_a_swept_scratch_folder(tmp_path, monkeypatch):
    """The folder a format spools into at finalize (CVAT's subset lists) is one of ours: locked
    while it is used (a sweep keeps it), removed by `drop_scratch`."""
    from jobs.finalize import finalize_io
    from jobs.storage import Root
    from maskcore.manifest import Summary

    monkeypatch.setattr(scratch.tempfile, "tempdir", str(tmp_path))
    io = finalize_io(Root(str(tmp_path / "out")), Summary())
    path = Path(io.scratch())
    assert path.parent == tmp_path and path.name.startswith(scratch.PREFIXES)
    assert (path / scratch.LOCK).exists() and scratch.sweep(str(tmp_path)) == 0
    io.drop_scratch(str(path))
    assert not path.exists()
