"""The in-flight window (jobs/run.py): twice the cluster's current threads, at least one (a job
started before any worker joined still queues work), never more than MAX_WINDOW. The elastic
behaviour on a real scheduler is tests/e2e/test_elastic.py."""

from __future__ import annotations

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
