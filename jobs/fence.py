"""The fence: once a newer run has adopted the output, a dead run's tasks stop writing to it.

A driver that dies leaves its tasks running on an external `dask scheduler`, and a rerun starts
the same partitions again. A late manifest part of the dead run is ignored already (plan tokens,
manifest_store); the fence stops its *outputs* too, which would otherwise replace the new run's
objects of the same keys after the new manifest recorded their md5.

The protocol (every object through `Root`; the stores are strongly consistent: S3, local disk):

- Driver (jobs/run.py), before dispatching anything: `manifest_store.adopt_run` writes the run's
  token to `_manifest/run`, then lists the attempt markers (`_manifest/attempts/part-NNNNN`)
  and removes them. The partitions they name had been started, and not committed, by another
  run whose task may still be running (a task removes its marker when it commits):
  `HoldBack` dispatches them `GRACE_S` seconds later; every other partition is dispatched at
  once.
- Task, at its start: it writes its attempt marker (`start_attempt`), then reads `_manifest/run`
  (`Fence.start`); another run's token there, and it stops before writing anything. By the order
  of those writes and reads, a task of an older run either finds the new run key at its start
  or had its marker listed (and removed) by the new driver - never neither.
- Task, at every write call (`FencedRoot`: every object of a partition - outputs, records, the
  part - is written through it, in isolated child processes too): when its last check is older
  than `CHECK_S`, it reads its marker (one small GET). Its own token: go on. Otherwise (the
  marker was removed by a new driver, or replaced) it reads `_manifest/run`: another run's token
  there, and the write is refused with `Superseded` (the partition stops; the marker, no longer
  its own, is left alone); its own token, and it puts its marker back and goes on (a task of an
  older run had overwritten it on its way to stopping).

The bound: a check that found its marker was issued before the new driver removed it, so every
write call of the old task starts at most `CHECK_S` after the removal, while the held partition
is dispatched `GRACE_S` after it (and writes later still). Residual window: one write call of the
old task (a batch of at most 256 objects / 32 MiB, or the part) that started in time and is still
in flight `GRACE_S - CHECK_S` = 9 s after the removal - a PUT the client keeps retrying that
long - may land over the new run's object; `maskjob verify` names such an object. Writes made
around `Root` (none in jobs/tasks.py) are not fenced.

Cost: nothing per item (the checks happen at write calls: one per flushed batch and one for the
commit), at most one marker GET per `CHECK_S` per writing task, one GET of `_manifest/run` per
task start; a rerun lists and bulk-deletes the markers once and delays only the partitions that a
task of another run may still be writing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any

from .manifest_store import PlanSlice, attempt_of, current_run, mark_attempt
from .storage import Root

log = logging.getLogger("maskjob")

CHECK_S = 1.0  # a writing task reads its marker at most once per CHECK_S
GRACE_S = 10.0  # a partition another run had started is dispatched GRACE_S after adoption

Clock = Callable[[], float]


class Superseded(OSError):
    """A newer run adopted the output: this task must not write to it any more. An OSError,
    so every path of jobs/tasks.py treats it as a storage fault (the partition stops, no item is
    blamed) - in an isolated child process too."""

    def __init__(self, pid: int, run: str, by: str | None) -> None:
        super().__init__(f"partition {pid} of run {run}: superseded by run {by or '(none)'} "
                         "(a newer driver adopted this output); stopped writing")
        self.pid, self.run, self.by = pid, run, by


class Fence:
    """A task's right to write partition `pid` for the run `run` (see the module docstring).
    Thread-safe (the task's writer thread and its main thread both check); picklable (an
    isolated child re-checks at its first write)."""

    def __init__(self, dest: Root, pid: int, run: str, *, interval: float = CHECK_S,
                 clock: Clock = time.monotonic) -> None:
        self.dest, self.pid, self.run = dest, pid, run
        self.interval, self.clock = interval, clock
        self.valid_until = float("-inf")
        self.by: str | None = None
        self.stopped = False
        self._lock = threading.Lock()

    def error(self) -> Superseded:
        return Superseded(self.pid, self.run, self.by)

    def start(self) -> None:
        """At the task's start, after its marker is written: the run must be the current one."""
        with self._lock:
            self._confirm(self.clock())

    def check(self) -> None:
        """Before a write call: raises Superseded when a newer run adopted the output; reads
        the store at most once per `interval`."""
        if self.stopped:
            raise self.error()
        now = self.clock()
        if now < self.valid_until:
            return
        with self._lock:
            if self.stopped:
                raise self.error()
            if now < self.valid_until:  # another thread checked meanwhile
                return
            if attempt_of(self.dest, self.pid) != self.run:
                self._confirm(now)
                mark_attempt(self.dest, self.pid, self.run)
            self.valid_until = now + self.interval

    def probe(self) -> bool:
        """Whether a newer run adopted the output (a forced check; a store error counts as
        no): a failing task asks before removing its marker."""
        if self.stopped:
            return True
        self.valid_until = float("-inf")
        try:
            self.check()
        except Superseded:
            return True
        except Exception:
            return False
        return False

    def _confirm(self, now: float) -> None:
        current = current_run(self.dest)
        if current != self.run:
            self.stopped, self.by = True, current
            log.warning("%s", self.error())
            raise self.error()
        self.valid_until = now + self.interval

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        state["valid_until"] = float("-inf")  # another process checks afresh
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@dataclass(frozen=True)
class FencedRoot(Root):
    """A `Root` whose every write call (write, write_many, open_write, move, delete) checks
    `fence` first; reads are not fenced."""

    fence: Fence | None = field(default=None, compare=False, repr=False)

    @classmethod
    def around(cls, root: Root, fence: Fence) -> FencedRoot:
        return cls(root.url, root.storage_options, fence)

    def _check(self) -> None:
        if self.fence is not None:
            self.fence.check()

    def write_many(self, objects: Mapping[str, bytes]) -> None:
        if objects:
            self._check()
        super().write_many(objects)

    def open_write(self, key: str, *, archive: bool = False
                   ) -> AbstractContextManager[IO[bytes]]:
        self._check()
        return super().open_write(key, archive=archive)

    def move(self, src: str, dst: str) -> None:
        self._check()
        super().move(src, dst)

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._check()
        super().delete(keys)


