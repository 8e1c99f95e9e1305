"""An external sort through a `Spool`: rows added in any order come back sorted by their first
field, rows of equal keys in the order they were added (a stable sort).

Rows (tuples of what msgpack writes: str, bytes, int within 64 bits, None...) are kept in
memory `RUN` at a time; a full run is sorted (`list.sort`, stable) and stored in the spool as
msgpack chunks of `CHUNK` rows, one SQLite row each. `merged()` streams every row back by one
`heapq.merge` of the runs, reading one chunk of each at a time; more than `FAN_IN` runs are
first merged `FAN_IN` at a time into longer runs. So the driver holds one run while adding
and at most `FAN_IN` chunks while merging, whatever the number of rows; rows come back as
lists. `merged()` reads the rows once and drops them; `kept()` reads them back as often as
asked (at most `FAN_IN` runs stay, or one run's rows in memory). What it replaces: rows
inserted into a table, an index built on them (SQLite's sorter copying every row again) and a
join reading that index, when each key is read once, in order.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from .spool import Spool

RUN = 1 << 15  # rows sorted in memory at a time (~10 MB of small rows)
CHUNK = 256  # rows per stored chunk: what a merge holds of each run
FAN_IN = 64  # runs merged at once
STORE_BATCH = 16  # chunks stored per executemany (~1 MB of small rows)
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode
_KEY = operator.itemgetter(0)


class Runs:
    """One external sort, in its own table of `spool` (see module docstring)."""

    _tables = itertools.count()

    def __init__(self, spool: Spool, run: int | None = None) -> None:
        """`run`: rows per run (default `RUN`), smaller for large rows."""
        self.spool = spool
        self.run = run
        self.table = f"runs{next(self._tables)}"
        spool.execute(f"CREATE TABLE {self.table} (run INT, data BLOB)")
        spool.execute(f"CREATE INDEX {self.table}_run ON {self.table} (run)")
        self.buf: list[Any] = []
        self.order: list[int] = []  # stored runs, oldest rows first
        self.next_run = 0

    def add(self, rows: Iterable[tuple[Any, ...]]) -> None:
        it = iter(rows)
        size = self.run or RUN
        while True:
            self.buf.extend(itertools.islice(it, size - len(self.buf)))
            if len(self.buf) < size:
                return
            self._flush()

    def clear(self) -> None:
        """Forget every row added."""
        self.buf = []
        self.order = []
        self.spool.execute(f"DELETE FROM {self.table}")

    def _flush(self) -> None:
        if self.buf:
            self.buf.sort(key=_KEY)
            self.order.append(self._store(self.buf))
            self.buf = []

    def _store(self, rows: Iterable[Any]) -> int:
        run, self.next_run = self.next_run, self.next_run + 1
        it = iter(rows)
        chunks = zip(itertools.repeat(run), map(_pack, iter(
            lambda: list(itertools.islice(it, CHUNK)), [])))
        # STORE_BATCH chunks per executemany, not the spool's BATCH rows: a run merged from
        # FAN_IN runs is thousands of chunks (4096 of them held ~250 MB at 1M COCO images)
        self.spool.insert_batches(f"INSERT INTO {self.table} VALUES (?, ?)", iter(
            lambda: list(itertools.islice(chunks, STORE_BATCH)), []))
        return run

    def _read(self, run: int) -> Iterator[Any]:
        cur = self.spool.db.execute(f"SELECT data FROM {self.table} WHERE run = ? ORDER BY "
                                    "rowid", (run,))
        try:
            for (data,) in cur:
                yield from _unpack(data)
        finally:
            cur.close()

    def _merge(self, runs: list[int]) -> Iterator[Any]:
        if len(runs) == 1:
            return self._read(runs[0])
        return heapq.merge(*map(self._read, runs), key=_KEY)  # ties: the earlier run first

    def _rounds(self) -> None:
        """Store the rows in memory as a run (if some run is stored already) and merge runs
        until at most `FAN_IN` are left. Each round merges groups of `FAN_IN` consecutive
        runs (oldest first, each merged run in its group's place, so ties keep their order):
        as few groups as bring the count to `FAN_IN`, or every full group while more than
        `FAN_IN` groups are left. A row is rewritten at most once per round: twice in all up
        to `FAN_IN`**2 runs (134M rows in runs of `RUN`). Merging the first `FAN_IN` runs and
        putting the result first again, round after round, rewrote the growing first run
        every time: quadratic past a few hundred runs (a 10M-image COCO 2017 file wrote
        ~190 GB through SQLite)."""
        if self.order:
            self._flush()
        while (n := len(self.order)) > FAN_IN:
            groups = min(-(-(n - FAN_IN) // (FAN_IN - 1)), n // FAN_IN)
            merged = []
            for g in range(groups):
                group = self.order[g * FAN_IN:(g + 1) * FAN_IN]
                merged.append(self._store(self._merge(group)))
                self.spool.execute(f"DELETE FROM {self.table} WHERE run IN "
                                   f"({','.join(map(str, group))})")
            self.order[:groups * FAN_IN] = merged

    def merged(self) -> Iterator[Any]:
        """Every row added, sorted by its first field (stable); the runs are dropped after."""
        self._rounds()
        if not self.order:  # all in memory: no run stored
            self.buf.sort(key=_KEY)
            rows, self.buf = self.buf, []
            yield from rows
            return
        try:
            yield from self._merge(self.order)
        finally:
            self.clear()

    def kept(self) -> Iterator[Any]:
        """`merged()` without dropping the rows: call it again for another pass (no row may
        be added after the first call)."""
        self._rounds()
        if not self.order:
            self.buf.sort(key=_KEY)
            return iter(self.buf)
        return self._merge(self.order)
