"""`maskjob export --format cvat` on the CVAT fixture task: pixels equal to datumaro's export
(tests/golden/cvat, made by tests/oracles/run_datumaro_oracle.sh), subset lists and labelmap,
CVAT-style zip, task zips (with a zip-slip member), Segmentation Mask import with its errors,
and export -> import -> export reproducing identical PNGs. PNGs are compared decoded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / "tests" / "data" / "cvat_task"
GOLDEN = REPO / "tests" / "golden" / "cvat"
ORACLE_VENV = Path(os.environ.get("MASKJOB_ORACLE_CACHE", Path.home() / ".cache" / "maskjob")
                   ) / "datumaro-1.13.12"


def export(inp, out, *extra) -> int:
    return run(["export", str(inp), str(out), "--format", "cvat", "--workers", "0", *extra])


def pixels(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {json.loads(x)["item"]: json.loads(x) for x in lines}


def pngs(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*.png"))


def labelmap_lines(path: Path) -> list[str]:
    return [x for x in path.read_text().splitlines() if x and not x.startswith("#")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = {}
    for mode in ("source", "voc"):
        o = tmp_path_factory.mktemp(mode)
        assert export(TASK, o, "--set", f"cvat.colors={mode}",
                      "--set", "cvat.instance_overflow=wrap") == 0
        out[mode] = o
    return out


def test_fixture_unchanged_since_goldens():
    sys.path.insert(0, str(REPO / "tests" / "oracles"))
    from fixture_hash import fixture_sha256

    oracle = json.loads((GOLDEN / "ORACLE.json").read_text())
    assert oracle["datumaro"] == "1.13.12"
    assert fixture_sha256(REPO, tuple(oracle["fixture_trees"])) == oracle["fixture_sha256"]


@pytest.mark.parametrize("mode", ["source", "voc"])
def test_pixels_equal_datumaro_export(exports, mode):
    golden, ours = GOLDEN / mode, exports[mode] / "cvat"
    names = pngs(golden)
    assert len(names) == 6
    for rel in names:
        want, got = pixels(golden / rel), pixels(ours / rel)
        assert got.shape == want.shape and got.dtype == np.uint8, rel
        diff = np.argwhere((want != got).any(axis=2))
        assert diff.size == 0, f"{rel}: {len(diff)} pixels differ, first at {diff[:3].tolist()}"


@pytest.mark.parametrize("mode", ["source", "voc"])
def test_labelmap_and_subset_lists(exports, mode):
    golden, ours = GOLDEN / mode, exports[mode] / "cvat"
    got = labelmap_lines(ours / "labelmap.txt")
    if mode == "source":  # datumaro writes the colours it was given
        assert got == labelmap_lines(golden / "labelmap.txt")
    else:  # upstream datumaro leaves generated colours out; both import to the same colours
        assert [x.split(":")[0] for x in got] == [
            x.split(":")[0] for x in labelmap_lines(golden / "labelmap.txt")]
        assert got[1] == "person:128,0,0::"
    assert (ours / "labelmap.txt").read_text().startswith("# label:color_rgb:parts:actions\n")
    lists = ours / "ImageSets" / "Segmentation"
    assert (lists / "Train.txt").read_text() == (golden / "ImageSets/Segmentation/Train.txt"
                                                 ).read_text() == "dir/sub/img.with.dots\n"
    ours_default = (lists / "default.txt").read_text().splitlines()
    golden_default = (golden / "ImageSets/Segmentation/default.txt").read_text().splitlines()
    # we also list the points-only image (CVAT drops it), in plan order: sorted by item name
    # (the listing streams items sorted by (dataset, name), so plans merge-join baselines)
    assert ours_default == ["astronaut", "empty", "many/boxes300", "points_only"]
    assert set(golden_default) == set(ours_default) - {"points_only"}


def test_items_without_painted_shapes_get_background_pngs(exports):
    ours = exports["source"] / "cvat"
    for stem in ("empty", "points_only"):
        assert not (GOLDEN / "source" / "SegmentationClass" / f"{stem}.png").exists()
        assert not pixels(ours / "SegmentationClass" / f"{stem}.png").any()
        assert not pixels(ours / "SegmentationObject" / f"{stem}.png").any()


def test_manifest_facts(exports):
    items = manifest(exports["source"])
    assert {e["status"] for e in items.values()} == {"ok"}
    assert items["many/boxes300.png"]["instances"] == 300
    assert items["empty.png"]["instances"] == 0
    assert set(items["astronaut.jpg"]["class_pixels"]) <= {"person", "car", "Zebra", "tree"}


def test_more_than_255_instances_fail_that_item_only_by_default(tmp_path):
    assert export(TASK, tmp_path) == 1
    items = manifest(tmp_path)
    bad = items["many/boxes300.png"]
    assert bad["status"] == "failed" and "at most 255 instances" in bad["error"]
    assert "instance_overflow: wrap" in bad["error"]
    assert all(e["status"] == "ok" for n, e in items.items() if n != "many/boxes300.png")
    listed = (tmp_path / "cvat/ImageSets/Segmentation/default.txt").read_text().split()
    assert "many/boxes300" not in listed and "astronaut" in listed


def test_duplicate_colours_refused_before_any_work(tmp_path):
    task = tmp_path / "task"
    shutil.copytree(TASK, task)
    xml = (task / "annotations.xml").read_text().replace("#33ddff", "#fa3253")
    (task / "annotations.xml").write_text(xml)
    assert export(task, tmp_path / "out") == 2
    assert not (tmp_path / "out" / "cvat").exists()
    assert export(task, tmp_path / "out2", "--set", "cvat.colors=voc",
                  "--set", "cvat.instance_overflow=wrap") == 0


def test_cvat_zip_output_has_cvat_layout(tmp_path, exports):
    assert export(TASK, tmp_path, "--set", "cvat.zip=true",
                  "--set", "cvat.instance_overflow=wrap") == 0
    with zipfile.ZipFile(tmp_path / "cvat" / "segmentation_mask_1.1.zip") as z:
        names = z.namelist()
        assert not [n for n in names if n.endswith("/")]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert "labelmap.txt" in names and "ImageSets/Segmentation/Train.txt" in names
        assert sorted(n for n in names if n.endswith(".png")) == pngs(tmp_path / "cvat")
        for n in names:
            assert z.read(n) == (tmp_path / "cvat" / n).read_bytes(), n


def test_task_zip_input_with_zip_slip_member(tmp_path, exports):
    archive = tmp_path / "task.zip"
    xml = (TASK / "annotations.xml").read_text().replace(
        "</annotations>", '  <image id="9" name="../evil.jpg" width="4" height="4">\n'
        '    <box label="car" xtl="0" ytl="0" xbr="2" ybr="2" z_order="0"/>\n  </image>\n'
        "</annotations>")
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("annotations.xml", xml)
        for p in TASK.rglob("*"):
            if p.is_file() and p.name != "annotations.xml":
                z.write(p, p.relative_to(TASK).as_posix())
        z.writestr("../evil.jpg", b"x")
    out = tmp_path / "out"
    assert export(archive, out, "--set", "cvat.instance_overflow=wrap") == 1
    items = manifest(out)
    assert items["../evil.jpg"]["status"] == "failed"
    assert "relative" in items["../evil.jpg"]["error"]
    assert not (tmp_path / "evil.jpg").exists() and not (out.parent / "evil.png").exists()
    for rel in pngs(GOLDEN / "source"):
        assert (pixels(out / "cvat" / rel) == pixels(exports["source"] / "cvat" / rel)).all()


def test_images_are_found_beside_the_task_for_other_formats(tmp_path):
    from jobs.listing import list_input
    from jobs.storage import Root

    listing = list_input(Root(str(TASK)))
    keys = {r.name: r.image_key for r in listing.refs}
    assert keys["dir/sub/img.with.dots.jpg"] == "images/Train/dir/sub/img.with.dots.jpg"
    assert keys["astronaut.jpg"] == "images/astronaut.jpg"
    # the task's `background` label is the background, not a class (issue 12)
    assert listing.classes.names()[-1] == "unused" and listing.classes.background == (0, 0, 0)
    assert all(r.ann_inline and r.ann_inline.startswith(b"<image") for r in listing.refs)


# ---------------------------------------------------------------------------- import
def test_export_import_export_reproduces_identical_pngs(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert export(TASK, first) == 1  # boxes300 fails (> 255 instances)
    assert export(first / "cvat", second) == 0
    assert pngs(second / "cvat") == pngs(first / "cvat")
    for rel in pngs(first / "cvat"):
        assert (pixels(second / "cvat" / rel) == pixels(first / "cvat" / rel)).all(), rel
    assert (second / "cvat/labelmap.txt").read_text() == (first / "cvat/labelmap.txt"
                                                           ).read_text()
    for name in ("default.txt", "Train.txt"):
        lists = "cvat/ImageSets/Segmentation/" + name
        assert (second / lists).read_text() == (first / lists).read_text()


def test_import_from_zip_and_one_channel_masks(tmp_path):
    src = tmp_path / "src"
    (src / "SegmentationClass").mkdir(parents=True)
    (src / "SegmentationObject").mkdir()
    (src / "ImageSets" / "Segmentation").mkdir(parents=True)
    (src / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                      "cat:10,20,30::\ndog:1,2,3::\n")
    cls = np.zeros((6, 8), np.uint8)
    cls[1:3, 1:3] = 1
    cls[4:6, 4:8] = 2
    obj = (cls > 0).astype(np.uint8) + (cls == 2)
    cv2.imwrite(str(src / "SegmentationClass" / "a.png"), cls)
    cv2.imwrite(str(src / "SegmentationObject" / "a.png"), obj)
    cv2.imwrite(str(src / "SegmentationClass" / "b.png"), cls)  # class only
    (src / "ImageSets" / "Segmentation" / "train.txt").write_text("# comment\na\n\nb\n")
    archive = tmp_path / "masks.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in src.rglob("*"):
            if p.is_file():
                z.write(p, p.relative_to(src).as_posix())
    out = tmp_path / "out"
    assert export(archive, out) == 0
    c = pixels(out / "cvat/SegmentationClass/a.png")[:, :, ::-1]
    assert c[1, 1].tolist() == [10, 20, 30] and c[5, 5].tolist() == [1, 2, 3]
    o = pixels(out / "cvat/SegmentationObject/a.png")[:, :, ::-1]
    assert o[1, 1].tolist() == [128, 0, 0] and o[5, 5].tolist() == [0, 128, 0]
    assert (pixels(out / "cvat/SegmentationClass/b.png") == pixels(
        out / "cvat/SegmentationClass/a.png")).all()
    assert (out / "cvat/ImageSets/Segmentation/train.txt").read_text() == "a\nb\n"


def test_import_errors(tmp_path):
    src = tmp_path / "src"
    (src / "SegmentationClass").mkdir(parents=True)
    (src / "ImageSets" / "Segmentation").mkdir(parents=True)
    (src / "labelmap.txt").write_text("background:0,0,0::\ncat:10,20,30::\n")
    bad = np.zeros((4, 4, 3), np.uint8)
    bad[0, 0] = (3, 2, 1)  # BGR of (1, 2, 3)
    cv2.imwrite(str(src / "SegmentationClass" / "colour.png"), bad)
    cv2.imwrite(str(src / "SegmentationClass" / "index.png"), np.full((4, 4), 5, np.uint8))
    (src / "JPEGImages").mkdir()
    cv2.imwrite(str(src / "JPEGImages" / "no_masks.jpg"), np.zeros((5, 7, 3), np.uint8))
    (src / "ImageSets" / "Segmentation" / "default.txt").write_text(
        "colour\nindex\nmissing\nno_masks\n")
    out = tmp_path / "out"
    assert export(src, out) == 1
    items = manifest(out)
    assert items["no_masks.jpg"]["status"] == "ok"  # CVAT writes no PNG for empty images
    assert pixels(out / "cvat/SegmentationClass/no_masks.png").shape == (5, 7, 3)
    assert "undeclared colour (1, 2, 3)" in items["colour.png"]["error"]
    assert "SegmentationClass/colour.png" in items["colour.png"]["error"]
    assert "index 5" in items["index.png"]["error"]
    assert "missing" in items["missing.png"]["error"]
    (src / "ImageSets" / "Segmentation" / "my_train.txt").write_text("colour\n")
    assert export(src, tmp_path / "out2") == 2


@pytest.mark.skipif(not (ORACLE_VENV / "bin" / "python").exists(),
                    reason="datumaro oracle venv not set up (tests/oracles/run_datumaro_oracle.sh)")
def test_datumaro_imports_our_output_strictly(exports):
    from maskcore.formats import cvat
    from maskcore.formats.base import pack_parts

    root = exports["source"] / "cvat"
    got = subprocess.run([str(ORACLE_VENV / "bin" / "python"), "datumaro_oracle.py",
                          "--check-import", str(root)], cwd=REPO / "tests" / "oracles",
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    theirs = json.loads(got.stdout)
    classes = cvat.parse_labelmap_classes((root / "labelmap.txt").read_bytes())
    for key, anns in theirs.items():
        subset, stem = key.split("/", 1)
        data = pack_parts([(root / "SegmentationClass" / f"{stem}.png").read_bytes(),
                           (root / "SegmentationObject" / f"{stem}.png").read_bytes()])
        item = cvat.parse_item(data, classes, dataset=subset, name=stem + ".png")
        mine = sorted([classes[lab.class_index].name, k + 1, int(lab.geometry.mask.sum())]
                      for k, lab in enumerate(item.labels) if hasattr(lab.geometry, "mask"))
        assert anns == mine, key


def test_a_mask_rle_with_an_empty_piece_fails_its_item_alone(tmp_path):
    """A task whose annotations.xml has masks with an empty rle piece (doubled, leading,
    trailing ',': CVAT's importer does int() on each piece and fails) among good items: each
    of those items fails with its name and the reason in the manifest, everything else
    exports (the fixture's items, and a good mask item written the same way)."""
    task = tmp_path / "task"
    shutil.copytree(TASK, task)
    bad = {"rle_double.jpg": ("1,,2,5", "piece 2 of 4"), "rle_lead.jpg": (",3,5", "piece 1 of 3"),
           "rle_trail.jpg": ("3,5,", "piece 3 of 3")}
    rles = {**{k: v[0] for k, v in bad.items()}, "rle_good.jpg": "3,5"}
    images = "".join(
        f'  <image id="{10 + n}" name="{name}" width="4" height="2">\n'
        f'    <mask label="car" source="manual" occluded="0" rle="{rle}" left="0" top="0" '
        f'width="4" height="2" z_order="0">\n    </mask>\n  </image>\n'
        for n, (name, rle) in enumerate(rles.items()))
    xml = task / "annotations.xml"
    xml.write_text(xml.read_text().replace("</annotations>", images + "</annotations>"))
    for name in rles:
        cv2.imwrite(str(task / "images" / name), np.zeros((2, 4, 3), np.uint8))
    out = tmp_path / "out"
    assert export(task, out, "--set", "cvat.instance_overflow=wrap") == 1
    items = manifest(out)
    for name, (_, piece) in bad.items():
        assert items[name]["status"] == "failed", name
        assert f"{piece} is empty; CVAT's importer fails on it" in items[name]["error"], name
        assert not (out / "cvat/SegmentationClass" / name.replace(".jpg", ".png")).exists()
    good = {k: v for k, v in items.items() if k not in bad}
    assert len(good) == 6 and all(v["status"] != "failed" for v in good.values()), good
    mask = pixels(out / "cvat/SegmentationClass/rle_good.png")
    assert (mask.reshape(-1, 3).any(axis=1) == np.array([0, 0, 0, 1, 1, 1, 1, 1], bool)).all()
