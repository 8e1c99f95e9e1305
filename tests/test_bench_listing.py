"""benchmarks/bench_listing.py --links: a Supervisely project of hard links lists exactly as
the same project of real files (same items, keys and problems; only the tags repeat)."""

from __future__ import annotations

import os
import sys

import pytest

from jobs.listing import list_input
from jobs.storage import Root

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import bench_listing


def _refs(path: str) -> list[tuple]:
    with list_input(Root(path), "supervisely") as listing:
        return [(r.dataset, r.name, r.ann_key, r.image_key, r.problem, r.ann_tag, r.image_tag)
                for r in listing.iter_refs()]


@pytest.fixture
def small_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_listing, "LINKS_PER_INODE", 7)  # several source inodes
    monkeypatch.setattr(bench_listing, "LINKS", True)


def test_links_list_like_files(tmp_path, small_links, monkeypatch) -> None:
    n = 53  # not a multiple of the datasets nor of the links per inode
    linked = str(tmp_path / "linked")
    bench_listing.gen_supervisely(linked, n)
    monkeypatch.setattr(bench_listing, "LINKS", False)
    plain = str(tmp_path / "plain")
    bench_listing.gen_supervisely(plain, n)

    got, want = _refs(linked), _refs(plain)
    assert len(got) == n
    assert [r[:5] for r in got] == [r[:5] for r in want]  # items, keys, problems
    assert all(r[4] is None for r in got)
    # the project holds only the links (the sources sit beside it, never listed)
    assert sorted(os.listdir(linked)) == sorted(os.listdir(plain))
    assert os.path.isdir(linked + ".src")
    img = os.path.join(linked, "ds0", "img")
    st = [os.stat(os.path.join(img, f)) for f in sorted(os.listdir(img))]
    assert all(s.st_nlink > 1 for s in st)
    assert len({s.st_ino for s in st}) == -(-len(st) // 7)  # one inode per 7 names
    with open(os.path.join(linked, "ds0", "ann", "img_00000000.jpg.json"), "rb") as f:
        assert f.read() == b'{"size": {"width": 4, "height": 4}, "objects": []}'
