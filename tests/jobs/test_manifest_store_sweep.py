"""The streamed listings of `_manifest/`: `sweep_parts` (resume, a new plan, finalize) and the
attempt markers (`adopt_run`, `clear_attempts`) - the same answers as one whole listing, stale
keys deleted in bulk while listing, the driver's memory flat in the number of parts."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from jobs import manifest_store as ms
from jobs.manifest_store import (
    ATTEMPTS_DIR,
    PartSet,
    adopt_run,
    attempt_key,
    clear_attempts,
    new_token,
    part_key,
    records_key,
    shard_key,
    sweep_parts,
)
from jobs.storage import Root
from tests.e2e.helpers import new_fs


def _touch(root: Root, keys: list[str]) -> None:
    for k in keys:
        path = root.full(k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb"):
            pass


def _keys(root: Root, prefix: str = "_manifest") -> set[str]:
    return {k for page in root.key_pages(prefix) for k in page}


def test_partset_is_a_set_of_ids_below_its_size():
    s = PartSet(100)
    for pid in (0, 7, 8, 99, 7):
        s.add(pid)
    assert s == {0, 7, 8, 99} and len(s) == 4 and list(s) == [0, 7, 8, 99]
    assert 7 in s and 1 not in s and 100 not in s and -1 not in s and "7" not in s
    assert PartSet(0) == set() and not PartSet(0) and bool(s)
    with pytest.raises(IndexError):
        s.add(100)


def test_sweep_keeps_the_current_plan_and_deletes_every_other_part(tmp_path):
    root = Root(str(tmp_path))
    tok, other = new_token(), new_token()
    current = [part_key(0, tok), part_key(2, tok), records_key("clearml", 0, tok),
               records_key("clearml", 1, tok),  # records without their part: not committed
               part_key(9, tok)]  # past the plan: not in it, and kept
    stale = [part_key(1, other), records_key("clearml", 1, other),
             "_manifest/part-00003.jsonl"]  # no token at all (an old layout): stale too
    others = [shard_key(0), "_manifest/plan.json", "_manifest/baseline.jsonl", "_manifest/run",
              attempt_key(4), "_manifest/part-00005-notes.txt", "_manifest/x/part-00006.jsonl"]
    _touch(root, current + stale + others)
    assert sweep_parts(root, tok, 3) == ({0, 2}, 3)
    assert _keys(root) == set(current + others)
    assert sweep_parts(root, tok, 3) == ({0, 2}, 0)  # nothing left to delete
    assert sweep_parts(root, None, 0) == (set(), 5)  # a new plan: every part is stale
    assert _keys(root) == set(others)


@dataclass(frozen=True)
class ForgetfulRoot(Root):
    """A local root whose listing loses the page after one during which keys were deleted
    (what readdir may do in a folder that changes under it)."""

    def key_pages(self, prefix: str = "", *, page: int = 1000) -> Iterator[list[str]]:
        keys = sorted(k for p in super().key_pages(prefix, page=page) for k in p)
        skip = False
        for i in range(0, len(keys), page):
            chunk = keys[i:i + page]
            if skip:
                skip = False
                continue
            yield chunk
            skip = not os.path.exists(self.full(chunk[0]))


def test_sweep_lists_again_when_it_deleted_in_the_middle_of_a_listing(tmp_path):
    root = ForgetfulRoot(str(tmp_path))
    tok, old = new_token(), new_token()
    n = 2 * ms.DELETE_BATCH + 500
    # stale keys sort first (records/ > part-), so the lost pages hold current parts too
    stale = [f"_manifest/part-{i:05d}.jsonl" for i in range(n)]
    _touch(root, stale + [part_key(i, tok) for i in range(n)]
           + [records_key("zarr", i, old) for i in range(300)])
    done, deleted = sweep_parts(root, tok, n)
    assert deleted == n + 300 and done == set(range(n))
    assert _keys(root) == {part_key(i, tok) for i in range(n)}


def _traced(fn, *args):
    """(fn(*args), the peak of Python memory traced while it ran)."""
    tracemalloc.start()
    try:
        got = fn(*args)
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sweep_memory_does_not_grow_with_the_parts(tmp_path):
    """Python memory traced during a resume's sweep of 1,000 and of 10,000 committed parts
    (plus as many stale ones deleted): the same page and batch, a bitmap of 1.3 KB."""
    peaks = []
    for n in (1000, 10000):
        root = Root(str(tmp_path / str(n)))
        tok, old = new_token(), new_token()
        _touch(root, [part_key(i, tok) for i in range(n)] + [part_key(i, old) for i in range(n)])
        got, peak = _traced(sweep_parts, root, tok, n)
        assert got == (set(range(n)), n)
        peaks.append(peak)
    assert peaks[1] < peaks[0] * 1.2 + 16_000, peaks  # was ~1.1 KB per part listed


def test_adopt_and_clear_sweep_many_attempt_markers(tmp_path):
    root = Root(str(tmp_path))
    _touch(root, [attempt_key(i) for i in range(0, 5000, 2)] + [f"{ATTEMPTS_DIR}/junk"])
    assert adopt_run(root, "run1") == set(range(0, 5000, 2))
    assert _keys(root, ATTEMPTS_DIR) == set()
    _touch(root, [attempt_key(i) for i in range(1500)])
    assert clear_attempts(root) == 1500 and _keys(root, ATTEMPTS_DIR) == set()


@pytest.mark.s3
def test_sweep_and_adopt_on_s3_deleting_while_listing(s3_bucket, monkeypatch):
    """Batches of 100 deleted in the middle of the listing (S3 pages continue after the last
    key listed, so the second listing finds nothing left); pages past 1,000 keys are covered
    by tests/jobs/test_storage_key_pages.py."""
    monkeypatch.setattr(ms, "DELETE_BATCH", 100)
    fs = new_fs()
    base = f"{s3_bucket}/out dir/ünï 100%"  # the root itself has a tricky name
    tok, old = new_token(), new_token()
    n = 300
    keys = [part_key(i, tok) for i in range(n)] + [part_key(i, old) for i in range(n)] + \
        [records_key("clearml", i, old) for i in range(100)] + \
        [attempt_key(i) for i in range(0, n, 2)] + [shard_key(0)]
    fs.pipe({f"{base}/{k}": b"" for k in keys})
    root = Root(f"s3://{base}")
    assert sweep_parts(root, tok, n) == (set(range(n)), n + 100)
    assert adopt_run(root, "run1") == set(range(0, n, 2))
    fs.invalidate_cache()
    left = {k[len(base) + 1:] for k in fs.find(base)}
    assert left == {part_key(i, tok) for i in range(n)} | {shard_key(0), "_manifest/run"}
