"""`maskjob export` of COCO instances input (tests/data/coco_small, CVAT's COCO layout): every
way of pointing at the JSON and its images, bad items failing alone with their reason, pixels
equal to pycocotools' annToMask composited in annotation order, and --incremental."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from jobs.cli import run
from tests.conftest import rect

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "coco_small"
JSON_NAME = "instances_default.json"
GOOD = {"street/a.jpg", "b.png", "c.png"}
FAILED = {"d.png": "category_id declared", "e.png": "finite coordinates",
          "f.png": "RLE 'size'", "../evil.jpg": "relative to the images folder"}



def export(inp, out, *extra) -> int:
    return run(["export", str(inp), str(out), "--workers", "0", *extra])


def manifest(out: Path) -> dict[str, dict]:
    return {e["item"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text()
                                      .splitlines())}


def class_mask(out: Path, item: str) -> np.ndarray:
    stem = item.rsplit(".", 1)[0]
    m = cv2.imread(str(out / "clearml/masks/default" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    return m[:, :, 0]


def oracle_masks() -> dict[str, np.ndarray]:
    """pycocotools' annToMask of every annotation, painted in file order (later on top) with
    class index = position of the category + 1."""
    doc = json.loads((FIXTURE / "annotations" / JSON_NAME).read_text())
    api = COCO()
    api.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    index = {c["id"]: i + 1 for i, c in enumerate(doc["categories"])}
    out = {}
    for im in doc["images"]:
        if im["file_name"] not in GOOD:
            continue
        canvas = np.zeros((im["height"], im["width"]), np.uint8)
        for a in doc["annotations"]:
            if a["image_id"] == im["id"]:
                if not a["segmentation"]:  # bbox only: pycocotools' frBbox
                    x, y, w, h = a["bbox"]
                    a = {**a, "segmentation": [[x, y, x, y + h, x + w, y + h, x + w, y]]}
                canvas[api.annToMask(a) > 0] = index[a["category_id"]]
        out[im["file_name"]] = canvas
    return out


def test_export_matches_ann_to_mask_and_bad_items_fail_alone(tmp_path):
    out = tmp_path / "out"
    assert export(FIXTURE, out, "--format", "clearml", "--format", "zarr",
                  "--format", "supervisely") == 1
    items = manifest(out)
    assert set(items) == GOOD | set(FAILED)
    for name, needle in FAILED.items():
        assert items[name]["status"] == "failed" and needle in items[name]["error"], name
    for name, expected in oracle_masks().items():
        assert items[name]["status"] == "ok"
        assert np.array_equal(class_mask(out, name), expected), name
        counts = np.bincount(expected.ravel(), minlength=5)
        names = ["person", "car", "tree", "sky"]
        assert items[name]["class_pixels"] == {names[i - 1]: int(c)
                                               for i, c in enumerate(counts) if i and c}
    assert items["street/a.jpg"]["instances"] == 3 and items["c.png"]["instances"] == 0
    # sub-folders of file names are kept, and nothing escapes OUTPUT
    assert (out / "clearml/masks/default/street/a.png").exists()
    assert (out / "supervisely/default/img/street_a.jpg").exists()
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    assert not any("evil" in f or f.startswith("..") for f in files)
    assert not (tmp_path / "evil.jpg").exists()
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["classes"][2] == {"index": 3, "name": "tree", "color": [128, 128, 0]}
    assert run(["verify", str(out)]) == 0


def copy_layout(tmp_path: Path, json_dir: str, images_dir: str) -> Path:
    root = tmp_path / "in"
    (root / json_dir).mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "annotations" / JSON_NAME, root / json_dir / JSON_NAME)
    shutil.copytree(FIXTURE / "images", root / images_dir)
    return root


@pytest.mark.parametrize("json_dir, images_dir, arg", [
    ("annotations", "images", "."),  # folder holding annotations/ and images/
    ("annotations", "images", "annotations"),  # the annotations folder: images beside it
    ("annotations", "images", f"annotations/{JSON_NAME}"),  # the JSON itself
    (".", "images", "."),  # JSON at the top, images/ beside it
    (".", "images", JSON_NAME),
    ("annotations", "images/default", "."),  # datumaro: images/<subset>/
])
def test_input_layouts(tmp_path, json_dir, images_dir, arg):
    root = copy_layout(tmp_path, json_dir, images_dir)
    out = tmp_path / "out"
    assert export(root / arg, out, "--format", "supervisely") == 1  # needs the images
    items = manifest(out)
    assert {k for k, e in items.items() if e["status"] == "ok"} == GOOD
    assert (out / "supervisely/default/masks_human/street_a.png").exists()


def test_images_url_from_the_config(tmp_path):
    root = copy_layout(tmp_path, "annotations", "elsewhere/pictures")
    out = tmp_path / "out"
    assert export(root, out, "--format", "supervisely") == 1
    assert all("Expected the input object to exist" in manifest(out)[n]["error"]
               or "image" in manifest(out)[n]["error"] for n in GOOD)
    url = (root / "elsewhere/pictures").as_uri()
    out2 = tmp_path / "out2"
    assert export(root, out2, "--format", "supervisely", "--format", "clearml",
                  "--set", f"images_url={url}") == 1
    assert {k for k, e in manifest(out2).items() if e["status"] == "ok"} == GOOD
    frame = json.loads((out2 / "clearml/frames.jsonl").read_text().splitlines()[0])
    assert frame["sources"][0]["uri"] == url + "/b.png"


def test_images_url_is_refused_for_a_supervisely_project(project, tmp_path):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    assert export(p.root, tmp_path / "out", "--set", "images_url=/tmp/x") == 2


def test_several_instances_jsons_are_datasets(tmp_path):
    # issue 12 item 6: every instances_*.json of a folder is a dataset of one run
    root = copy_layout(tmp_path, "annotations", "images")
    shutil.copy(root / "annotations" / JSON_NAME, root / "annotations" / "instances_other.json")
    assert export(root, tmp_path / "out", "--format", "zarr") == 1  # the bad items fail alone
    lines = [json.loads(x) for x in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert {(e["dataset"], e["item"]) for e in lines if e["status"] == "ok"} == {
        (ds, name) for ds in ("default", "other") for name in GOOD}
    (root / "annotations" / "instances_other.json").rename(root / "annotations" / "captions.json")
    assert export(root, tmp_path / "out2", "--format", "zarr") == 1  # one instances_*.json
    assert {e["dataset"] for e in manifest(tmp_path / "out2").values()} == {"default"}
    (root / "annotations" / JSON_NAME).rename(root / "annotations" / "other.json")
    assert export(root, tmp_path / "out3", "--format", "zarr") == 2  # no instances_*: choose


def test_unreadable_coco_file_is_an_input_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.json").write_text('{"images": []}')
    assert export(tmp_path / "in", tmp_path / "out", "--format", "zarr") == 2
    assert run(["validate", str(FIXTURE)]) == 1  # bad items named, no cluster


def test_incremental_reexports_only_changed_items(tmp_path):
    root = copy_layout(tmp_path, "annotations", "images")
    out = tmp_path / "out"
    args = ("--format", "clearml", "--format", "zarr")
    assert export(root, out, *args) == 1
    path = root / "annotations" / JSON_NAME
    doc = json.loads(path.read_text())
    doc["annotations"][3]["category_id"] = 5  # b.png: the car becomes a tree
    path.write_text(json.dumps(doc))
    assert export(root, out, *args, "--incremental") == 1
    items = manifest(out)
    assert items["b.png"]["status"] == "ok" and "tree" in items["b.png"]["class_pixels"]
    assert items["street/a.jpg"]["status"] == items["c.png"]["status"] == "unchanged"
    frames = (out / "clearml/frames.jsonl").read_text().splitlines()
    assert len(frames) == 3 and '"tree"' in next(f for f in frames if '"b.png"' in f)


def test_zarr_without_root_consolidation(tmp_path):
    import warnings

    import zarr

    out = tmp_path / "out"
    assert export(FIXTURE, out, "--format", "zarr", "--set", "zarr.consolidated=false") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(str(out / "zarr"), mode="r")
    assert g.metadata.consolidated_metadata is None
    assert sorted(k for k, _ in g.members(max_depth=None)) == [
        "default", "default/b", "default/b/class", "default/b/instance", "default/c",
        "default/c/class", "default/c/instance", "default/street", "default/street/a",
        "default/street/a/class", "default/street/a/instance"]
    assert g["default/street/a"].metadata.consolidated_metadata is not None  # per item
    assert not (out / "zarr/zarr.json.consolidating").exists()
