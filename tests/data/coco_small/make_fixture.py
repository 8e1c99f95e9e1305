"""Regenerate this COCO fixture (deterministic): `python tests/data/coco_small/make_fixture.py`.

Layout as CVAT exports COCO 1.0: `annotations/instances_default.json` and `images/` beside the
annotations folder, file names with a sub-folder. Content: polygons (float, multi-part),
a bbox-only annotation, RLE compressed and uncompressed (iscrowd), overlaps, an image with no
annotation, and bad items that must fail alone: an unknown category id, a NaN coordinate, an
RLE of the wrong size, a file name escaping the images folder; plus one orphan annotation.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

HERE = Path(__file__).resolve().parent
W, H = 96, 72


def scene(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, H)[:, None, None]
    img = (np.array([230, 190, 120]) * (1 - y) + np.array([70, 110, 60]) * y)
    img = np.broadcast_to(img, (H, W, 3)).copy() + rng.normal(0, 5, (H, W, 3))
    cv2.circle(img, (int(rng.integers(20, 76)), 40), 12, (40, 40, 200), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def rle(mask: np.ndarray, compressed: bool) -> dict:
    r = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": r["size"], "counts": r["counts"].decode()}
    flat = mask.astype(np.uint8).flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return {"size": [H, W], "counts": runs}


def main() -> None:
    blob = np.zeros((H, W), bool)
    cv2.circle(blob.view(np.uint8), (70, 20), 10, 1, -1)
    crowd = np.zeros((H, W), bool)
    crowd[40:70, 5:45] = True
    crowd[50:60, 15:25] = False
    images = [
        {"id": 1, "file_name": "street/a.jpg", "width": W, "height": H},
        {"id": 2, "file_name": "b.png", "width": W, "height": H},
        {"id": 3, "file_name": "c.png", "width": W, "height": H},
        {"id": 4, "file_name": "d.png", "width": W, "height": H},
        {"id": 5, "file_name": "../evil.jpg", "width": W, "height": H},
        {"id": 6, "file_name": "e.png", "width": W, "height": H},
        {"id": 7, "file_name": "f.png", "width": W, "height": H},
    ]
    poly = [[10.5, 10.25, 40.75, 12.5, 35.5, 50.5, 12.25, 45.0],
            [50.5, 40.5, 60.25, 40.5, 55.0, 60.75]]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": poly},
        {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": [],
         "bbox": [60.5, 45.25, 30.0, 20.5]},
        {"id": 3, "image_id": 1, "category_id": 5, "iscrowd": 0,
         "segmentation": rle(blob, compressed=True)},
        {"id": 4, "image_id": 2, "category_id": 2, "iscrowd": 0,
         "segmentation": [[5.0, 5.0, 90.0, 5.0, 90.0, 35.0, 5.0, 35.0]]},
        {"id": 5, "image_id": 2, "category_id": 1, "iscrowd": 0,
         "segmentation": [[30.5, 0.5, 60.5, 0.5, 45.5, 30.5]]},
        {"id": 6, "image_id": 2, "category_id": 1, "iscrowd": 1,
         "segmentation": rle(crowd, compressed=False)},
        {"id": 7, "image_id": 4, "category_id": 99, "iscrowd": 0,
         "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 8, "image_id": 6, "category_id": 1, "iscrowd": 0,
         "segmentation": [[1, 1, float("nan"), 1, 9, 9]]},
        {"id": 9, "image_id": 7, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [H + 1, W], "counts": [H * W]}},
        {"id": 10, "image_id": 1000, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},
    ]
    categories = [{"id": 1, "name": "person", "supercategory": "human"},
                  {"id": 2, "name": "car", "supercategory": "vehicle"},
                  {"id": 5, "name": "tree", "supercategory": "plant"},
                  {"id": 7, "name": "sky", "supercategory": "scene"}]
    (HERE / "annotations").mkdir(exist_ok=True)
    doc = {"info": {"description": "maskjob test fixture"}, "licenses": [], "images": images,
           "annotations": anns, "categories": categories}
    (HERE / "annotations" / "instances_default.json").write_text(json.dumps(doc, indent=1))
    for k, im in enumerate(images):
        if im["file_name"].startswith(".."):
            continue
        path = HERE / "images" / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix == ".jpg" else []
        cv2.imwrite(str(path), scene(k), params)


if __name__ == "__main__":
    main()
