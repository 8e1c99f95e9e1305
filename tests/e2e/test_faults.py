"""Faults injected for real (SPEC 4): a Dask worker process SIGKILLed mid-job, the driver
SIGKILLed mid-job and the same command run again, and S3 answering 503 SlowDown or resetting
connections. Each run must finish with every item exactly once, nothing stray, and `verify`
passing; the resumed run must not redo committed partitions."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from jobs.cli import run

from .faultproxy import FaultProxy
from .helpers import (
    VENV_BIN,
    LoopbackCluster,
    check_complete_export,
    cluster_idle,
    committed_parts,
    demo_config,
    demo_project,
    die_with_parent,
    enable_versioning,
    list_keys,
    project_items,
    read_manifest,
    stop_process,
    upload_folder,
    versions,
    wait_for,
)

pytestmark = [pytest.mark.s3, pytest.mark.cluster, pytest.mark.timeout(120)]

COPIES = 2  # 8 demo items x 3 = 24 items, 12 partitions of 2: a job of several seconds


@pytest.fixture
def big_s3_demo(s3, bucket, tmp_path):
    project = demo_project(tmp_path, copies=COPIES)
    src, dst = f"s3://{bucket('in')}/proj", f"s3://{bucket('out')}/run"
    upload_folder(s3, project, src)
    return project, src, dst


class WorkerKiller(threading.Thread):
    """Once `after` partitions are committed, SIGKILL the worker process that is running a
    partition (found through the scheduler: the worker processing a partition task, asked for
    its pid; checked to be a child process of the `dask worker` command)."""

    def __init__(self, fs, url: str, cluster: LoopbackCluster, after: int) -> None:
        super().__init__(daemon=True, name="worker-killer")
        self.fs, self.url, self.cluster, self.after = fs, url, cluster, after
        self.killed: dict = {}
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            with self.cluster.client() as c:
                deadline = time.monotonic() + 45
                while not self.stop.is_set() and time.monotonic() < deadline:
                    parts = committed_parts(self.fs, self.url)
                    if len(parts) >= self.after:
                        busy = {w: keys for w, keys in c.processing().items()
                                if any(str(k).startswith("maskjob-part-") for k in keys)}
                        if busy:
                            address, keys = sorted(busy.items())[0]
                            pid = c.run(os.getpid, workers=[address])[address]
                            children = psutil.Process(self.cluster.worker.pid).children(
                                recursive=True)
                            assert pid in {p.pid for p in children}, "not a dask worker child"
                            os.kill(pid, signal.SIGKILL)
                            psutil.Process(pid).wait(timeout=10)  # dead: it writes no more
                            pids = [int(m.group(1)) for k in keys
                                    if (m := re.match(r"maskjob-part-(\d+)-", str(k)))]
                            after = committed_parts(self.fs, self.url)
                            self.killed = {"address": address, "pid": pid, "partitions": pids,
                                           "parts_committed": len(parts),
                                           "lost": [p for p in pids if not any(
                                               k.startswith(f"_manifest/part-{p:05d}-")
                                               for k in after)]}
                            return
                    time.sleep(0.05)
        except BaseException as e:  # reported by the test
            self.error = e


def test_a_worker_killed_mid_job_costs_a_retry_not_the_job(s3, big_s3_demo, cluster):
    project, src, dst = big_s3_demo
    items = project_items(project)
    killer = WorkerKiller(s3, dst, cluster, after=2)
    killer.start()
    try:
        rc = run(["export", src, dst, "--config", demo_config(project), "--set",
                  "partition_size=2", "--scheduler", cluster.address])
    finally:
        killer.stop.set()
        killer.join(timeout=30)
    assert killer.error is None, killer.error
    assert killer.killed, "no worker was killed: the job ended first"
    n_parts = len(items) // 2
    assert killer.killed["parts_committed"] < n_parts, "the kill came after the job"
    assert rc == 0
    summary, _ = check_complete_export(s3, dst, items)
    assert summary["partitions"] == n_parts
    assert run(["verify", dst]) == 0
    # The partition the dead worker was running had not committed when it died, and is
    # committed now: Dask ran it again elsewhere, over whatever the dead process half-wrote
    # (check_complete_export found no stray or missing object, verify found no bad one).
    # (`lost` is empty only if the kill landed between the part's PUT and the task's end.)
    for pid in killer.killed["lost"]:
        assert s3.glob(f"{dst.removeprefix('s3://')}/_manifest/part-{pid:05d}-*.jsonl")
    # the killed process is really gone, and its nanny brought a new one up
    assert not psutil.pid_exists(killer.killed["pid"])
    cluster.wait_for_workers(2, timeout=30)
    assert killer.killed["address"] not in cluster.workers()
    assert f"Worker process {killer.killed['pid']} was killed by signal 9" in \
        cluster.log("worker.log", tail=None)


def test_a_driver_killed_mid_job_resumes_without_redoing_committed_partitions(
        s3, big_s3_demo, cluster, tmp_path: Path):
    project, src, dst = big_s3_demo
    items = project_items(project)
    n_parts = len(items) // 2
    enable_versioning(s3, dst.removeprefix("s3://").split("/")[0])  # every PUT is a version
    cmd = [str(VENV_BIN / "maskjob"), "export", src, dst, "--config", demo_config(project),
           "--set", "partition_size=2", "--scheduler", cluster.address]

    with open(tmp_path / "driver1.log", "wb") as log:
        driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ,
                                  start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_for(lambda: len(committed_parts(s3, dst)) >= 3 or driver.poll() is not None, 60,
                 "3 committed partitions", interval=0.05)
        assert driver.poll() is None, ("the driver ended before it could be killed:\n"
                                       + (tmp_path / "driver1.log").read_text()[-3000:])
        os.killpg(driver.pid, signal.SIGKILL)
        assert driver.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop_process(driver, grace=1)
    assert not s3.exists(f"{dst.removeprefix('s3://')}/manifest.json")

    # Tasks the dead driver left running finish on their own (their results are dropped);
    # wait for them, so the snapshot below is what the rerun will find.
    wait_for(lambda: cluster_idle(cluster), 30, "the cluster to go idle", interval=0.2)
    before = versions(s3, dst)
    parts_before = sorted(k for k in before if k.startswith("_manifest/part-"))
    assert 3 <= len(parts_before) < n_parts, parts_before
    assert all(len(v) == 1 for v in before.values() if v)

    rerun = subprocess.run(cmd, capture_output=True, env=os.environ, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    summary, lines = check_complete_export(s3, dst, items)
    assert summary["partitions_resumed"] == len(parts_before)
    assert f"({len(parts_before)} partitions resumed)" in rerun.stderr.decode()

    after = versions(s3, dst)
    for key in parts_before:  # committed partitions: not redone, not even their manifest part
        assert after[key] == before[key], f"{key} was written again"
    resumed_items = set()
    for key in parts_before:
        body = s3.cat_file(f"{dst.removeprefix('s3://')}/{key}").decode()
        resumed_items |= {(e["dataset"], e["item"])
                          for e in map(json.loads, filter(str.strip, body.splitlines()))}
    assert len(resumed_items) == 2 * len(parts_before)
    resumed_outputs = [o["key"] for e in lines if (e["dataset"], e["item"]) in resumed_items
                       for o in e["outputs"]]
    for key in resumed_outputs:  # nor their outputs
        assert after[key] == before[key], f"{key} of a committed partition was written again"
    assert run(["verify", dst]) == 0


def test_transient_s3_failures_cost_retries_not_the_job(s3, bucket, tmp_path, cluster, moto):
    """Every 4th GET/PUT through the proxy fails (30 faults during the export, 6 more during
    verify): 503 SlowDown, a reset before the request reaches S3, or a reset after S3 applied
    it (the client cannot tell it succeeded). Driver and workers all go through the proxy."""
    project = demo_project(tmp_path, copies=1)  # 16 items, ~250 PUTs
    src, dst = f"s3://{bucket('in')}/proj", f"s3://{bucket('out')}/run"
    upload_folder(s3, project, src)
    items = project_items(project)
    with FaultProxy(moto.endpoint, methods=("GET", "PUT"), every=4, max_faults=30) as proxy:
        proxy_url = proxy.url
        rc = run(["export", src, dst, "--config", demo_config(project),
                  "--scheduler", cluster.address,
                  "--storage-option", f"endpoint_url={proxy.url}"])
        counters = dict(proxy.counters)
        print("fault proxy during export:", counters)
        assert rc == 0, counters
        proxy.max_faults = proxy.faults + 6  # verify reads through faults too
        assert run(["verify", dst, "--storage-option", f"endpoint_url={proxy.url}"]) == 0
        assert proxy.faults == proxy.max_faults
    for kind in ("PUT 503", "PUT reset", "PUT reset_after", "GET 503", "GET reset",
                 "GET reset_after"):
        assert counters.get(kind, 0) > 0, (kind, counters)
    summary, _ = check_complete_export(s3, dst, items)  # checked on moto directly
    assert summary["input"]["storage_options"] == {"endpoint_url": proxy_url}
    assert run(["verify", dst]) == 0
    assert len(committed_parts(s3, dst)) == summary["partitions"]
    _, lines = read_manifest(s3, dst)
    assert len(lines) == len(items)


def _poison_run(tmp_path: Path, project, env: dict[str, str], *sets: str
                ) -> tuple[Path, dict[str, dict], str]:
    """Six items, partitions of 4, on `dask scheduler` + 2 `dask worker` processes whose
    environment is `env` (a test hook on i2.png); the job must end with exit code 1. Returns
    the output, its manifest lines by item (each item once) and the workers' log."""
    from tests.conftest import rect

    p = project()
    names = [f"i{k}.png" for k in range(6)]
    for n in names:
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    cluster = LoopbackCluster(tmp_path / "cluster", nworkers=2, env=env).start()
    try:
        cluster.wait_for_workers(2)
        out = tmp_path / "out"
        assert run(["export", str(p.root), str(out), "--scheduler", cluster.address,
                    "--set", "partition_size=4", *[a for s in sets for a in ("--set", s)]]) == 1
        lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(e["item"] for e in lines) == names
        for e in lines:
            assert e["status"] == ("failed" if e["item"] == "i2.png" else "ok"), e
        return out, {e["item"]: e for e in lines}, cluster.log("worker.log", tail=None)
    finally:
        cluster.stop()


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_a_poison_item_costs_one_worker_on_an_external_scheduler(tmp_path, project):
    """A real SIGSEGV on one item, on an external `dask scheduler` that keeps Dask's default
    allowed-failures (3): the retry finds its own run's attempt marker and isolates the items at
    once, so exactly one worker process dies (not four); the poison item fails alone, the rest
    is exported, and no marker is left behind."""
    from jobs.manifest_store import ATTEMPTS_DIR
    from jobs.tasks import CRASH_ENV, WORKER_DIED

    out, lines, log = _poison_run(tmp_path, project, {CRASH_ENV: "i2.png"})
    assert lines["i2.png"]["error"] == WORKER_DIED
    markers = out / ATTEMPTS_DIR
    assert not markers.exists() or not any(markers.iterdir())
    deaths = re.findall(r"Worker process \d+ was killed by signal", log)
    assert len(deaths) == 1, deaths


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_a_hung_item_costs_one_worker_on_an_external_scheduler(tmp_path, project):
    """An item that never returns (the test-only hang hook): its worker's watchdog ends that
    process at limits.max_item_seconds (exit status 124, once), the retry exports the partition
    item by item and stops the item at the limit; it fails alone with the limit named."""
    from jobs.tasks import HANG_ENV, WATCHDOG_EXIT, overtime

    out, lines, log = _poison_run(tmp_path, project, {HANG_ENV: "i2.png"},
                                  "limits.max_item_seconds=2")
    assert lines["i2.png"]["error"] == overtime(2)
    ended = re.findall(rf"Worker process \d+ exited with status {WATCHDOG_EXIT}", log)
    assert len(ended) == 1, ended
    assert run(["verify", str(out)]) == 0


