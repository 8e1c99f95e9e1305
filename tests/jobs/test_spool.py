"""jobs/spool.py: `Spool.aside` fills a database of the spool in a thread; `attach` raises what
the thread raised or joins its tables to the spool's connection; `cancel` stops it."""

from __future__ import annotations

import os
import threading

import pytest

from jobs.spool import Spool


def test_an_aside_filled_in_a_thread_is_attached_and_joined_by_bare_table_names():
    with Spool() as spool:
        spool.execute("CREATE TABLE items (name TEXT)")
        spool.insert("INSERT INTO items VALUES (?)", [("a",), ("b",), ("c",)])
        threads = []

        def fill(part: Spool, stop: threading.Event) -> None:
            threads.append(threading.current_thread())
            part.execute("CREATE TABLE files (key TEXT, tag TEXT)")
            part.insert("INSERT INTO files VALUES (?, ?)", [("c", "3"), ("a", "1")])
            part.execute("CREATE INDEX files_key ON files (key, tag)")

        spool.aside("files", fill).attach()
        assert threads[0] is not threading.current_thread()
        assert list(spool.rows("SELECT i.name, f.tag FROM items i LEFT JOIN files f "
                               "ON f.key = i.name ORDER BY i.rowid")) == [
            ("a", "1"), ("b", None), ("c", "3")]
        path = os.path.join(spool.dir, "files.db")
        assert os.path.exists(path)
    assert not os.path.exists(path)  # removed with the spool


def test_attach_raises_what_the_thread_raised_and_cancel_stops_it():
    with Spool() as spool:
        def broken(part: Spool, stop: threading.Event) -> None:
            raise OSError("the walk failed")

        aside = spool.aside("files", broken)
        with pytest.raises(OSError, match="the walk failed"):
            aside.attach()
        assert spool.scalar("SELECT count(*) FROM pragma_database_list") == 1  # not attached

        started = threading.Event()

        def endless(part: Spool, stop: threading.Event) -> None:
            started.set()
            while not stop.wait(0.01):
                pass
            raise OSError("dropped: the caller raises its own error")

        aside = spool.aside("more", endless)
        started.wait(5)
        aside.cancel()
        assert not aside.thread.is_alive()
