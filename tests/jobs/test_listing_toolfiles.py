"""The input listings on files WRITTEN by real datumaro (1.13.12): messy names (spaces, '(',
unicode NFC/NFD, astral and fullwidth characters, names whose byte / code point / natural orders
differ, dots, a leading dot, nested folders, case pairs, 200-character names, one stem with two
extensions in two subsets), three subsets, images without annotations, polygons, crowd RLE
masks, boxes, groups, an image with 300 instances and 300 labels.

Inputs: tests/data/toolfiles/ (`tests/oracles/run_datumaro_oracle.sh --toolfiles`, items in
CVAT's default lexicographical frame order). A larger set (3000 items) is written at test time
when the oracle venv exists, skipped otherwise. For each file: which path the listing takes
(COCO's in-order merge, the CVAT XML's in-order spool), and that the refs (every field), count
and warnings equal those of the careful path (SQLite join / sorted index)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from jobs import listing, listing_coco, listing_cvat
from jobs.listing import list_input
from jobs.storage import Root
from tests.jobs.test_listing_coco import both

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests/data/toolfiles"
VENV = Path(os.environ.get("MASKJOB_ORACLE_CACHE", Path.home() / ".cache/maskjob")) / \
    "datumaro-1.13.12"


def staged(src: Path, dst: Path) -> Path:
    """A copy of a generated set with every image file it names (the listings read keys only)."""
    shutil.copytree(src / "coco", dst / "coco")
    shutil.copytree(src / "cvat", dst / "cvat")
    for line in (src / "images.txt").read_text(encoding="utf-8").splitlines():
        key = line.split("\t")[0]
        for top in ("coco/images", "cvat/images"):
            (dst / top / key).parent.mkdir(parents=True, exist_ok=True)
            (dst / top / key).write_bytes(b"x")
    return dst


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return staged(DATA, tmp_path_factory.mktemp("toolfiles"))


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    if not (VENV / "bin/python").exists():
        pytest.skip(f"no datumaro oracle venv at {VENV}")
    out = tmp_path_factory.mktemp("toolfiles_big")
    subprocess.run(["nice", "-n", "10", "bash", str(REPO / "tests/oracles/run_datumaro_oracle.sh"),
                    "--toolfiles", "--items", "3000", "--out", str(out / "gen")],
                   check=True, capture_output=True)
    return staged(out / "gen", out / "staged")


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    if not (VENV / "bin/python").exists():
        pytest.skip(f"no datumaro oracle venv at {VENV}")
    out = tmp_path_factory.mktemp("toolfiles_voc") / "gen"
    subprocess.run(["nice", "-n", "10", "bash", str(REPO / "tests/oracles/run_datumaro_oracle.sh"),
                    "--toolfiles", "--voc", "--out", str(out)], check=True, capture_output=True)
    return out


def cvat_listing(url: Path, monkeypatch, *, careful: bool) -> tuple[object, ...]:
    """(refs, count, whether the items were spooled in order) of a CVAT XML listing;
    `careful` marks them out of order from the first item (sorted index)."""
    rows, ordered = listing_cvat._task_rows, []

    def spy(root, key, found, by_file, order, *rest):
        if careful:
            order[0] = False
        yield from rows(root, key, found, by_file, order, *rest)
        ordered.append(order[0])

    with monkeypatch.context() as m:
        m.setattr(listing_cvat, "_task_rows", spy)
        with list_input(Root(str(url)), "cvat") as got:
            return got.refs, got.count, all(ordered)


def orders(url: Path, monkeypatch) -> dict[str, dict[str, bool]]:
    """`_CocoFile.increasing` of each file of a COCO listing, by dataset."""
    load, seen = listing_coco._CocoFile.load, {}

    def spy(self, spool):
        n = load(self, spool)
        seen[self.dataset] = dict(self.increasing)
        return n

    with monkeypatch.context() as m:
        m.setattr(listing_coco._CocoFile, "load", spy)
        with list_input(Root(str(url)), "coco") as got:
            assert got.count
    return seen


@pytest.mark.parametrize("which", ["small", "big"])
def test_datumaro_coco_equals_the_join(which, request, monkeypatch):
    root = request.getfixturevalue(which)
    refs, count, _root, warnings, merged = both(root / "coco", monkeypatch)
    assert count == len(refs) and not [r.problem for r in refs if r.problem]
    assert {r.dataset for r in refs} == {"train", "val", "test (hold-out)", "train-extra"}
    assert warnings == []
    got = orders(root / "coco", monkeypatch)
    # datumaro writes the images in frame order (names increase) with image ids 1, 2, ...
    # over the subsets, but keyed by item id: train's `img.jpg` (item `img`) takes its id
    # first, so val's `img.png` repeats that smaller id and val's ids do not increase.
    # Stems compared as `stem + "."` (the names' order): 'img (1).jpg' before 'img.jpg' is
    # in order; 'a.b.jpg' before 'a.jpg' (stems 'a.b' > 'a') is not
    if which == "small":
        assert got["val"] == {"idk": False, "stem": True, "name": True, "ann": False}
        assert got["train"] == {"idk": True, "stem": False, "name": True, "ann": True}
        assert all(got["train-extra"].values())
    assert all(o["name"] for o in got.values())
    assert merged == any(all(o.values()) for o in got.values())


def test_datumaro_cvat_xml_equals_the_sorted_index(small, monkeypatch):
    fast = cvat_listing(small / "cvat", monkeypatch, careful=False)
    careful = cvat_listing(small / "cvat", monkeypatch, careful=True)
    assert fast[:2] == careful[:2] and fast[2] and not careful[2]


def test_datumaro_segmentation_mask_listing(voc):
    """datumaro's `voc_segmentation` (CVAT's Segmentation mask 1.1 exporter): every listed id is
    an item of its subset, named `<id>.png`, with its two PNGs; an id without masks (no
    annotation, boxes only, or a name with a leading space) fails for want of a size until its
    image is in JPEGImages/."""
    lists = {p.stem: p.read_text(encoding="utf-8").splitlines()
             for p in (voc / "voc/ImageSets/Segmentation").glob("*.txt")}
    # datumaro writes the id ' 74' as it is, and reads it (as maskjob does) stripped: '74',
    # whose PNGs do not exist (SegmentationClass/ 74.png does)
    want = sorted((s, i.strip() + ".png") for s, ids in lists.items() for i in ids)
    assert any(i != i.strip() for ids in lists.values() for i in ids)
    sizes = {}
    for line in (voc / "images.txt").read_text("utf-8").splitlines():
        key, h, w = line.split("\t")
        subset, _, name = key.partition("/")
        sizes[f"{subset}/{name.rsplit('.', 1)[0].strip()}"] = (int(w), int(h))

    def listed() -> list[listing.ItemRef]:
        with list_input(Root(str(voc / "voc")), "cvat") as got:
            assert got.count == len(want)
            return got.refs

    refs = listed()
    assert sorted((r.dataset, r.name) for r in refs) == want
    bare = []
    for r in refs:
        key = r.name[:-4]
        if (voc / "voc/SegmentationClass" / r.name).exists():
            assert r.problem is None and r.ann_key == f"SegmentationClass/{r.name}"
            assert r.ann_more == (f"SegmentationObject/{r.name}",)
            with Image.open(voc / "voc" / r.ann_key) as im:
                assert im.size == sizes[f"{r.dataset}/{key}"]
        else:
            assert "to know the size of this item without annotations" in r.problem
            bare.append((r.dataset, key))
    assert bare
    for ds, key in bare:  # the images CVAT would have exported with them
        path = voc / "voc/JPEGImages" / (key + ".jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", sizes[f"{ds}/{key}"]).save(path)
    assert [r.problem for r in listed() if r.problem] == []
