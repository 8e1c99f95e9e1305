"""The in-flight window follows the cluster (issue 11.1): a job started against a real `dask
scheduler` with one single-thread worker uses the three workers that join a few seconds later
(>= 4 partitions executing at once), and still finishes when they leave before the end."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from jobs.cli import run
from tests.conftest import ProjectBuilder, poly, rect

from .helpers import LoopbackCluster, stop_process, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

N_ITEMS = 36  # heavy enough that one worker is still busy when the others have joined


def heavy_project(root: Path) -> ProjectBuilder:
    p = ProjectBuilder(root, [{"title": "car", "shape": "rectangle", "color": "#FF0000"},
                              {"title": "person", "shape": "polygon", "color": "#00FF00"}])
    for k in range(N_ITEMS):  # ~1 s per item on one core: a partition outlives the polling
        objs = [rect("car", j, j, 1900 - j, 1060 - j) for j in range(0, 400, 10)]
        objs += [poly("person", (5 + j, 5), (1900, 40 + j), (900, 1060 - j)) for j in range(8)]
        p.add("ds", f"img{k:03d}.png", objs, w=1920, h=1080)
    return p


class Watcher(threading.Thread):
    """Polls every worker for the maskjob partitions it is executing; records the most at once
    and, once `leave_after` is reached, stops the late workers (they leave mid-job)."""

    def __init__(self, cluster: LoopbackCluster, on_peak) -> None:
        super().__init__(daemon=True, name="watcher")
        self.cluster, self.on_peak = cluster, on_peak
        self.peak, self.error, self.left = 0, None, False
        self.stop = threading.Event()

    def run(self) -> None:
        def executing(dask_worker) -> int:
            return sum(str(ts.key).startswith("maskjob-part-")
                       for ts in dask_worker.state.executing)

        try:
            with self.cluster.client() as c:
                while not self.stop.is_set():
                    try:
                        now = sum(c.run(executing, on_error="ignore").values())
                    except OSError:
                        now = 0
                    self.peak = max(self.peak, now)
                    if self.peak >= 4 and not self.left:
                        self.left = True
                        self.on_peak()
                    time.sleep(0.2)
        except BaseException as e:  # reported by the test
            self.error = e


def test_workers_that_join_later_are_used_and_may_leave_before_the_end(tmp_path):
    project = heavy_project(tmp_path / "project")
    cluster = LoopbackCluster(tmp_path / "cluster", nworkers=1).start()
    late = None
    try:
        late_args = ["worker", "--scheduler-file", str(cluster.scheduler_file), "--nworkers",
                     "3", "--nthreads", "1", "--memory-limit", "1GiB", "--host", "127.0.0.1",
                     "--local-directory", str(tmp_path / "late")]
        out = tmp_path / "out"
        result: dict = {}
        watcher = Watcher(cluster, on_peak=lambda: stop_process(late, grace=20))
        driver = threading.Thread(target=lambda: result.update(rc=run(
            ["export", str(project.root), str(out), "--set", "partition_size=1",
             "--set", "supervisely.masks_human=true", "--scheduler", cluster.address])))
        driver.start()
        watcher.start()
        time.sleep(3)  # the job runs on one worker; then three more join
        assert driver.is_alive(), "the job ended before the workers joined"
        late = cluster._popen(late_args, "late.log")
        driver.join(timeout=200)
        watcher.stop.set()
        watcher.join(timeout=30)
        assert watcher.error is None, watcher.error
        assert not driver.is_alive()
        assert watcher.peak >= 4, f"at most {watcher.peak} partitions ran at once"
        assert watcher.left, "the late workers never left"
        assert result["rc"] == 0
        lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(e["item"] for e in lines) == [f"img{k:03d}.png" for k in range(N_ITEMS)]
        assert {e["status"] for e in lines} == {"ok"}
        assert run(["verify", str(out)]) == 0
        wait_for(lambda: len(cluster.workers()) == 1, 30, "the late workers to be gone")
    finally:
        if late is not None:
            stop_process(late, grace=5)
        cluster.stop()
