"""Pixels of maskjob's real export on files WRITTEN by real datumaro 1.13.12 at scale
(tests/data/toolfiles: 151 images in 4 subsets, 300 labels, messy names, groups, holed and
crowd RLE masks, boxes, rotated boxes, z_order, occluded flags, a text attribute, polylines and
points, an image with 300 instances, images without annotations, one item id in two subsets),
against what the vendors' own pipelines make of the same files.

Goldens (tests/golden/toolfiles/, `run_datumaro_oracle.sh --toolfiles --goldens`):
- `cvat/`: CVAT's Segmentation mask 1.1 export of each `<subset>.xml` (datumaro_oracle's CVAT
  pipeline: the fork's float64 points, polygons_to_masks, boxes_to_masks,
  merge_instance_segments, voc_segmentation; datumaro's labels have no colours, so VOC
  colours by labelmap line);
- `coco/`: pycocotools' `annToMask` of every annotation of each `instances_<subset>.json`, in
  file order (class index, annotation number; 16-bit).
Each subset's masks are stacked into one PNG per kind; `index.json` gives each image's rows.

Both inputs run through `jobs.cli run export --format cvat --format zarr` (ClearML masks cannot
hold 300 classes: refused before work).
Both with `cvat.instance_overflow=wrap` (CVAT's aliasing of instances past 255).

Known differences, pinned here pixel for pixel rather than skipped:
- classes past 255: CVAT's `paint_mask` casts the class map to uint8, so labelmap line k >= 256
  is painted in line k mod 256's colour (c255 as background, c256 as c000, ...), although its
  labelmap.txt lists a distinct colour for line k; maskjob paints line k's own colour (what the
  labelmap says, and what an importer maps back to the right class);
- an item id in two subsets (`img` of val/img.png and test (hold-out)/img.jpg): the
  Segmentation mask layout has one `SegmentationClass/img.png` for both; maskjob fails both
  items (no silent overwrite), CVAT's one tree would keep whichever was written last;
- images nothing paints: CVAT writes no PNGs (and lists the image only if it has no annotation
  at all, not if it has only points or polylines); maskjob writes all-background PNGs and lists
  every image it writes.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from maskcore.palette import voc_color
from tests.jobs.test_listing_toolfiles import DATA, staged
from tests.maskcore.test_fidelity_datumaro import VOC_INDEX, labelmap_colors, rgb, unpaint
from tests.oracles.fixture_hash import fixture_sha256

zarr = pytest.importorskip("zarr")

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "toolfiles"
INDEX = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))
SUBSETS = sorted(INDEX["cvat"])
# CVAT's PNG palettes: paint_mask builds 256 entries and casts the index map to uint8 (classes:
# datumaro's colourless labelmap lines get the VOC colour of the line; instances: VOC colours)
CVAT_OBJECT_RGB = np.tile(np.array([voc_color(k) for k in range(256)], np.uint8), (256, 1))
CVAT_CLASS_RGB = CVAT_OBJECT_RGB[:302]


def item_id(name: str) -> str:
    return name.rsplit(".", 1)[0]


def clashing(fmt: str) -> set[tuple[str, str]]:
    """(subset, name) of the items whose Segmentation mask id is in another subset too."""
    ids = Counter(item_id(r[0]) for rows in INDEX[fmt].values() for r in rows)
    return {(s, r[0]) for s, rows in INDEX[fmt].items() for r in rows if ids[item_id(r[0])] > 1}


def export(inp: Path, dest: Path, fmt: str, *formats: str) -> tuple[int, Path, dict]:
    rc = run(["export", str(inp), str(dest), "--workers", "0", "--input-format", fmt,
              *(a for f in formats for a in ("--format", f)),
              "--set", "cvat.instance_overflow=wrap"])
    lines = [json.loads(x) for x in (dest / "manifest.jsonl").read_text().splitlines()]
    return rc, dest, {(e["dataset"], e["item"]): e for e in lines}


def only_subsets(src: Path, dst: Path, fmt: str, subsets: set[str]) -> Path:
    """A copy of a staged input with only these subsets' annotation files and images."""
    shutil.copytree(src, dst)
    for path in dst.glob("*.xml" if fmt == "cvat" else "annotations/*.json"):
        if path.stem.removeprefix("instances_") not in subsets:
            path.unlink()
    for folder in (dst / "images").iterdir():
        if folder.name not in subsets:
            shutil.rmtree(folder)
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{input: (output, manifest by (dataset, item))} of the export to cvat + zarr, and of an
    export to zarr alone of the subsets holding the id in two subsets (no clash there)."""
    root = staged(DATA, tmp_path_factory.mktemp("toolfiles"))
    out, alone = {}, {}
    for fmt in ("cvat", "coco"):
        rc, *out[fmt] = export(root / fmt, root / f"out_{fmt}", fmt, "cvat", "zarr")
        assert rc == 1  # the two items of one id fail, every other is written
        inp = only_subsets(root / fmt, root / f"{fmt}_clash", fmt,
                           {s for s, _ in clashing(fmt)})
        rc, *alone[fmt] = export(inp, root / f"out_{fmt}_clash", fmt, "zarr")
        assert rc == 0
    return out, root, alone


def written(entries: dict, fmt: str, subset: str):
    """The rows of the subset's written items (asserting which failed, and why)."""
    for row in INDEX[fmt][subset]:
        entry = entries[(subset, row[0])]
        if (subset, row[0]) in clashing(fmt):
            assert entry["status"] == "failed" and "no silent overwrite" in entry["error"]
            continue
        assert entry["status"] == "ok", entry["error"]
        yield row


