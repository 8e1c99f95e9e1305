"""Shared helpers: build small Supervisely projects on disk for job-level tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest


class ProjectBuilder:
    def __init__(self, root: Path, classes: list[dict]):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "meta.json").write_text(json.dumps({"classes": classes, "tags": []}))

    def add(self, dataset: str, name: str, objects: list | None = None, *, w: int = 64,
            h: int = 48, image: bytes | bool | None = True, ann: bytes | bool | None = True
            ) -> None:
        (self.root / dataset / "img").mkdir(parents=True, exist_ok=True)
        (self.root / dataset / "ann").mkdir(parents=True, exist_ok=True)
        if image is True:
            rng = np.random.default_rng(len(name))
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            image = cv2.imencode(".png", img)[1].tobytes()
        if image:
            (self.root / dataset / "img" / name).write_bytes(image)
        if ann is True:
            ann = json.dumps({"size": {"width": w, "height": h}, "tags": [],
                              "objects": objects or []}).encode()
        if ann:
            (self.root / dataset / "ann" / (name + ".json")).write_bytes(ann)


def rect(cls: str, x0: int, y0: int, x1: int, y1: int) -> dict:
    return {"classTitle": cls, "tags": [], "points": {"exterior": [[x0, y0], [x1, y1]],
                                                      "interior": []}}


def exif_jpeg(orientation: int, width: int = 48, height: int = 32) -> bytes:
    """A JPEG as a phone writes it: stored width x height with an EXIF Orientation tag
    (5-8 show it turned: height x width), four distinct quadrants (any turn or flip changes
    its pixels)."""
    from PIL import Image

    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:height // 2, :width // 2] = (250, 0, 0)
    rgb[:height // 2, width // 2:] = (0, 250, 0)
    rgb[height // 2:, :width // 2] = (0, 0, 250)
    rgb[height // 2:, width // 2:] = (250, 250, 250)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def poly(cls: str, *pts: tuple[int, int]) -> dict:
    return {"classTitle": cls, "tags": [], "points": {"exterior": [list(p) for p in pts],
                                                      "interior": []}}


@pytest.fixture
def project(tmp_path):
    def make(classes=None):
        classes = classes or [{"title": "car", "shape": "rectangle", "color": "#FF0000"},
                              {"title": "person", "shape": "polygon", "color": "#00FF00"}]
        return ProjectBuilder(tmp_path / "project", classes)
    return make
