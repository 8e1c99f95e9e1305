"""The per-item time limit (`limits.max_item_seconds`) of the normal path: one watchdog thread
per process, shared by every partition the process runs.

- `Watch(limit, on_overdue)`: what one partition holds while it runs its items (`with` registers
  it). `begin(i)` when item i starts (its reads included) and `end(t0)` when it is done: a
  monotonic clock read and one attribute write each - no thread, lock or timer per item.
  `end` returns the seconds the item took when that is over the limit (else None): an item that
  finishes late fails all the same, so the outcome does not depend on where it ran.
- The watchdog thread (a daemon, started by the first watch of the process, and again in a
  forked child) wakes every `tick(limit)` (at most 1 s) while watches are registered and
  sleeps while none is; it calls `on_overdue(i, seconds)` once for an item over its limit. A
  thread cannot be interrupted inside a native call, so the callers choose what that means: a
  Dask worker ends its process (the partition goes isolated: jobs/run.py, jobs/tasks.py), a
  run in the driver's own process (`--workers 0`) only warns - the user's process is never
  killed.
- The deadman (`deadman=True`, workers only): an item stuck in a C call that holds the GIL
  stops every Python thread, the watchdog too. While such a watch is registered (its partition
  is running, between items too), `faulthandler.dump_traceback_later(limit + tick, exit=True)`
  is armed - first by `__enter__` itself, in the partition's thread, then re-armed by each tick
  - and its C thread needs no GIL: if the watchdog cannot run for that long, the process dumps
  its threads' stacks to stderr and exits, as `on_overdue` would have made it. (Arming only
  while an item is running raced: an item that took the GIL right after a tick that saw no
  item running was never stopped.) The largest limit of the registered watches is used, so no
  item is stopped before its own limit; the timer is cancelled when the last one leaves.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import threading
import time
from collections.abc import Callable

OnOverdue = Callable[[int, float], None]  # (item index, seconds it has run so far)

_COND = threading.Condition()
_WATCHES: set[Watch] = set()
_THREAD: threading.Thread | None = None
_ARMED = False  # the deadman timer is set (guarded by _COND)


def tick(limit: float) -> float:
    return max(0.01, min(1.0, limit / 10))


class Watch:
    """One partition's item clock, checked by the process's watchdog thread (module doc)."""

    __slots__ = ("current", "deadman", "fired", "limit", "on_overdue")

    def __init__(self, limit: float, on_overdue: OnOverdue, *, deadman: bool = False) -> None:
        self.limit = limit  # 0: no limit (the watch is never registered)
        self.on_overdue = on_overdue
        self.deadman = deadman
        self.current: tuple[int, float] | None = None  # (item index, monotonic start)
        self.fired: tuple[int, float] | None = None

    def begin(self, i: int) -> float:
        t0 = time.monotonic()
        self.current = (i, t0)
        return t0

    def end(self, t0: float) -> float | None:
        self.current = None
        took = time.monotonic() - t0
        return took if self.limit and took > self.limit else None

    def __enter__(self) -> Watch:
        if self.limit:
            with _COND:
                _WATCHES.add(self)
                if self.deadman:
                    _set_deadman()
                _ensure_thread()
                _COND.notify()
        return self

    def __exit__(self, *exc: object) -> None:
        self.current = None
        with _COND:
            _WATCHES.discard(self)
            _set_deadman()


def _ensure_thread() -> None:
    global _THREAD
    if _THREAD is None or not _THREAD.is_alive():
        _THREAD = threading.Thread(target=_loop, name="maskjob-watchdog", daemon=True)
        _THREAD.start()


def _after_fork() -> None:  # the parent's watches and thread are not this process's
    global _COND, _THREAD, _ARMED
    _COND, _THREAD, _ARMED = threading.Condition(), None, False
    _WATCHES.clear()


def _set_deadman() -> None:
    """Arm the deadman for the registered deadman watches (largest limit + its tick), or
    cancel it when there are none. Called with _COND held."""
    global _ARMED
    limits = [w.limit for w in _WATCHES if w.deadman]
    if limits:
        top = max(limits)
        _ARMED = _arm(top + tick(top)) or _ARMED
    elif _ARMED:
        faulthandler.cancel_dump_traceback_later()
        _ARMED = False


os.register_at_fork(after_in_child=_after_fork)


def _loop() -> None:
    while True:
        with _COND:
            while not _WATCHES:
                _set_deadman()  # (cancels it)
                _COND.wait()
            watches = list(_WATCHES)
            _set_deadman()  # re-armed each tick while deadman watches are registered
        step = min(tick(w.limit) for w in watches)
        now = time.monotonic()
        for w in watches:
            cur = w.current
            if cur is None:
                continue
            if now - cur[1] > w.limit and w.fired != cur:
                w.fired = cur
                with contextlib.suppress(Exception):  # a failed warning must not stop it
                    w.on_overdue(cur[0], now - cur[1])
        time.sleep(step)


def _arm(seconds: float) -> bool:
    try:
        faulthandler.dump_traceback_later(seconds, exit=True)
    except (ValueError, OSError, RuntimeError, AttributeError):  # no usable stderr
        return False
    return True