def test_goldens_cover_every_item_and_the_fixture_is_unchanged():
    oracle = json.loads((GOLDEN / "ORACLE.json").read_text())
    assert oracle["datumaro"] == "1.13.12"
    assert fixture_sha256(REPO, tuple(oracle["fixture_trees"])) == oracle["fixture_sha256"]
    # the goldens are CVAT's fork (float64 points); upstream datumaro (float32 points) paints
    # some pixels otherwise, so equality with them is equality with CVAT, not with upstream
    assert sum(oracle["upstream_float32_points_differ_px"].values()) > 0
    listed = (DATA / "images.txt").read_text(encoding="utf-8").splitlines()
    for fmt in ("cvat", "coco"):
        got = sorted(f"{s}/{r[0]}\t{r[1]}\t{r[2]}" for s, rows in INDEX[fmt].items() for r in rows)
        assert got == sorted(listed)
    assert clashing("cvat") == clashing("coco") == {("val", "img.png"),
                                                    ("test (hold-out)", "img.jpg")}
    # (has PNGs, in CVAT's list): both kinds of unpainted image occur, every painted one listed
    kinds = Counter((r[3] >= 0, r[4]) for rows in INDEX["cvat"].values() for r in rows)
    assert kinds[(False, 0)] and kinds[(False, 1)] and not kinds[(True, 0)]


def test_labelmap_lines_are_datumaros(runs):
    out = runs[0]["cvat"][0]
    ours = [x.split(":") for x in (out / "cvat/labelmap.txt").read_text().splitlines()[1:]]
    theirs = [x.split(":") for x in (GOLDEN / "cvat/labelmap.txt").read_text().splitlines()[1:]]
    assert [x[0] for x in ours] == [x[0] for x in theirs] and len(ours) == 301
    # datumaro's colourless lines get generate_colormap(301): the VOC colour of the line
    assert all(c == "" for _, c, *_ in theirs)
    assert [tuple(map(int, c.split(","))) for _, c, *_ in ours] == [voc_color(k)
                                                                   for k in range(301)]


@pytest.mark.parametrize("subset", SUBSETS)
def test_cvat_xml_equals_cvats_segmentation_mask_export_in_cvat_and_zarr(runs, subset):
    out, entries = runs[0]["cvat"]
    cvat = out / "cvat"
    group = zarr.open_group(str(out / "zarr"), mode="r")
    want_cls = rgb(GOLDEN / "cvat" / f"{subset}.class.png")
    want_obj = rgb(GOLDEN / "cvat" / f"{subset}.object.png")
    colors = labelmap_colors(cvat / "labelmap.txt")
    painted, ids = 0, []
    for name, h, w, top, listed in written(entries, "cvat", subset):
        ids.append(item_id(name))
        cls = rgb(cvat / "SegmentationClass" / f"{item_id(name)}.png")
        obj = rgb(cvat / "SegmentationObject" / f"{item_id(name)}.png")
        assert cls.shape == obj.shape == (h, w, 3), name
        if top < 0:  # nothing painted: CVAT writes no PNG, maskjob an all-background one;
            # CVAT lists the image if it has no annotation at all, not if it has only kinds no
            # mask shows (points, polylines); maskjob lists every image it writes
            assert not cls.any() and not obj.any(), name
            assert listed == (not entries[(subset, name)]["not_painted"]), name
            continue
        assert listed, name
        painted += 1
        assert np.array_equal(obj, want_obj[top:top + h, :w]), name
        k = unpaint(cls, colors)
        low = k < 256
        assert np.array_equal(cls[low], want_cls[top:top + h, :w][low]), name
        assert np.array_equal(CVAT_CLASS_RGB[k], want_cls[top:top + h, :w]), name
        arrays = group[f"{subset}/{item_id(name)}"]
        assert np.array_equal(arrays["class"][:], k), name
        assert np.array_equal(CVAT_OBJECT_RGB[arrays["instance"][:]], obj), name
    assert painted >= 25
    lines = (cvat / "ImageSets/Segmentation" / f"{subset}.txt").read_text("utf-8").splitlines()
    assert sorted(lines) == sorted(ids)


