"""Fidelity oracle (issue 12): annotation files WRITTEN by real datumaro (1.13.12), and the masks
CVAT's pipeline and pycocotools make of them. Runs ONLY in the oracle venv
(run_datumaro_oracle.sh --fidelity), never in maskjob's.

1. Builds a datumaro dataset on two real photos of tests/data/cvat_task/images (astronaut.jpg,
   points_only.jpg: scikit-image samples, public domain) with what real projects hold: grouped
   polygons (one instance per group), z_order, shapes drawn with a `background` label (the
   first label, with no colour, as datumaro writes it), rotated boxes, RLE masks, ellipses,
   boxes, and kinds no mask shows (points, polylines, tags, attributes, occluded).
2. Lets datumaro WRITE them: `cvat` (CVAT for images 1.1: `default.xml`) and `coco_instances`
   (`annotations/instances_default.json`), without media. These two files are the committed
   inputs under tests/data/fidelity/.
3. Goldens under tests/golden/fidelity/:
   - `cvat/`: CVAT's Segmentation mask 1.1 export of the written XML, by datumaro_oracle.py's
     CVAT pipeline (its own stdlib XML reader, RotatedBoxesToPolygons, polygons_to_masks,
     boxes_to_masks, merge_instance_segments, voc_segmentation with a labelmap without colours
     - datumaro's labels have none - so colours are VOC by labelmap line, background first);
   - `coco/<stem>.class.png` / `<stem>.instance.png`: pycocotools on the written JSON, each
     annotation (file order) decoded with `annToMask` (a bbox-only one: `frPyObjects` of its
     box, as COCO's own `annToRLE` does for a box), painted in turn with its class index
     (category position without `background`, from 1; background 0) and its number (from 1;
     a background annotation paints 0 and keeps its number), 8-bit L and 16-bit PNGs.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import cv2
import datumaro as dm
import numpy as np
from datumaro.components.annotation import Ellipse, RotatedBbox
from datumaro_oracle import export_task
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

IMAGES = "tests/data/cvat_task/images"
DATA = "tests/data/fidelity"
GOLDEN = "tests/golden/fidelity"
LABELS = ["background", "person", "car", "tree"]


def ellipse_rle(cx, cy, rx, ry, angle, h, w):
    mat = np.zeros((h, w), np.uint8)
    cv2.ellipse(mat, (round(cx), round(cy)), (round(rx), round(ry)), angle, 0, 360, 1, -1)
    return mat


def dataset(repo: Path) -> dm.Dataset:
    bg, person, car, tree = range(4)
    h, w = 240, 320
    blob = np.zeros((h, w), np.uint8)
    blob[150:200, 200:260] = 1
    blob[170:180, 215:245] = 0  # a hole
    astronaut = [
        dm.Polygon([12.3, 5.1, 140.7, 9.9, 120.5, 150.3, 30.9, 130.7], label=person, z_order=0),
        dm.Polygon([100.2, 100.8, 180.6, 95.4, 170.1, 180.9], label=car, group=4, z_order=1),
        dm.Polygon([175.5, 20.5, 230.2, 30.7, 210.9, 90.3], label=person, group=4, z_order=0),
        dm.Bbox(60.4, 60.6, 50.3, 40.2, label=tree, z_order=1, attributes={"occluded": True}),
        dm.Bbox(80, 20, 30, 30, label=bg, z_order=2),  # the background label erases
        RotatedBbox(250.5, 60.5, 60.2, 30.4, 30.0, label=car, z_order=0),
        dm.Mask(blob, label=tree, z_order=0, group=7),
        dm.Polygon([190, 140, 300, 150, 280, 230], label=car, group=7, z_order=0),
        dm.Mask(ellipse_rle(60, 200, 40, 25, 20, h, w), label=person, z_order=3),
        Ellipse(20.4, 150.2, 100.6, 200.8, label=car, z_order=1),
        dm.Points([10, 10, 20, 20, 30, 30], label=person),
        dm.PolyLine([0, 239, 319, 0], label=car),
        dm.Label(car),
        dm.Polygon([290.5, 200.5, 330, 200, 330, 260, 290, 250], label=tree, z_order=0),
    ]
    h2, w2 = 180, 240
    other = [
        dm.Bbox(10, 10, 100, 80, label=car, group=1),
        dm.Bbox(50, 40, 100, 100, label=person, group=1),
        dm.Polygon([5.5, 170.2, 230.8, 100.1, 239, 179], label=tree, z_order=-1),
        dm.Bbox(100, 100, 20, 20, label=bg),
        dm.Bbox(150, 5, 40, 60, label=tree, z_order=1, attributes={"kind": "oak"}),
        dm.Points([1, 1], label=car),
    ]

    def media(name, hh, ww):
        return dm.Image.from_file(path=str(repo / IMAGES / name), size=(hh, ww))

    items = [dm.DatasetItem(id="astronaut", subset="default", annotations=astronaut,
                            media=media("astronaut.jpg", h, w)),
             dm.DatasetItem(id="points_only", subset="default", annotations=other,
                            media=media("points_only.jpg", h2, w2))]
    cats = dm.LabelCategories.from_iterable(LABELS)
    for name in ("occluded", "kind", "rotation"):
        cats.attributes.add(name)
    return dm.Dataset.from_iterable(items, categories={dm.AnnotationType.label: cats})


def write_inputs(repo: Path) -> tuple[Path, Path]:
    out = repo / DATA
    if out.exists():
        shutil.rmtree(out)
    ds = dataset(repo)
    with tempfile.TemporaryDirectory() as tmp:
        ds.export(str(Path(tmp) / "cvat"), "cvat", save_media=False)
        ds.export(str(Path(tmp) / "coco"), "coco_instances", save_media=False)
        (out / "cvat").mkdir(parents=True)
        (out / "coco" / "annotations").mkdir(parents=True)
        shutil.copy(Path(tmp) / "cvat" / "default.xml", out / "cvat" / "default.xml")
        shutil.copy(Path(tmp) / "coco" / "annotations" / "instances_default.json",
                    out / "coco" / "annotations" / "instances_default.json")
    return out / "cvat" / "default.xml", out / "coco" / "annotations" / "instances_default.json"


def cvat_goldens(repo: Path, xml: Path) -> None:
    out = repo / GOLDEN / "cvat"
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task"
        (task / "images").mkdir(parents=True)
        shutil.copy(xml, task / "annotations.xml")
        for name in ("astronaut.jpg", "points_only.jpg"):
            shutil.copy(repo / IMAGES / name, task / "images" / name)
        export_task(task, out, mode="voc")
    for empty in sorted(out.rglob("*"), reverse=True):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()


def ann_mask(coco: COCO, ann: dict, h: int, w: int) -> np.ndarray:
    if not ann["segmentation"]:  # a box only: COCO's annToRLE of its polygon
        x, y, bw, bh = ann["bbox"]
        rle = mask_utils.frPyObjects([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], h, w)
        return mask_utils.decode(mask_utils.merge(rle))
    return coco.annToMask(ann)


def class_values(coco: COCO) -> dict[int, int]:
    """category id -> class index: position (by id) without `background`, from 1; background 0."""
    value: dict[int, int] = {}
    for c in sorted(coco.dataset["categories"], key=lambda c: c["id"]):
        value[c["id"]] = 0 if c["name"] == "background" else len([v for v in value.values()
                                                                   if v]) + 1
    return value


def coco_maps(coco: COCO, img: dict, value: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(class, instance) index maps of one image: each annotation in file order painted with
    its class index and its number (from 1; a background annotation paints 0, keeps its number).
    Class maps are uint8 up to 255 classes, uint16 beyond; instance maps uint16."""
    h, w = img["height"], img["width"]
    cls = np.zeros((h, w), np.uint8 if max(value.values(), default=0) <= 255 else np.uint16)
    inst = np.zeros((h, w), np.uint16)
    anns = [a for a in coco.dataset["annotations"] if a["image_id"] == img["id"]]
    for k, ann in enumerate(anns, start=1):
        m = ann_mask(coco, ann, h, w).astype(bool)
        v = value[ann["category_id"]]
        cls[m] = v
        inst[m] = k if v else 0
    return cls, inst


def coco_goldens(repo: Path, path: Path) -> None:
    out = repo / GOLDEN / "coco"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    coco = COCO(str(path))
    value = class_values(coco)
    for img in coco.dataset["images"]:
        cls, inst = coco_maps(coco, img, value)
        stem = Path(img["file_name"]).stem
        cv2.imwrite(str(out / f"{stem}.class.png"), cls)
        cv2.imwrite(str(out / f"{stem}.instance.png"), inst)


def main() -> None:
    repo = Path(sys.argv[sys.argv.index("--repo") + 1]) if "--repo" in sys.argv else \
        Path(__file__).resolve().parents[2]
    xml, coco_json = write_inputs(repo)
    cvat_goldens(repo, xml)
    coco_goldens(repo, coco_json)
    info = {
        "generator": "tests/oracles/run_datumaro_oracle.sh --fidelity",
        "datumaro": metadata.version("datumaro"),
        "pycocotools": metadata.version("pycocotools"),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "inputs": [str(xml.relative_to(repo)), str(coco_json.relative_to(repo))],
    }
    (repo / GOLDEN / "ORACLE.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"fidelity goldens in {repo / GOLDEN}")


if __name__ == "__main__":
    main()
