"""Run the partitions of a plan on Dask with a bounded number in flight.

Futures with explicit keys, at most `max_in_flight` at once (default: twice the cluster's
threads), `retries=2` for exceptions; a killed worker is rescheduled by Dask. `client=None`
runs the partitions in this process (debugging, unit tests). The driver receives counts only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from .tasks import PartitionJob, process_partition


def run_partitions(jobs: list[PartitionJob], *, client: Any | None, max_in_flight: int,
                   on_done: Callable[[dict[str, int]], None]) -> None:
    if client is None:
        for j in jobs:
            on_done(process_partition(j))
        return
    from distributed import as_completed

    if max_in_flight <= 0:
        threads = sum(client.nthreads().values()) or 1
        max_in_flight = 2 * threads
    token = hashlib.sha1(f"{jobs[0].dest.url}{time.time_ns()}".encode()).hexdigest()[:8] \
        if jobs else ""
    queue = iter(jobs)

    def submit(j: PartitionJob) -> Any:
        return client.submit(process_partition, j, key=f"maskjob-part-{j.pid:05d}-{token}",
                             retries=2, pure=False)

    initial = [submit(j) for _, j in zip(range(max_in_flight), queue, strict=False)]
    ac = as_completed(initial)
    for fut in ac:
        counts = fut.result()
        fut.release()
        on_done(counts)
        nxt = next(queue, None)
        if nxt is not None:
            ac.add(submit(nxt))