def test_classes_past_255_alias_in_cvat_but_not_in_maskjob(runs):
    out, entries = runs[0]["cvat"]
    name, h, w, top, _ = next(r for r in INDEX["cvat"]["train-extra"] if r[0] == "img2.jpg")
    assert entries[("train-extra", name)]["instances"] == 300
    cls = rgb(out / "cvat/SegmentationClass/img2.png")
    k = unpaint(cls, labelmap_colors(out / "cvat/labelmap.txt"))
    want = rgb(GOLDEN / "cvat/train-extra.class.png")[top:top + h, :w]
    high = k >= 256
    assert k.max() == 300 and high.sum() > 100
    assert (cls[high] != want[high]).any(axis=1).all()
    v = int(k[high].min())  # e.g. line 258 (c257) painted as line 2 (c001)
    assert (want[k == v] == voc_color(v - 256)).all() and (cls[k == v] == voc_color(v)).all()


@pytest.mark.parametrize("subset", SUBSETS)
def test_coco_json_equals_pycocotools_in_cvat_and_zarr(runs, subset):
    out, entries = runs[0]["coco"]
    want_cls = cv2.imread(str(GOLDEN / "coco" / f"{subset}.class.png"), cv2.IMREAD_UNCHANGED)
    want_inst = cv2.imread(str(GOLDEN / "coco" / f"{subset}.instance.png"), cv2.IMREAD_UNCHANGED)
    assert want_cls.dtype == want_inst.dtype == np.uint16
    colors = labelmap_colors(out / "cvat" / "labelmap.txt")
    group = zarr.open_group(str(out / "zarr"), mode="r")
    for name, h, w, top in written(entries, "coco", subset):
        cls, inst = want_cls[top:top + h, :w], want_inst[top:top + h, :w]
        arrays = group[f"{subset}/{item_id(name)}"]
        assert np.array_equal(arrays["class"][:], cls), name
        assert np.array_equal(arrays["instance"][:], inst), name
        png = f"{item_id(name)}.png"
        got_cls = unpaint(rgb(out / "cvat/SegmentationClass" / png), colors)
        got_inst = unpaint(rgb(out / "cvat/SegmentationObject" / png), VOC_INDEX)
        assert np.array_equal(got_cls, cls) and np.array_equal(got_inst, inst & 0xFF), name


def test_clearml_refuses_300_classes_before_work(runs, tmp_path):
    root = runs[1]
    rc = run(["export", str(root / "coco"), str(tmp_path / "out"), "--workers", "0",
              "--input-format", "coco", "--format", "clearml"])
    assert rc == 2 and not (tmp_path / "out" / "manifest.jsonl").exists()


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_an_id_in_two_subsets_equals_the_goldens_where_it_does_not_clash(runs, fmt):
    """The two items of id `img` (val/img.png, test (hold-out)/img.jpg; in COCO, val's image
    repeats the other subset's image id) fail the cvat output; zarr alone writes both."""
    out, entries = runs[2][fmt]
    group = zarr.open_group(str(out / "zarr"), mode="r")
    assert len(entries) == sum(len(INDEX[fmt][s]) for s, _ in clashing(fmt))
    kinds = ("class", "object") if fmt == "cvat" else ("class", "instance")
    for subset, name in sorted(clashing(fmt)):
        assert entries[(subset, name)]["status"] == "ok"
        h, w, top = next(r[1:4] for r in INDEX[fmt][subset] if r[0] == name)
        arrays = group[f"{subset}/{item_id(name)}"]
        got = (arrays["class"][:], arrays["instance"][:])
        assert got[0].any() and top >= 0
        if fmt == "cvat":
            got = (CVAT_CLASS_RGB[got[0]], CVAT_OBJECT_RGB[got[1]])
        for kind, mine in zip(kinds, got, strict=True):
            png = cv2.imread(str(GOLDEN / fmt / f"{subset}.{kind}.png"), cv2.IMREAD_UNCHANGED)
            want = png[top:top + h, :w, ::-1] if fmt == "cvat" else png[top:top + h, :w]
            assert np.array_equal(mine, want), (subset, name, kind)
