"""The per-item time limit (`limits.max_item_seconds`; jobs/watchdog.py, jobs/tasks.py): an item
that hangs - sleeping, or in a C call that holds the GIL - fails alone with the limit named,
on real processes: the isolated child is killed at the limit, a worker's watchdog ends its
process, and a run in the driver's own process only warns and fails the item when it ends."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jobs import config
from jobs import tasks as tasks_mod
from jobs.cli import run
from jobs.listing import ItemRef
from jobs.manifest_store import part_key
from jobs.plan import write_plan
from jobs.storage import Root
from jobs.tasks import (
    HANG_ENV,
    HANG_GIL_ENV,
    ExportContext,
    overtime,
    process_partition,
    process_partition_isolated,
)
from jobs.watchdog import Watch
from maskcore.formats import supervisely
from maskcore.limits import Limits
from tests.conftest import rect
from tests.jobs.test_exit_codes import assert_refused

TOKEN = "0123456789abcdef"


def test_the_watchdog_calls_once_for_an_item_over_its_limit_and_never_for_a_quick_one():
    calls: list[tuple[int, float]] = []
    fired = threading.Event()

    def overdue(i: int, took: float) -> None:
        calls.append((i, took))
        fired.set()

    with Watch(0.2, overdue) as watch:
        for i in range(50):  # quick items: never reported
            assert watch.end(watch.begin(i)) is None
        time.sleep(0.5)  # between items nothing runs: nothing to report
        assert calls == []
        t0 = watch.begin(50)
        assert fired.wait(5)
        time.sleep(0.5)  # reported once, however long it goes on
        took = watch.end(t0)
    assert [i for i, _ in calls] == [50] and calls[0][1] > 0.2
    assert took is not None and took > 0.7
    with Watch(0, overdue) as off:  # 0: no limit
        assert off.end(off.begin(0) - 1e6) is None


def _partition(project, tmp_path, names, limit):
    p = project()
    for n in names:
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    dest, source = Root(str(tmp_path / "out")), Root(str(p.root))
    refs = [ItemRef("ds", n, f"ds/ann/{n}.json", f"ds/img/{n}") for n in names]
    plan = write_plan(dest, iter(refs), partition_size=len(names), settings="s")
    spec = config.load(None)
    ctx = ExportContext(source, dest, supervisely.parse_meta(source.read("meta.json")),
                        ("supervisely",), {"supervisely": spec.options["supervisely"]},
                        limits=Limits(max_item_seconds=limit), plan_token=TOKEN)
    return ctx, plan.slice(0)


def _part(ctx):
    return {e["item"]: e for e in map(json.loads, ctx.dest.read(part_key(0, TOKEN))
                                      .splitlines())}


DEADMAN_RACE = textwrap.dedent("""
    import ctypes, sys, time
    sys.path.insert(0, sys.argv[1])
    from jobs.watchdog import Watch
    w = Watch(1.0, lambda i, s: None, deadman=True)
    with w:
        w.end(w.begin(0))
        time.sleep(0.6)  # several ticks see no item running
        w.begin(1)
        ctypes.PyDLL(None).sleep(60)  # takes the GIL at once: the watchdog never runs again
    """)


def test_the_deadman_is_armed_between_items_too():
    """An item that takes the GIL right after a tick that saw no item running: the deadman
    armed while the partition's watch is registered ends the process (it used to hang)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", DEADMAN_RACE, str(Path(__file__).parents[2])],
                          capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 1 and took < 20, (proc.returncode, took)
    assert "Timeout" in proc.stderr and "most recent call first" in proc.stderr


