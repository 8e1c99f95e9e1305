"""An on-disk spool for listings: driver memory that does not grow with the number of items.

A `Spool` is a private temporary directory holding one SQLite database (stdlib `sqlite3`)
opened with a bounded page cache (`CACHE_KB`), no journal and no fsync: it is scratch space,
rebuilt by every run, never shared between processes. Listers stream rows into its tables
(`executemany` over generators, so no list of rows is ever built), let SQLite sort and join on
disk (its external sorter builds indexes; `ORDER BY` walks them), and read results back one row
at a time. What the driver holds is the cache plus one batch of rows, whatever the item count.

`close()` removes the directory (so does garbage collection, or at the latest Python's exit;
the folder of a killed driver is removed by the next one, `jobs/scratch.py`);
a spool is also a context manager. The connection may be used
from another thread than the one that made it (the driver iterates refs from a callback), but
never from two threads at once.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from . import scratch

CACHE_KB = 32 * 1024  # SQLite page cache, per connection
BATCH = 4096  # rows per executemany / fetchmany


class Spool:
    """A temporary SQLite database (see module docstring)."""

    def __init__(self, directory: str | None = None) -> None:
        self.dir = scratch.make("maskjob-spool-", directory)
        # removed when the spool is garbage-collected or, at the latest, when Python exits;
        # if the process is killed, by the next driver's sweep (jobs/scratch.py)
        self._cleanup = weakref.finalize(self, scratch.remove, self.dir)
        self.db = sqlite3.connect(os.path.join(self.dir, "spool.db"), check_same_thread=False,
                                  isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KB}",
                       "temp_store=FILE", "locking_mode=EXCLUSIVE"):
            self.db.execute(f"PRAGMA {pragma}")

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
