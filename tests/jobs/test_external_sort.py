"""jobs/external_sort.py: an external sort through a spool - stable, whatever the run size,
fan-in and number of rounds, and holding one run / one chunk per run, not the rows."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator

import pytest

from jobs import external_sort as runs
from jobs.external_sort import Runs
from jobs.spool import Spool


@pytest.mark.parametrize(("run", "chunk", "fan_in"), [(1 << 15, 256, 64), (7, 3, 2), (5, 1, 3),
                                                       (1, 1, 2)])
def test_rows_come_back_sorted_by_key_ties_in_order_added(monkeypatch, run, chunk, fan_in):
    monkeypatch.setattr(runs, "RUN", run)
    monkeypatch.setattr(runs, "CHUNK", chunk)
    monkeypatch.setattr(runs, "FAN_IN", fan_in)
    rnd = random.Random(run)
    rows = [(rnd.choice(["a", "b", "é", "\U0001f600", "10", "9"]), k, rnd.choice([1, "1", None]),
             b"x" * rnd.randrange(3)) for k in range(200)]
    with Spool() as spool:
        sorter = Runs(spool)
        sorter.add(iter(rows[:50]))
        sorter.add(iter(rows[50:]))  # added in several calls
        got = [tuple(r) for r in sorter.merged()]
        assert got == sorted(rows, key=lambda r: r[0])  # Python's sort is stable
        assert list(sorter.merged()) == []  # merged once, then dropped
        sorter.add([("z", 0, None, b"")])  # usable again
        assert [tuple(r) for r in sorter.merged()] == [("z", 0, None, b"")]


def test_clear_forgets_rows_in_memory_and_stored(monkeypatch):
    monkeypatch.setattr(runs, "RUN", 4)
    with Spool() as spool:
        sorter = Runs(spool)
        sorter.add((str(k), k) for k in range(10))
        sorter.clear()
        sorter.add([("b", 1), ("a", 2)])
        assert [tuple(r) for r in sorter.merged()] == [("a", 2), ("b", 1)]


def test_a_merge_holds_chunks_not_the_rows():
    """200k rows of ~100 bytes (~40 MB as Python objects): merging them back allocates a
    few MB at its peak (64 chunks of 256 rows), not the rows."""
    n = 200_000
    with Spool() as spool:
        sorter = Runs(spool)
        sorter.add((f"{k * 7919 % n:08d}", b"x" * 100) for k in range(n))
        count, peak = count_and_peak(sorter.merged())
    assert count == n
    assert peak < 8 << 20, peak


@pytest.mark.parametrize(("run", "fan_in"), [(1 << 15, 64), (3, 2), (1, 3)])
def test_kept_rows_are_read_again_sorted_and_stable(monkeypatch, run, fan_in):
    """`kept()`: the merged rows, as often as asked (runs merged down to FAN_IN, or one run
    kept in memory); a sorter's own run size (`Runs(spool, run)`) is honoured."""
    monkeypatch.setattr(runs, "CHUNK", 2)
    monkeypatch.setattr(runs, "FAN_IN", fan_in)
    rnd = random.Random(run)
    rows = [((rnd.choice(["b", "a", "é"]), rnd.randrange(5)), k) for k in range(60)]
    with Spool() as spool:
        sorter = Runs(spool, run)
        sorter.add(iter(rows))
        want = sorted(rows, key=lambda r: r[0])
        for _ in range(3):
            assert [(tuple(k), v) for k, v in sorter.kept()] == want
        stored = spool.scalar(f"SELECT count(DISTINCT run) FROM {sorter.table}")
        assert stored == 0 if run > len(rows) else 1 <= stored <= fan_in


def count_and_peak(rows: Iterator[object]) -> tuple[int, int]:
    """(number of rows, peak bytes Python allocated while reading them: tracemalloc)."""
    tracemalloc.start()
    try:
        return sum(1 for _ in rows), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_merge_round_stores_its_run_a_few_chunks_at_a_time(monkeypatch):
    """A run merged from FAN_IN runs is stored STORE_BATCH chunks per executemany, not the
    spool's BATCH rows of chunks (at 1M COCO images that held ~250 MB)."""
    for name, value in (("RUN", 50), ("CHUNK", 1), ("FAN_IN", 2)):
        monkeypatch.setattr(runs, name, value)
    sizes: list[int] = []
    store = Spool.insert_batches
    monkeypatch.setattr(Spool, "insert_batches", lambda self, sql, batches: store(
        self, sql, (sizes.append(len(b)) or b for b in batches)))
    rows = [(f"{k * 7 % 400:03d}", k) for k in range(400)]
    with Spool() as spool:
        sorter = Runs(spool)
        sorter.add(iter(rows))
        assert [tuple(r) for r in sorter.merged()] == sorted(rows, key=lambda r: r[0])
    assert sum(sizes) > 400 and max(sizes) == runs.STORE_BATCH  # rounds stored 100s of chunks


@pytest.mark.parametrize(("n_runs", "fan_in"), [(100, 4), (17, 4), (5, 4), (4096 + 7, 64)])
def test_merge_rounds_rewrite_each_row_once_per_level(monkeypatch, n_runs, fan_in):
    """Runs are merged level by level (groups of FAN_IN consecutive runs), never the first run
    merged again with the next ones round after round: a row is stored at most once per
    level (log base FAN_IN of the runs), so storing grows as n log n, not n**2 (the old
    rounds stored 100 runs of 2 rows, fan-in 4, ~20x over: 4,000+ rows for 200)."""
    monkeypatch.setattr(runs, "RUN", 2)
    monkeypatch.setattr(runs, "CHUNK", 2)
    monkeypatch.setattr(runs, "FAN_IN", fan_in)
    stored = 0
    store = Runs._store

    def counting(self, rows):
        def counted():
            nonlocal stored
            for r in rows:
                stored += 1
                yield r
        return store(self, counted())

    monkeypatch.setattr(Runs, "_store", counting)
    n = 2 * n_runs
    rows = [(k * 7919 % 13, k) for k in range(n)]  # many ties: the order added must hold
    with Spool() as spool:
        sorter = Runs(spool)
        sorter.add(iter(rows))
        assert [tuple(r) for r in sorter.merged()] == sorted(rows, key=lambda r: r[0])
    levels = 1
    while fan_in ** levels < n_runs:
        levels += 1
    assert stored <= n * levels, (stored, n, levels)
