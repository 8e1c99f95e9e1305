"""`maskjob demo`: write a small Supervisely project with every geometry, and a job file.

The sample (8 images of 640x480 in two datasets, one nested) is generated, not downloaded:
smooth synthetic scenes with objects of every kind, overlapping, with holes, crossing the
border, plus one image without objects. It lands beside the output (`<OUTPUT>-sample-project`)
with `demo-job.yaml` enabling every mask kind.
"""

from __future__ import annotations

import base64
import json
import os
import zlib

import cv2
import numpy as np

CLASSES = [
    ("sky", "polygon", "#4FC3F7"),
    ("building", "polygon", "#8D6E63"),
    ("window", "rectangle", "#FFEB3B"),
    ("tree", "bitmap", "#43A047"),
    ("road", "multipolygon", "#616161"),
    ("lane", "line", "#FFFFFF"),
    ("sign", "point", "#E53935"),
    ("person", "graph", "#AB47BC"),
    ("car", "oriented_bbox", "#1E88E5"),
    ("crate", "cuboid_2d", "#FF7043"),
    ("glass", "alpha_mask", "#26C6DA"),
]
PERSON_TEMPLATE = {
    "nodes": {
        "head": {"label": "head", "loc": [10, 0], "color": "#FF0000"},
        "hip": {"label": "hip", "loc": [10, 30], "color": "#00FF00"},
        "foot": {"label": "foot", "loc": [10, 60], "color": "#0000FF"},
    },
    "edges": [{"src": "head", "dst": "hip", "color": "#FFFF00"},
              {"src": "hip", "dst": "foot", "color": "#00FFFF"}],
}
JOB = """# maskjob demo job: every Supervisely mask kind, app rules
formats: [supervisely]
partition_size: 2
supervisely:
  masks_machine: true
  masks_human: true
  masks_semantic_rgb: true
  masks_instances: true
  human_style: app
  thickness: 2
"""


def _scene(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    y = np.linspace(0, 1, h)[:, None, None]
    sky = np.array([235, 200, 120]) * (1 - y) + np.array([60, 90, 70]) * y
    img = np.broadcast_to(sky, (h, w, 3)).copy()
    img += rng.normal(0, 6, img.shape)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.2), 0, 255).astype(np.uint8)


def _bitmap(mask: np.ndarray, alpha: bool = False) -> str:
    if alpha:
        _ok, buf = cv2.imencode(".png", mask.astype(np.uint8))
    else:
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[mask > 0] = (255, 255, 255, 255)
        _ok, buf = cv2.imencode(".png", rgba)
    return base64.b64encode(zlib.compress(buf.tobytes())).decode()


def _objects(rng: np.random.Generator, w: int, h: int, k: int) -> list[dict]:
    def obj(cls: str, shape: str, **geo: object) -> dict:
        return {"classTitle": cls, "geometryType": shape, "tags": [], **geo}

    cx, cy = int(rng.integers(150, w - 150)), int(rng.integers(120, h - 120))
    tree = np.zeros((90, 70), np.uint8)
    cv2.circle(tree, (35, 35), 30, 1, -1)
    tree[55:90, 30:40] = 1
    glass = np.zeros((40, 60), np.uint8)
    glass[5:35, 5:55] = np.linspace(40, 220, 50, dtype=np.uint8)
    ring = [[cx - 120, cy - 100], [cx + 110, cy - 110], [cx + 120, cy + 90], [cx - 100, cy + 100]]
    hole = [[cx - 30, cy - 30], [cx + 30, cy - 30], [cx + 30, cy + 30], [cx - 30, cy + 30]]
    return [
        obj("sky", "polygon", points={"exterior": [[-20, -20], [w + 20, -20], [w + 20, 140],
                                                   [-20, 170]], "interior": []}),
        obj("building", "polygon", points={"exterior": ring, "interior": [hole]}),
        obj("window", "rectangle", points={"exterior": [[cx - 80, cy - 60], [cx - 50, cy - 20]],
                                           "interior": []}),
        obj("window", "rectangle", points={"exterior": [[cx + 50, cy - 60], [cx + 80, cy - 20]],
                                           "interior": []}),
        obj("tree", "bitmap", bitmap={"origin": [20 + k * 10, h - 150], "data": _bitmap(tree)}),
        obj("road", "multipolygon", parts=[
            {"exterior": [[0, h - 40], [w // 2 - 10, h - 40], [w // 2 - 10, h], [0, h]],
             "interior": []},
            {"exterior": [[w // 2 + 10, h - 40], [w, h - 40], [w, h], [w // 2 + 10, h]],
             "interior": []}]),
        obj("lane", "line", points={"exterior": [[0, h - 20], [w // 3, h - 25], [w + 30, h - 15]],
                                    "interior": []}),
        obj("sign", "point", points={"exterior": [[w - 40, 200 + k * 5]], "interior": []}),
        obj("person", "graph", nodes={"head": {"loc": [w - 90, 220]}, "hip": {"loc": [w - 92, 260]},
                                      "foot": {"loc": [w - 85, 300], "disabled": k % 2 == 1}}),
        obj("car", "oriented_bbox", points={"exterior": [[cx - 60, cy + 110], [cx + 40, cy + 150]],
                                            "interior": []}, angle=0.3),
        obj("crate", "cuboid_2d", vertices={
            "face1-topleft": {"loc": [60, 200]}, "face1-topright": {"loc": [120, 200]},
            "face1-bottomright": {"loc": [120, 260]}, "face1-bottomleft": {"loc": [60, 260]},
            "face2-topleft": {"loc": [80, 185]}, "face2-topright": {"loc": [140, 185]},
            "face2-bottomright": {"loc": [140, 245]}, "face2-bottomleft": {"loc": [80, 245]}}),
        obj("glass", "alpha_mask", bitmap={"origin": [cx - 20, cy + 40],
                                           "data": _bitmap(glass, alpha=True)}),
    ]


def make_demo_project(output_url: str, seed: int = 7) -> tuple[str, str]:
    base = output_url.rstrip("/")
    if "://" in base and not base.startswith("file://"):
        base = "demo-out"
    project = base.removeprefix("file://") + "-sample-project"
    rng = np.random.default_rng(seed)
    meta = {"classes": [
        {"title": t, "shape": s, "color": c,
         "geometry_config": PERSON_TEMPLATE if s == "graph" else {}}
        for t, s, c in CLASSES], "tags": [], "projectType": "images"}
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    w, h = 640, 480
    layout = [("street", 5), ("street/datasets/night", 3)]
    for ds, n in layout:
        for sub in ("img", "ann"):
            os.makedirs(os.path.join(project, ds, sub), exist_ok=True)
        for k in range(n):
            name = f"scene {k:02d}.jpg" if k else "scene.with.dots.jpg"
            img = _scene(rng, w, h)
            cv2.imwrite(os.path.join(project, ds, "img", name), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            objects = [] if (ds, k) == ("street", n - 1) else _objects(rng, w, h, k)
            ann = {"description": "", "size": {"height": h, "width": w}, "tags": [],
                   "objects": objects}
            with open(os.path.join(project, ds, "ann", name + ".json"), "w") as f:
                json.dump(ann, f)
    config_path = os.path.join(project, "demo-job.yaml")
    with open(config_path, "w") as f:
        f.write(JOB)
    return project, config_path
