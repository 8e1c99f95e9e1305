"""The in-flight window (jobs/run.py): twice the cluster's current threads, at least one (a job
started before any worker joined still queues work), never more than MAX_WINDOW. The elastic
behaviour on a real scheduler is tests/e2e/test_elastic.py."""

from __future__ import annotations

import time

import pytest

from jobs.run import MAX_WINDOW, cluster_window


class Cluster:
    def __init__(self, nthreads: dict[str, int]) -> None:
        self._nthreads = nthreads

    def nthreads(self) -> dict[str, int]:
        return self._nthreads


@pytest.mark.parametrize(("nthreads", "window"), [
    ({}, 1), ({"a": 1}, 2), ({"a": 1, "b": 1, "c": 1, "d": 1}, 8), ({"a": 4, "b": 2}, 12),
    ({f"w{i}": 64 for i in range(1000)}, MAX_WINDOW)])
def test_the_window_follows_the_current_threads_within_bounds(nthreads, window):
    assert cluster_window(Cluster(nthreads)) == window


def _wedge(seconds: int) -> None:
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)  # a C call holding the GIL: the worker cannot answer


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_the_plugin_cleanup_does_not_wait_for_a_wedged_worker(monkeypatch):
    """An interrupted or failed run removes its worker plugin in a `finally`; the scheduler
    waits for every worker's answer, so a wedged worker kept the run from ending (for ever)."""
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin

    from jobs import run as run_mod

    monkeypatch.setattr(run_mod, "UNREGISTER_S", 1.0)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client:
        client.register_plugin(WorkerPlugin(), name="maskjob-context-test")
        client.submit(_wedge, 15, pure=False)
        time.sleep(2)  # it has started
        t0 = time.monotonic()
        run_mod._forget_plugin(client, "maskjob-context-test")
        assert time.monotonic() - t0 < 8
