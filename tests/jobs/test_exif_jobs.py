"""A job over EXIF-oriented phone photos, per input format: the item whose annotation has the
size its tool would have stored exports, and its human mask shows the pixels the tool decodes
(Supervisely: EXIF applied, as `sly.image.read`; CVAT XML / COCO: as stored, as datumaro)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from tests.conftest import exif_jpeg

W, H = 48, 32  # stored size; orientations 5-8 show it as 32x48


def make_input(root: Path, fmt: str, data: bytes, size: tuple[int, int]) -> None:
    w, h = size
    if fmt == "supervisely":
        (root / "ds" / "img").mkdir(parents=True)
        (root / "ds" / "ann").mkdir()
        (root / "meta.json").write_text(json.dumps({"classes": [
            {"title": "car", "shape": "rectangle", "color": "#FF0000"}], "tags": []}))
        (root / "ds" / "img" / "a.jpg").write_bytes(data)
        (root / "ds" / "ann" / "a.jpg.json").write_text(json.dumps({
            "size": {"width": w, "height": h}, "tags": [], "objects": [
                {"classTitle": "car", "tags": [],
                 "points": {"exterior": [[2, 2], [9, 9]], "interior": []}}]}))
        return
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(data)
    if fmt == "cvat":
        (root / "annotations.xml").write_text(
            '<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>'
            "<meta><task><labels><label><name>car</name><color>#ff0000</color></label>"
            f'</labels></task></meta><image id="0" name="a.jpg" width="{w}" height="{h}">'
            '<box label="car" occluded="0" xtl="2" ytl="2" xbr="9" ybr="9" z_order="0"/>'
            "</image></annotations>")
    else:
        (root / "annotations").mkdir()
        (root / "annotations" / "instances_default.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [], "bbox": [2, 2, 7, 7]}],
            "categories": [{"id": 1, "name": "car"}]}))


@pytest.mark.parametrize("fmt", ["supervisely", "cvat", "coco"])
@pytest.mark.parametrize("orientation", [3, 6])
def test_an_exif_photo_exports_as_its_tool_decodes_it(tmp_path, fmt, orientation):
    data = exif_jpeg(orientation)
    buf = np.frombuffer(data, np.uint8)
    want = cv2.imdecode(buf, cv2.IMREAD_COLOR if fmt == "supervisely"  # sly.image.read
                        else cv2.IMREAD_UNCHANGED)  # datumaro load_image
    size = (want.shape[1], want.shape[0])  # what the tool would have stored
    make_input(tmp_path / "in", fmt, data, size)
    out = tmp_path / "out"
    code = run(["export", str(tmp_path / "in"), str(out), "--format", "supervisely",
                "--workers", "0"])
    entry = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert (code, entry["status"]) == (0, "ok"), entry.get("error")
    human, = (out / "supervisely").rglob("masks_human/a.png")
    png = cv2.imread(str(human), cv2.IMREAD_COLOR)
    h, w = want.shape[:2]
    assert png.shape == (h, 2 * w, 3) and (png[:, :w] == want).all()
