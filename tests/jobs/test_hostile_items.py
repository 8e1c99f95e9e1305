"""Second fuzz round: items written by an attacker or a messy tool, run through `maskjob export`
end to end. Each one must fail alone with its reason, or export as the reference tool would -
never stop the run, never fail with an internal error of ours."""

from __future__ import annotations

import json

import cv2
import numpy as np

from jobs.cli import run
from tests.conftest import rect


def by_item(out):
    return {e["item"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text()
                                      .splitlines())}


def export(root, out, *extra):
    return run(["export", str(root), str(out), "--workers", "0", *extra])


def test_a_one_pixel_object_is_blended_into_the_human_mask(project, tmp_path):
    """A 1x1 rectangle (a click, a one-pixel bitmap) failed its item with a numpy TypeError:
    OpenCV's binding read the 1x1x3 window and the colour as two vectors (a (4, 1) float64)."""
    p = project()
    p.add("ds", "dot.png", [rect("car", 5, 7, 5, 7)])
    out = tmp_path / "out"
    assert export(p.root, out) == 0
    assert by_item(out)["dot.png"]["status"] == "ok"
    image = cv2.imread(str(p.root / "ds" / "img" / "dot.png"))
    human = cv2.imread(str(out / "supervisely" / "ds" / "masks_human" / "dot.png"))
    want = (image[7, 5].astype(np.uint16) + np.array((0, 0, 255))) >> 1  # car is #FF0000
    assert human[7, 64 + 5].tolist() == want.tolist()


def test_a_meta_of_more_classes_than_a_machine_mask_holds_exits_2_before_any_work(
        project, tmp_path, capsys):
    """70,000 classes in meta.json: every item failed with 'png takes 2-D uint8/uint16 ...
    Got uint32' (the class index map outgrew 16 bits); now one line before any work."""
    classes = [{"title": f"c{i}", "shape": "rectangle", "color": "#%06X" % (i + 1)}
               for i in range(70_000)]
    p = project(classes)
    p.add("ds", "a.png", [rect("c69999", 1, 1, 5, 5)])
    out = tmp_path / "out"
    assert export(p.root, out) == 2
    err = capsys.readouterr().err
    assert "supervisely.masks_machine" in err and "at most 65535 classes" in err
    assert not out.exists()