@pytest.mark.timeout(120)
def test_the_isolated_path_stops_hung_items_at_the_limit_and_goes_on(project, tmp_path,
                                                                      monkeypatch):
    """b sleeps forever, c blocks in a C call holding the GIL: each child is killed 1 s into
    its item, the item fails with the limit named, and a new child exports the rest."""
    ctx, part = _partition(project, tmp_path, ["a.png", "b.png", "c.png", "d.png"], 1)
    monkeypatch.setenv(HANG_ENV, "b.png")
    monkeypatch.setenv(HANG_GIL_ENV, "c.png")
    t0 = time.monotonic()
    counts = process_partition_isolated(ctx, part)
    assert time.monotonic() - t0 < 60
    assert (counts["ok"], counts["failed"]) == (2, 2)
    lines = _part(ctx)
    assert list(lines) == ["a.png", "b.png", "c.png", "d.png"]  # each item once, in order
    assert {n: (e["status"], e["error"]) for n, e in lines.items()} == {
        "a.png": ("ok", None), "b.png": ("failed", overtime(1)),
        "c.png": ("failed", overtime(1)), "d.png": ("ok", None)}
    assert overtime(1) == "took longer than limits.max_item_seconds = 1 s and was stopped"


def test_in_this_process_a_slow_item_is_only_warned_about_then_fails_when_it_ends(
        project, tmp_path, monkeypatch, caplog):
    """--workers 0: nothing is killed (it is the user's process); the watchdog warns while the
    item runs, and the item fails when it ends, as it would on a cluster."""
    ctx, part = _partition(project, tmp_path, ["a.png", "b.png", "c.png"], 0.3)
    hooks = tasks_mod._test_hooks

    def slow(name: str) -> None:
        if name == "b.png":
            time.sleep(1.0)
        hooks(name)

    monkeypatch.setattr(tasks_mod, "_test_hooks", slow)
    with caplog.at_level(logging.WARNING, logger="maskjob"):
        counts = process_partition(ctx, part)
    assert (counts["ok"], counts["failed"]) == (2, 1)
    b = _part(ctx)["b.png"]
    assert b["status"] == "failed" and b["outputs"] == []
    assert b["error"].startswith("took 1.") and b["error"].endswith(
        ", longer than limits.max_item_seconds = 0.3 s")
    warned = [r.getMessage() for r in caplog.records if "max_item_seconds" in r.getMessage()]
    assert len(warned) == 1 and "ds/b.png" in warned[0] and "cannot be stopped" in warned[0]
    assert not list((tmp_path / "out").rglob("b.png*"))  # its outputs were never written


@pytest.mark.parametrize("value", ["-1", "abc", ".nan", ".inf", "true", "[1]"])
def test_a_bad_max_item_seconds_is_exit_2_naming_the_key(project, tmp_path, capsys, value):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    assert_refused(["export", str(p.root), str(out), "--workers", "2", "--set",
                    f"limits.max_item_seconds={value}"], capsys, "limits.max_item_seconds")
    assert not out.exists()


def test_zero_turns_the_time_limit_off_but_not_the_memory_limits(project, tmp_path, capsys):
    assert config.load(None, sets=["limits.max_item_seconds=0"]).limits.max_item_seconds == 0
    assert config.load(None).limits.max_item_seconds == 300
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    assert_refused(["export", str(p.root), str(tmp_path / "out"), "--set",
                    "limits.max_objects=0"], capsys, "limits.max_objects")


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_hung_items_on_a_local_cluster_fail_alone_and_the_job_ends(project, tmp_path,
                                                                  monkeypatch):
    """Real worker processes (the hooks set in the environment they inherit): i1 sleeps, i4
    holds the GIL (the watchdog thread cannot run: the faulthandler deadman ends the worker).
    Each worker ends itself, the partitions go isolated, the hung items fail with the limit
    named, every other item is exported; each item is in the manifest once; exit code 1."""
    p = project()
    names = [f"i{k}.png" for k in range(6)]
    for n in names:
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    monkeypatch.setenv(HANG_ENV, "i1.png")
    monkeypatch.setenv(HANG_GIL_ENV, "i4.png")
    out = tmp_path / "out"
    t0 = time.monotonic()
    assert run(["export", str(p.root), str(out), "--workers", "2", "--set",
                "partition_size=3", "--set", "limits.max_item_seconds=2"]) == 1
    assert time.monotonic() - t0 < 240
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["item"] for e in lines) == names
    assert {e["item"]: (e["status"], e["error"]) for e in lines} == {
        n: ("failed", overtime(2)) if n in ("i1.png", "i4.png") else ("ok", None)
        for n in names}
    assert run(["verify", str(out)]) == 0
