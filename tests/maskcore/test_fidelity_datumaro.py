"""Fidelity on files WRITTEN by real datumaro 1.13.12 (issue 12), pixel for pixel.

Inputs (tests/data/fidelity/, made by tests/oracles/datumaro_fidelity.py from two real photos):
datumaro's `cvat` export (`cvat/default.xml`) and its `coco_instances` export
(`coco/annotations/instances_default.json`) of one dataset with grouped shapes, z_order, shapes
of a colourless `background` label, a rotated box, RLE masks, an ellipse (COCO only: datumaro's
CVAT writer drops ellipses), points, a polyline, a tag, attributes and an occluded flag.
Goldens (tests/golden/fidelity/): CVAT's Segmentation mask pipeline on the XML (`cvat/`), and
pycocotools' `annToMask` painted in file order on the JSON (`coco/`).

Each input runs through the real job (`jobs.cli run`, embedded, formats cvat + zarr + clearml)
and the test checks that maskjob's cvat PNGs equal CVAT's, that the zarr class and instance
arrays and the ClearML masks equal the goldens' class / instance indices, and so each other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from maskcore.palette import voc_color

zarr = pytest.importorskip("zarr")

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data" / "fidelity"
GOLDEN = TESTS / "golden" / "fidelity"
IMAGES = TESTS / "data" / "cvat_task" / "images"
STEMS = ("astronaut", "points_only")
VOC_INDEX = {voc_color(i): i for i in range(256)}


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def unpaint(img: np.ndarray, colors: dict[tuple[int, int, int], int]) -> np.ndarray:
    """Index per pixel of an RGB image through {colour: index} (KeyError on any other colour)."""
    packed = img.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1], np.int64)
    uniq, inv = np.unique(packed, return_inverse=True)
    lut = np.array([colors[(int(u) >> 16, int(u) >> 8 & 255, int(u) & 255)] for u in uniq])
    return lut[inv.ravel()].reshape(img.shape[:2])


def labelmap_colors(path: Path) -> dict[tuple[int, int, int], int]:
    lines = [x for x in path.read_text().splitlines() if x and not x.startswith("#")]
    out = {}
    for i, line in enumerate(lines):
        col = line.split(":")[1]
        out[tuple(int(v) for v in col.split(",")) if col else voc_color(i)] = i
    return out


def export(inp: Path, out: Path, input_format: str) -> dict[str, dict]:
    rc = run(["export", str(inp), str(out), "--workers", "0", "--input-format", input_format,
              "--format", "cvat", "--format", "zarr", "--format", "clearml"])
    assert rc == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return {e["item"]: e for e in lines}


def maskjob_maps(out: Path, stem: str) -> dict[str, np.ndarray]:
    """Class and instance indices of one item in every format maskjob wrote."""
    group = zarr.open_group(str(out / "zarr"), mode="r")[f"default/{stem}"]
    clearml = cv2.imread(str(out / "clearml" / "masks" / "default" / f"{stem}.png"),
                         cv2.IMREAD_UNCHANGED)
    assert (clearml[:, :, 0] == clearml[:, :, 1]).all() and (clearml[:, :, 1] ==
                                                              clearml[:, :, 2]).all()
    cvat = out / "cvat"
    return {
        "zarr_class": group["class"][:], "zarr_instance": group["instance"][:],
        "clearml_class": clearml[:, :, 0],
        "cvat_class": unpaint(rgb(cvat / "SegmentationClass" / f"{stem}.png"),
                              labelmap_colors(cvat / "labelmap.txt")),
        "cvat_instance": unpaint(rgb(cvat / "SegmentationObject" / f"{stem}.png"), VOC_INDEX),
    }


def assert_all_equal(maps: dict[str, np.ndarray], cls: np.ndarray, inst: np.ndarray) -> None:
    for name, m in maps.items():
        want = cls if name.endswith("_class") else inst
        diff = int(np.count_nonzero(m.astype(np.int64) != want))
        assert diff == 0, f"{name}: {diff} pixels differ from the golden"


@pytest.fixture(scope="module")
def cvat_run(tmp_path_factory):
    """datumaro writes `<subset>.xml`; as a task folder it is annotations.xml + images/."""
    task = tmp_path_factory.mktemp("cvat") / "task"
    (task / "images").mkdir(parents=True)
    shutil.copy(DATA / "cvat" / "default.xml", task / "annotations.xml")
    for stem in STEMS:
        shutil.copy(IMAGES / f"{stem}.jpg", task / "images")
    out = task.parent / "out"
    return out, export(task, out, "cvat")


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    shutil.copytree(DATA / "coco", root / "coco")
    (root / "coco" / "images").mkdir()
    for stem in STEMS:
        shutil.copy(IMAGES / f"{stem}.jpg", root / "coco" / "images")
    out = root / "out"
    return out, export(root / "coco" / "annotations" / "instances_default.json", out, "coco")


@pytest.mark.parametrize("stem", STEMS)
def test_cvat_xml_by_datumaro_equals_cvat_pipeline_in_every_format(cvat_run, stem):
    out, _ = cvat_run
    golden = GOLDEN / "cvat"
    for sub in ("SegmentationClass", "SegmentationObject"):
        a, b = rgb(out / "cvat" / sub / f"{stem}.png"), rgb(golden / sub / f"{stem}.png")
        assert np.array_equal(a, b), f"{sub}/{stem}: {np.count_nonzero((a != b).any(2))} px"
    cls = unpaint(rgb(golden / "SegmentationClass" / f"{stem}.png"),
                  labelmap_colors(golden / "labelmap.txt"))
    inst = unpaint(rgb(golden / "SegmentationObject" / f"{stem}.png"), VOC_INDEX)
    assert cls.any() and inst.max() >= 3
    assert_all_equal(maskjob_maps(out, stem), cls, inst)


def test_cvat_background_label_and_not_painted_kinds(cvat_run):
    out, entries = cvat_run
    lines = (out / "cvat" / "labelmap.txt").read_text().splitlines()[1:]
    assert lines == ["background:0,0,0::", "person:128,0,0::", "car:0,128,0::",
                     "tree:128,128,0::"]  # one background line, colours as datumaro's
    assert labelmap_colors(out / "cvat" / "labelmap.txt") == labelmap_colors(
        GOLDEN / "cvat" / "labelmap.txt")
    labels = json.loads((out / "clearml" / "mask_labels.json").read_text())["_all_"]
    assert [v["labels"] for v in labels] == [["background"], ["person"], ["car"], ["tree"]]
    assert entries["astronaut.jpg"]["instances"] == 7  # 2 groups, each one instance


def test_cvat_kinds_no_mask_shows_are_counted():
    """What the writers hand the manifest (`ItemOutput.not_painted`) for datumaro's XML."""
    from maskcore.formats import cvat, cvat_masks
    from maskcore.formats.base import ItemContext

    data = (DATA / "cvat" / "default.xml").read_bytes()
    classes = cvat.parse_classes(data)
    got = {}
    for element in data.split(b"<image ")[1:]:
        element = b"<image " + element[:element.index(b"</image>") + 8]
        name = element.split(b'name="')[1].split(b'"')[0].decode()
        item = cvat.parse_item(element, classes, dataset="default", name=name)
        got[name] = cvat_masks.write_item(ItemContext(item, classes, rule=cvat.RULE),
                                          cvat_masks.CvatOptions()).not_painted
    assert got == {"astronaut.jpg": {"occluded": 1, "points": 3, "polyline": 1, "tag": 1},
                   "points_only.jpg": {"attribute": 1, "points": 1}}


@pytest.mark.parametrize("stem", STEMS)
def test_coco_json_by_datumaro_equals_pycocotools_in_every_format(coco_run, stem):
    out, entries = coco_run
    cls = cv2.imread(str(GOLDEN / "coco" / f"{stem}.class.png"), cv2.IMREAD_UNCHANGED)
    inst = cv2.imread(str(GOLDEN / "coco" / f"{stem}.instance.png"), cv2.IMREAD_UNCHANGED)
    assert cls.any()
    assert_all_equal(maskjob_maps(out, stem), cls, inst)
    names = ["person", "car", "tree"]
    counts = np.bincount(cls.ravel(), minlength=4)
    assert entries[f"{stem}.jpg"]["class_pixels"] == {
        names[i - 1]: int(c) for i, c in enumerate(counts) if i and c}
