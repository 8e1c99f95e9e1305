"""Run the partitions of a plan on Dask with an elastic, bounded number in flight.

- Tasks are created lazily from an iterator of `PlanSlice`s (~100 bytes each); the job's shared
  `ExportContext` reaches every worker once, through a worker plugin (workers that join later
  or restart get it too), so a task carries only its slice.
- In flight: `max_in_flight` when set; otherwise twice the cluster's current threads, re-read
  from the scheduler at most once per `REFRESH_S` while the job runs (workers that join are used,
  workers that leave shrink the window), never more than `MAX_WINDOW`. The driver holds the
  in-flight futures only.
- Futures have explicit keys (`maskjob-part-NNNNN-<token>`) and `retries=2` for exceptions; a
  worker that dies is rescheduled by Dask. When Dask gives up on a partition because its workers
  keep dying (KilledWorker: a native crash on some item, or an item over
  `limits.max_item_seconds`, whose worker ends itself: jobs/watchdog.py), the partition is
  submitted once more as `process_partition_isolated`, which identifies the poison item and
  exports the rest.
  Without waiting for Dask to give up: each attempt leaves a marker under `_manifest/attempts/`
  (`manifest_store.start_attempt`), and an attempt that finds its own run's marker knows the
  worker of the previous one died mid-partition and goes isolated at once. So a poison item
  costs one worker process, whatever the scheduler's `allowed-failures` (an external
  scheduler keeps its own, 3 by default). A partition's marker is removed when it commits (and
  any left over when every partition is in), so only unfinished partitions keep one.
- The fence (jobs/fence.py): before dispatching, the run adopts the output (its token in
  `_manifest/run`, other runs' attempt markers removed); partitions another run had started
  are dispatched `GRACE_S` later, and every task writes through a `FencedRoot`, so a task left
  running by a dead driver stops writing (`Superseded`) within `CHECK_S` of a newer run's
  adoption - before that run dispatches the same partition.
- `on_done(part)` is called once per committed partition. Results are never fetched: the
  counts are in the committed part (finalize reads them), and the driver knows each partition's
  item count from the plan - one scheduler round trip per task saved (benchmarks/bench_driver).
- `client=None` runs the partitions in this process (`--workers 0`, debugging, unit tests),
  with the workers' malloc thresholds (jobs/malloc.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from . import malloc
from .fence import GRACE_S, Fence, FencedRoot, HoldBack, Superseded
from .manifest_store import PlanSlice, adopt_run, clear_attempts, end_attempt, start_attempt
from .tasks import ExportContext, process_partition, process_partition_isolated

log = logging.getLogger("maskjob")
REFRESH_S = 1.0
MAX_WINDOW = 20_000
_CONTEXTS: dict[str, ExportContext] = {}  # on a worker: the contexts of the running jobs


class ContextPlugin(WorkerPlugin):
    """Puts a job's ExportContext into every worker's `_CONTEXTS` (and removes it at the end)."""

    idempotent = True

    def __init__(self, token: str, ctx: ExportContext) -> None:
        self.token, self.ctx = token, ctx

    def setup(self, worker: Any) -> None:
        _CONTEXTS[self.token] = self.ctx

    def teardown(self, worker: Any) -> None:
        _CONTEXTS.pop(self.token, None)


def _run(token: str, part: PlanSlice, isolated: bool = False) -> dict[str, int]:
    ctx = _CONTEXTS.get(token)
    if ctx is None:
        raise RuntimeError(f"Expected the job context {token} on this worker. Got none "
                           "instead (the worker plugin has not run yet).")
    fence = Fence(ctx.dest, part.pid, token)
    if not isolated and start_attempt(ctx.dest, part.pid, token):
        log.warning("partition %d: a previous attempt's worker died while running it; "
                    "exporting its items one by one in child processes", part.pid)
        isolated = True
    fence.start()  # after the marker is written (jobs/fence.py); raises Superseded
    fn = process_partition_isolated if isolated else functools.partial(process_partition,
                                                                        on_worker=True)
    try:
        counts = fn(dataclasses.replace(ctx, dest=FencedRoot.around(ctx.dest, fence)), part)
    except BaseException as e:
        if fence.probe():  # a newer run owns the output (and the marker): leave it alone
            if isinstance(e, Superseded):
                raise
            raise fence.error() from e
        end_attempt(ctx.dest, part.pid)  # an exception, not a crash: Dask's retry runs it
        raise  # normally again
    end_attempt(ctx.dest, part.pid)  # committed: a rerun need not hold this partition back
    return counts


def _adopt(ctx: ExportContext, token: str, parts: Iterable[PlanSlice]) -> HoldBack:
    """Adopt the output for the run `token` (jobs/fence.py) and hold back the partitions that
    another run had started."""
    held = adopt_run(ctx.dest, token)
    if held:
        log.info("%d partitions had been started by another run: dispatching them in %.0f s, "
                 "once that run's tasks have stopped writing", len(held), GRACE_S)
    return HoldBack(parts, held, grace=GRACE_S)


UNREGISTER_S = 30.0  # the most the cleanup of a run's worker plugin may wait


def _forget_plugin(client: Any, name: str) -> None:
    """Unregister the run's worker plugin, waiting at most UNREGISTER_S: the scheduler waits
    for every worker's answer, and a wedged worker (or a cluster that is gone) must not keep
    an interrupted or failed run from ending (it did: Ctrl-C, or a test's timeout, then hung
    in this cleanup for ever). The plugin is the run's context only; a worker that never
    answers keeps a small object."""
    def forget() -> None:
        with contextlib.suppress(Exception):  # the cluster is gone: nothing left to clean
            client.unregister_worker_plugin(name)

    worker = threading.Thread(target=forget, name="maskjob-unregister", daemon=True)
    worker.start()
    worker.join(UNREGISTER_S)
    if worker.is_alive():
        log.warning("a worker did not answer within %.0f s while the run's plugin was removed; "
                    "going on without it", UNREGISTER_S)


def cluster_window(client: Any) -> int:
    threads = sum(client.nthreads().values())
    return max(1, min(MAX_WINDOW, 2 * threads))


def run_partitions(parts: Iterable[PlanSlice], *, ctx: ExportContext, client: Any | None,
                   max_in_flight: int, on_done: Callable[[PlanSlice], None]) -> None:
    token = hashlib.sha1(f"{ctx.dest.url}{time.time_ns()}".encode()).hexdigest()[:8]
    gate = _adopt(ctx, token, parts)
    if client is None:
        malloc.apply_in_process()
        for p in gate:
            process_partition(ctx, p)
            on_done(p)
        return
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    name = f"maskjob-context-{token}"
    client.register_plugin(ContextPlugin(token, ctx), name=name)
    inflight: dict[Any, PlanSlice] = {}
    ac = as_completed()

    def submit(p: PlanSlice, isolated: bool = False) -> None:
        key = f"maskjob-part-{p.pid:05d}-{token}" + ("-isolated" if isolated else "")
        fut = client.submit(_run, token, p, isolated, key=key, retries=2, pure=False)
        inflight[fut] = p
        ac.add(fut)

    def top_up(limit: int) -> None:
        while len(inflight) < limit:
            p = gate.next()
            if p is None:
                return
            submit(p)

    def window() -> int:
        return max_in_flight if max_in_flight > 0 else cluster_window(client)

    try:
        limit, checked = window(), time.monotonic()
        top_up(limit)
        while inflight or not gate.finished:
            if max_in_flight <= 0 and time.monotonic() - checked >= REFRESH_S:
                limit, checked = window(), time.monotonic()
                top_up(limit)
            with ac.thread_condition:
                if not ac.has_ready():
                    ac.thread_condition.wait(timeout=REFRESH_S / 4)
            for fut in ac.next_batch(block=False):
                p = inflight.pop(fut)
                if fut.status == "error":
                    exc = fut.exception()
                    if isinstance(exc, KilledWorker) and not fut.key.endswith("-isolated"):
                        fut.release()
                        submit(p, isolated=True)
                        continue
                    raise exc
                fut.release()  # its counts are in its committed part: never fetched
                on_done(p)
            top_up(limit)
        clear_attempts(ctx.dest)
    finally:
        for fut in inflight:
            fut.release()
        _forget_plugin(client, name)
