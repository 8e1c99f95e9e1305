"""An on-disk spool for listings: driver memory that does not grow with the number of items.

A `Spool` is a private temporary directory holding one SQLite database (stdlib `sqlite3`)
opened with a bounded page cache (`CACHE_KB`), no journal and no fsync: it is scratch space,
rebuilt by every run, never shared between processes. Listers stream rows into its tables
(`executemany` over generators, so no list of rows is ever built), let SQLite sort and join on
disk (its external sorter builds indexes; `ORDER BY` walks them), and read results back one row
at a time. What the driver holds is the cache plus one batch of rows, whatever the item count.

`close()` removes the directory (so does garbage collection, or at the latest Python's exit);
a spool is also a context manager. The connection may be used
from another thread than the one that made it (the driver iterates refs from a callback), but
never from two threads at once.

`aside(name, fill)` fills a second database of the spool in a thread of its own, with its own
connection (SQLite and the OS calls of a walk release the GIL: the walk overlaps the caller's
work); `Aside.attach()` waits for it, raises what `fill` raised, and attaches the database to the
spool's connection as schema `name` (its tables are then found by their bare names).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

CACHE_KB = 32 * 1024  # SQLite page cache, per connection
# the page cache of a part (`aside`), in its thread and once attached: what the driver holds
# grows by this much, not by another CACHE_KB (SQLite's sorter builds its indexes on disk)
PART_CACHE_KB = CACHE_KB // 4
BATCH = 4096  # rows per executemany / fetchmany
PRAGMAS = ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "locking_mode=EXCLUSIVE")


class Spool:
    """A temporary SQLite database (see module docstring)."""

    def __init__(self, directory: str | None = None, *, _part_of: Spool | None = None,
                 _name: str = "spool") -> None:
        if _part_of is None:
            self.dir = tempfile.mkdtemp(prefix="maskjob-spool-", dir=directory)
            # removed when the spool is garbage-collected or, at the latest, when Python exits
            self._cleanup: Callable[[], object] = weakref.finalize(self, shutil.rmtree,
                                                                   self.dir, True)
        else:  # a part (`aside`): a file of its spool's directory, removed with it
            self.dir, self._cleanup = _part_of.dir, lambda: None
        self.path = os.path.join(self.dir, _name + ".db")
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        for pragma in (*PRAGMAS, f"cache_size=-{CACHE_KB if _part_of is None else PART_CACHE_KB}"):
            self.db.execute(f"PRAGMA {pragma}")

    def aside(self, name: str, fill: Callable[[Spool, threading.Event], object]) -> Aside:
        """Run `fill(part, stop)` in a thread: `part` is a new database of this spool (a
        `Spool` with a connection of its own), `stop` is set when the caller gives up (`fill`
        should then return soon). See `Aside`."""
        return Aside(Spool(_part_of=self, _name=name), name, fill, self)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, tuple(params))

    def insert(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        """Run `sql` for every row of an iterable (streamed in batches, one transaction per
        batch unless the caller opened one); returns the number of rows."""
        it = iter(rows)
        return self.insert_batches(sql, iter(lambda: list(itertools.islice(it, BATCH)), []))

    def insert_batches(self, sql: str, batches: Iterable[list[tuple[Any, ...]]]) -> int:
        """`insert` of rows that come in lists already (a walk's batches: bounded by their
        maker), each run by one `executemany` as it stands; returns the number of rows."""
        n = 0
        for batch in batches:
            if self.db.in_transaction:  # the caller's transaction
                self.db.executemany(sql, batch)
            else:
                self.db.execute("BEGIN")
                self.db.executemany(sql, batch)
                self.db.execute("COMMIT")
            n += len(batch)
        return n

    def rows(self, sql: str, params: Iterable[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a query, fetched a batch at a time (each call runs the query anew)."""
        cur = self.db.execute(sql, tuple(params))
        try:
            while True:
                batch = cur.fetchmany(BATCH)
                if not batch:
                    return
                yield from batch
        finally:
            cur.close()

    def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = self.db.execute(sql, tuple(params)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None  # type: ignore[assignment]
        self._cleanup()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Aside:
    """A spool's part being filled in a thread (`Spool.aside`): `attach()` or `cancel()` it,
    once (both wait for the thread)."""

    def __init__(self, part: Spool, name: str, fill: Callable[[Spool, threading.Event], object],
                 spool: Spool) -> None:
        self.part, self.name, self.spool = part, name, spool
        self.stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fill(part, self.stop)
            except BaseException as e:  # raised in the caller's thread by `attach`
                self.error = e

        self.thread = threading.Thread(target=run, name=f"spool-{name}", daemon=True)
        self.thread.start()

    def attach(self) -> None:
        """Wait for `fill`; raise what it raised, else attach its database to the spool's
        connection as schema `name`."""
        self.thread.join()
        self.part.close()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        self.spool.execute(f"ATTACH DATABASE ? AS {self.name}", (self.part.path,))
        for pragma in (*PRAGMAS, f"cache_size=-{PART_CACHE_KB}"):
            self.spool.execute(f"PRAGMA {self.name}.{pragma}")

    def cancel(self) -> None:
        """Stop `fill` (at its next check of `stop`) and wait for it; what it raised is
        dropped (the caller raises its own error)."""
        self.stop.set()
        self.thread.join()
        self.part.close()