class HoldBack:
    """The partitions to dispatch, in plan order, except those in `held` (started by another
    run): they are dispatched from `grace` seconds after this object was made on, and never
    before. `next()` never blocks; iterating does (for the in-process runner)."""

    def __init__(self, parts: Iterable[PlanSlice], held: set[int], *, grace: float = GRACE_S,
                 clock: Clock = time.monotonic) -> None:
        self.parts, self.held, self.clock = iter(parts), held, clock
        self.release = clock() + grace if held else float("-inf")
        self.deferred: deque[PlanSlice] = deque()
        self.exhausted = False

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.deferred

    def wait_s(self) -> float:
        """Seconds until the held partitions may go."""
        return max(0.0, self.release - self.clock())

    def next(self) -> PlanSlice | None:
        """The next partition that may be dispatched now; None when none may (yet, or ever:
        see `finished`)."""
        if self.deferred and self.clock() >= self.release:
            return self.deferred.popleft()
        while not self.exhausted:
            p = next(self.parts, None)
            if p is None:
                self.exhausted = True
            elif p.pid in self.held and self.clock() < self.release:
                self.deferred.append(p)
            else:
                return p
        if self.deferred and self.clock() >= self.release:
            return self.deferred.popleft()
        return None

    def __iter__(self) -> Iterator[PlanSlice]:
        while not self.finished:
            p = self.next()
            if p is None:
                time.sleep(self.wait_s())
                continue
            yield p
