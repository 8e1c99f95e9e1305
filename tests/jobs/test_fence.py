"""The fence (jobs/fence.py): a task of a run that a newer run superseded stops writing - at its
start, or at its first write call after the newer run removed its marker, checked at most once
per interval - while the newer driver holds back the partitions that task may still hold.
Real local stores throughout; time is a fake clock where the throttle is measured."""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass

import pytest

from jobs import run as run_mod
from jobs.fence import Fence, FencedRoot, HoldBack, Superseded
from jobs.manifest_store import (
    ATTEMPTS_DIR,
    RUN_KEY,
    PlanSlice,
    adopt_run,
    attempt_key,
    attempt_of,
    current_run,
    start_attempt,
)
from jobs.storage import Root


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class CountingRoot(Root):
    """A local Root that counts its reads (the GETs a fence costs)."""

    reads: list = None  # type: ignore[assignment]

    def read(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.reads.append(key)
        return super().read(key, max_bytes=max_bytes)


@pytest.fixture
def dest(tmp_path) -> CountingRoot:
    (tmp_path / "out").mkdir()
    return CountingRoot(str(tmp_path / "out"), reads=[])


def started(dest: Root, pid: int, run: str, clock: Clock | None = None) -> Fence:
    """A task of `run` on partition `pid`, as jobs/run.py starts it: marker, then start()."""
    fence = Fence(dest, pid, run, clock=clock or Clock())
    start_attempt(dest, pid, run)
    fence.start()
    return fence


def test_adoption_writes_the_run_key_then_claims_every_marker_of_other_runs(dest):
    for pid, run in ((0, "aaaa"), (7, "aaaa"), (12, "cccc")):
        start_attempt(dest, pid, run)
    dest.write(f"{ATTEMPTS_DIR}/part-junk", b"x")  # not a marker: removed, not returned
    assert adopt_run(dest, "bbbb") == {0, 7, 12}
    assert current_run(dest) == "bbbb"
    assert list(dest.list_files(ATTEMPTS_DIR)) == []
    assert adopt_run(dest, "dddd") == set()  # nothing started since
    assert dest.read(RUN_KEY) == b"dddd"


def test_a_task_that_starts_after_a_newer_run_adopted_stops_before_writing(dest):
    adopt_run(dest, "old0")
    adopt_run(dest, "new0")  # the old driver died; the new one adopted first
    fence = Fence(dest, 3, "old0", clock=Clock())
    start_attempt(dest, 3, "old0")  # its marker lands after the new driver's listing...
    with pytest.raises(Superseded, match="partition 3 of run old0: superseded by run new0"):
        fence.start()  # ...so it finds the new run key
    out = FencedRoot.around(dest, fence)
    with pytest.raises(Superseded):
        out.write("seg/a.png", b"late")
    assert not (dest.fs.exists(dest.full("seg/a.png")))
    assert fence.probe()


def test_a_running_task_stops_at_its_first_write_call_after_the_check_interval(dest):
    clock = Clock()
    adopt_run(dest, "old0")
    fence = started(dest, 0, "old0", clock)
    out = FencedRoot.around(dest, fence)
    out.write_many({"seg/a.png": b"1"})  # within the interval of start(): no read
    assert adopt_run(dest, "new0") == {0}  # the rerun claims the partition
    clock.t += 0.5
    out.write_many({"seg/b.png": b"2"})  # still within CHECK_S of a check that passed
    clock.t += 0.6
    with pytest.raises(Superseded, match="superseded by run new0"):
        out.write_many({"seg/c.png": b"3"})
    with pytest.raises(Superseded):  # sticky, without reading again
        out.write("_manifest/part-00000-0123456789abcdef.jsonl", b"{}")
    assert not dest.fs.exists(dest.full("seg/c.png"))
    assert attempt_of(dest, 0) is None  # the new run's claim stands: nothing put back


def test_the_store_is_read_at_most_once_per_interval_whatever_the_number_of_writes(dest):
    clock = Clock()
    adopt_run(dest, "run0")
    fence = started(dest, 5, "run0", clock)
    dest.reads.clear()
    out = FencedRoot.around(dest, fence)
    for i in range(1000):  # 10 s of writes, one every 10 ms
        out.write(f"seg/{i}.png", b"x")
        clock.t += 0.01
    assert 9 <= len(dest.reads) <= 11, len(dest.reads)
    assert set(dest.reads) == {attempt_key(5)}  # the marker only: the run key stays cold


def test_a_task_of_the_current_run_puts_back_a_marker_an_older_task_overwrote(dest):
    clock = Clock()
    adopt_run(dest, "new0")
    fence = started(dest, 2, "new0", clock)
    start_attempt(dest, 2, "old0")  # a late task of the dead run on its way to stopping
    with pytest.raises(Superseded):
        Fence(dest, 2, "old0", clock=clock).start()
    clock.t += 2
    FencedRoot.around(dest, fence).write("seg/a.png", b"ok")
    assert attempt_of(dest, 2) == "new0"
    assert (dest.fs.cat_file(dest.full("seg/a.png"))) == b"ok"


def test_every_write_method_is_fenced_and_reads_are_not(dest):
    adopt_run(dest, "old0")
    dest.write("seg/keep.png", b"k")
    fence = started(dest, 0, "old0")
    adopt_run(dest, "new0")
    fence.valid_until = float("-inf")
    out = FencedRoot.around(dest, fence)
    calls = [lambda: out.write("seg/x.png", b"x"), lambda: out.write_many({"seg/y": b"y"}),
             lambda: out.move("seg/keep.png", "seg/moved.png"),
             lambda: out.delete(["seg/keep.png"])]
    for call in calls:
        with pytest.raises(Superseded):
            call()
    with pytest.raises(Superseded):
        out.open_write("seg/z.png")
    assert out.read("seg/keep.png") == b"k"
    assert sorted(out.list_files("seg")) == ["seg/keep.png"]


def test_a_fence_sent_to_a_child_process_checks_afresh(dest):
    clock = Clock()
    adopt_run(dest, "old0")
    out = FencedRoot.around(dest, started(dest, 1, "old0", clock))
    adopt_run(dest, "new0")
    child = pickle.loads(pickle.dumps(out))  # what process_partition_isolated's child gets
    with pytest.raises(Superseded):  # within the parent's interval, but checked anew
        child.write("seg/a.png", b"late")
    assert not dest.fs.exists(dest.full("seg/a.png"))


def parts(n: int) -> list[PlanSlice]:
    return [PlanSlice(p, 0, p * 10, p * 10 + 10) for p in range(n)]


def test_held_partitions_go_after_the_others_and_never_before_the_grace_ends():
    clock = Clock()
    gate = HoldBack(parts(6), {1, 4, 9}, grace=10.0, clock=clock)
    got = [gate.next() for _ in range(4)]
    assert [p.pid for p in got] == [0, 2, 3, 5]
    assert gate.next() is None and not gate.finished
    assert gate.wait_s() == 10.0
    clock.t += 9.99
    assert gate.next() is None
    clock.t += 0.01
    assert [gate.next().pid, gate.next().pid] == [1, 4]
    assert gate.next() is None and gate.finished


def test_without_held_partitions_the_order_is_the_plan_and_nothing_waits():
    gate = HoldBack(iter(parts(5)), set(), grace=1e9)
    assert [p.pid for p in gate] == [0, 1, 2, 3, 4]
    assert gate.finished


def test_a_released_held_partition_goes_before_the_rest_of_the_plan():
    clock = Clock()
    gate = HoldBack(parts(4), {0}, grace=1.0, clock=clock)
    assert gate.next().pid == 1
    clock.t += 1
    assert [gate.next().pid for _ in range(3)] == [0, 2, 3]


def test_iterating_waits_for_the_grace_in_real_time():
    t0 = time.monotonic()
    order = [p.pid for p in HoldBack(parts(3), {0}, grace=0.3)]
    assert order == [1, 2, 0]
    assert time.monotonic() - t0 >= 0.3


# -- jobs/run.py: a task's start and end --------------------------------------------------

def _context(dest: Root):
    from jobs.tasks import ExportContext
    from maskcore.model import ClassTable

    return ExportContext(dest, dest, ClassTable([]), ())


@pytest.fixture
def task_env(dest, monkeypatch):
    """_run() on this process with the job context of run `run0` registered."""
    def install(run: str, body):
        monkeypatch.setitem(run_mod._CONTEXTS, run, _context(dest))
        monkeypatch.setattr(run_mod, "process_partition",
                            lambda ctx, part, **_: body(ctx, part))  # (on_worker=True)
    return install


def test_a_failing_task_of_the_current_run_removes_its_marker_for_the_retry(dest, task_env):
    def body(ctx, part):
        assert isinstance(ctx.dest, FencedRoot)
        ctx.dest.write("seg/a.png", b"x")
        raise ConnectionResetError("the store hung up")

    adopt_run(dest, "run0")
    task_env("run0", body)
    with pytest.raises(ConnectionResetError):
        run_mod._run("run0", PlanSlice(4, 0, 0, 0))
    assert attempt_of(dest, 4) is None


def test_a_failing_task_of_a_superseded_run_says_so_and_leaves_the_marker(dest, task_env):
    def body(ctx, part):
        adopt_run(dest, "new0")  # the rerun adopts while this task runs
        start_attempt(dest, part.pid, "new0")  # ...and already started the partition
        raise RuntimeError("Expected the export child to run. Got exit code 1 instead.")

    adopt_run(dest, "old0")
    task_env("old0", body)
    with pytest.raises(Superseded, match="superseded by run new0") as err:
        run_mod._run("old0", PlanSlice(4, 0, 0, 0))
    assert isinstance(err.value.__cause__, RuntimeError)
    assert attempt_of(dest, 4) == "new0"


def test_a_task_started_after_the_rerun_adopted_does_no_work(dest, task_env):
    ran = []
    adopt_run(dest, "old0")
    adopt_run(dest, "new0")
    task_env("old0", lambda ctx, part: ran.append(part))
    with pytest.raises(Superseded):
        run_mod._run("old0", PlanSlice(0, 0, 0, 0))
    assert ran == []


def test_a_task_that_commits_removes_its_marker_so_a_rerun_holds_nothing_back(dest, task_env):
    adopt_run(dest, "run0")
    task_env("run0", lambda ctx, part: {"items": 0})
    assert run_mod._run("run0", PlanSlice(6, 0, 0, 0)) == {"items": 0}
    assert attempt_of(dest, 6) is None
    assert adopt_run(dest, "run1") == set()


def test_an_in_process_rerun_waits_out_the_grace_for_a_partition_another_run_left(
        tmp_path, project, monkeypatch, caplog):
    """`--workers 0` after a dead distributed run: the rerun adopts the output too, and the
    partition whose marker it found runs last, after the grace."""
    from jobs.cli import run
    from tests.conftest import rect

    p = project()
    for n in ("a.png", "b.png", "c.png", "d.png"):
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    start_attempt(Root(str(out)), 0, "dead0")  # the dead run was writing partition 0
    monkeypatch.setattr(run_mod, "GRACE_S", 0.5)
    order: list[int] = []
    real = run_mod.process_partition
    monkeypatch.setattr(run_mod, "process_partition",
                        lambda ctx, part: (order.append(part.pid), real(ctx, part))[1])
    caplog.set_level("INFO", logger="maskjob")
    t0 = time.monotonic()
    assert run(["export", str(p.root), str(out), "--workers", "0",
                "--set", "partition_size=2"]) == 0
    assert time.monotonic() - t0 >= 0.5
    assert order == [1, 0]
    assert "1 partitions had been started by another run" in caplog.text
    assert current_run(Root(str(out))) not in (None, "dead0")
    assert run(["verify", str(out)]) == 0