@pytest.mark.timeout(90)
def test_a_dead_drivers_late_task_stops_before_overwriting_the_rerun_outputs(
        s3, bucket, tmp_path: Path, cluster, moto, monkeypatch):
    """The fence (jobs/fence.py), for real: driver A's task is stuck on one item's read (the
    proxy holds that GET) when A is SIGKILLed; an input annotation changes and driver B runs
    the job again to the end on the same external scheduler (new plan; the partition A had
    started is held back, then redone). Only then does A's orphaned task get its bytes - and,
    about to write the old masks over B's, it finds it was superseded and stops. Every output
    matches B's manifest (verify), nothing stray is left."""
    from jobs import run as run_mod
    from tests.conftest import ProjectBuilder, rect

    p = ProjectBuilder(tmp_path / "proj", [{"title": "car", "shape": "rectangle",
                                             "color": "#FF0000"}])
    for n in ("a.png", "b.png", "c.png", "d.png"):
        p.add("ds", n, [rect("car", 2, 2, 9, 9)])
    src, dst = f"s3://{bucket('in')}/proj", f"s3://{bucket('out')}/run"
    upload_folder(s3, p.root, src)
    items = project_items(p.root)
    monkeypatch.setattr(run_mod, "GRACE_S", 2.0)  # driver B's hold-back (default 10 s)
    base = ["export", src, dst, "--set", "partition_size=4", "--scheduler", cluster.address]

    with FaultProxy(moto.endpoint, methods=()) as proxy:
        proxy.hold("d.png.json")  # A's only partition reads a, b, c, then waits on d
        with open(tmp_path / "driverA.log", "wb") as log:
            driver = subprocess.Popen(
                [str(VENV_BIN / "maskjob"), *base, "--storage-option",
                 f"endpoint_url={proxy.url}"], stdout=log, stderr=subprocess.STDOUT,
                env=os.environ, start_new_session=True, preexec_fn=die_with_parent)
        try:
            wait_for(lambda: proxy.holding.is_set() or driver.poll() is not None, 45,
                     "driver A's task to reach the held read")
            assert driver.poll() is None, (tmp_path / "driverA.log").read_text()[-3000:]
            marker = f"{dst.removeprefix('s3://')}/_manifest/attempts/part-00000"
            assert s3.cat_file(marker)  # A's task is the one waiting, past its start
            os.killpg(driver.pid, signal.SIGKILL)
            assert driver.wait(timeout=10) == -signal.SIGKILL
        finally:
            stop_process(driver, grace=1)
        assert not cluster_idle(cluster)  # the orphaned task still runs

        # the input changes (item a's box moves), and driver B exports it again
        s3.pipe(f"{src.removeprefix('s3://')}/ds/ann/a.png.json", json.dumps(
            {"size": {"width": 64, "height": 48}, "tags": [],
             "objects": [rect("car", 20, 20, 40, 40)]}).encode())
        t0 = time.monotonic()
        assert run(base) == 0
        assert time.monotonic() - t0 >= 2.0  # partition 0 waited for the grace
        assert run(["verify", dst]) == 0
        _, lines = read_manifest(s3, dst)
        b_outputs = {o["key"]: o for e in lines for o in e["outputs"]}
        assert not cluster_idle(cluster)  # A's task has not written anything yet

        proxy.release()  # A's task gets d's annotation, renders it and goes to write
        wait_for(lambda: cluster_idle(cluster), 30, "A's orphaned task to end", interval=0.2)

    assert run(["verify", dst]) == 0  # every output's md5 is the one B's manifest names
    check_complete_export(s3, dst, items)
    listing = list_keys(s3, dst, detail=True)
    for key, out in b_outputs.items():
        assert listing[key]["size"] == out["size"], key
    assert "superseded by run" in cluster.log("worker.log", tail=None)  # it stopped, told why
