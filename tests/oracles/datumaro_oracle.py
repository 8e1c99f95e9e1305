"""Golden-file oracle: CVAT's Segmentation Mask 1.1 export of tests/data/cvat_task, made by REAL
datumaro (PyPI 1.13.12, see run_datumaro_oracle.sh), and a strict import check of any folder.

Runs ONLY in the oracle venv, never in maskjob's. It reads annotations.xml with its own small
stdlib parser (not maskjob's) and builds in-memory datumaro items as CVAT's exporter does
(reference/cvat_clearml.md A.1, A.5, B.2): shapes sorted by z_order (stable, CVAT's
`group_by_frame`); polygons -> dm.Polygon; boxes -> dm.Bbox(x, y, x1 - x, y1 - y) with a
`rotation` attribute; ellipses -> RleMask by CVAT's cv2 recipe; masks -> RleMask by CVAT's
RLE recipe; polylines and points -> dm.PolyLine / dm.Points. Then CVAT's
RotatedBoxesToPolygons (re-implemented here from reading CVAT's source: it is CVAT code, not
datumaro's), datumaro's polygons_to_masks, boxes_to_masks, merge_instance_segments, and the
`voc_segmentation` export with apply_colormap=True and a labelmap FILE with background first
(upstream datumaro treats label 0 as background, A.6).

Goldens (tests/golden/cvat/<mode>/, the layout of OUTPUT/cvat/):
  source  labelmap colours = the CVAT label colours (CVAT's own behaviour)
  voc     labelmap without colours: VOC colour of the line index (datumaro's generated colours)

Usage:
  python datumaro_oracle.py --repo REPO [--mode source|voc ...]
  python datumaro_oracle.py --check-import DIR   # strict import; prints JSON per item
  python datumaro_oracle.py --export-task TASK OUT  # any task, timed (benchmarks/bench_cvat.py)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from importlib import metadata
from itertools import chain
from pathlib import Path

import cv2
import datumaro as dm
import numpy as np
from fixture_hash import fixture_sha256
from pycocotools import mask as mask_utils

DATUMARO_VERSION = "1.13.12"
TASK = "tests/data/cvat_task"
MODES = ("source", "voc")


def hex_rgb(h: str) -> tuple[int, int, int]:
    h = h.strip().lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def floats(s: str) -> list[float]:
    return [float(v) for p in s.split(";") for v in p.split(",")]


def fork_points(shape, points):
    """DEVIATION from upstream datumaro, on purpose: CVAT runs its own datumaro fork, whose
    shapes keep points as float64 rounded to 2 decimals (`np.around(points, 2)`); upstream 1.13
    stores them through float32, which moves vertices that sit on pycocotools' snap boundaries
    (9.9 becomes 9.8999996). Set the fork's points (attrs' old API runs no converter on
    assignment), so the goldens are what CVAT itself produces."""
    shape.points = np.around(np.asarray(points, dtype=np.float64), 2).tolist()
    return shape


class RotatedBoxesToPolygons(dm.ItemTransform):
    """CVAT's transform (formats/transformations.py): each box with a non-zero `rotation`
    attribute is removed and its 4 corners, turned about the box centre, appended as a
    polygon (so it moves to the end of the item's annotations)."""

    def transform_item(self, item):
        anns = item.annotations[:]
        for ann in [a for a in anns if a.type == dm.AnnotationType.bbox
                    and a.attributes.get("rotation")]:
            angle = math.radians(ann.attributes["rotation"])
            x0, y0, x1, y1 = ann.points
            cx, cy = x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2
            c, s = math.cos(angle), math.sin(angle)
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            pts = list(chain.from_iterable(
                (cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy))
                for x, y in corners))
            anns.remove(ann)
            anns.append(fork_points(dm.Polygon(pts, label=ann.label, attributes=ann.attributes,
                                               group=ann.group, z_order=ann.z_order), pts))
        return item.wrap(annotations=anns)


def ellipse_mask(cx, cy, rx, ry, rotation, h, w):
    """CVAT's EllipsesToMasks on points [cx, cy, cx + rx, cy - ry]."""
    right, top = cx + rx, cy - ry
    mat = np.zeros((h, w), np.uint8)
    cv2.ellipse(mat, (round(cx), round(cy)), (round(right - cx), round(cy - top)), rotation,
                0, 360, 255, thickness=-1)
    return mask_utils.encode(np.asfortranarray(mat))


def cvat_rle_mask(counts, left, top, width, height, h, w):
    """CVAT's RLE (row-major runs over the box, from a 0-run) pasted into a full frame."""
    right, bottom = left + width - 1, top + height - 1
    bw, bh = right - left + 1, bottom - top + 1
    rle = mask_utils.frPyObjects([{"counts": counts, "size": [bw, bh]}], h=bh, w=bw)[0]
    tight = mask_utils.decode(rle).transpose()
    full = np.zeros((h, w), np.uint8)
    full[top:bottom + 1, left:right + 1] = tight
    return mask_utils.encode(np.asfortranarray(full))


def load_task(task: Path, xml: Path | None = None):
    """(labels, items) of `task/annotations.xml` (or of `xml`, e.g. a datumaro `<subset>.xml`);
    media paths under `task/images` are never read (sizes come from the XML)."""
    root = ET.parse(xml or task / "annotations.xml").getroot()
    labels = [(el.findtext("name"), hex_rgb(c) if (c := el.findtext("color")) else None)
              for el in root.find("meta/task/labels").findall("label")]  # datumaro: no colour
    names = [n for n, _ in labels]
    items = []
    for img in root.findall("image"):
        name, subset = img.get("name"), img.get("subset") or "default"
        w, h = int(img.get("width")), int(img.get("height"))
        shapes = sorted(list(img), key=lambda el: int(el.get("z_order", 0)))  # stable
        anns = []
        for el in shapes:
            if el.tag == "tag":
                continue
            common = dict(label=names.index(el.get("label")), z_order=int(el.get("z_order", 0)),
                          group=int(el.get("group_id", 0)))
            a = el.attrib
            if el.tag == "polygon":
                anns.append(fork_points(dm.Polygon(floats(a["points"]), **common),
                                        floats(a["points"])))
            elif el.tag == "polyline":
                anns.append(dm.PolyLine(floats(a["points"]), **common))
            elif el.tag == "points":
                anns.append(dm.Points(floats(a["points"]), **common))
            elif el.tag == "box":
                x0, y0, x1, y1 = (float(a[k]) for k in ("xtl", "ytl", "xbr", "ybr"))
                bw, bh = x1 - x0, y1 - y0
                box = dm.Bbox(x0, y0, bw, bh,
                              attributes={"rotation": float(a.get("rotation", 0))}, **common)
                anns.append(fork_points(box, [x0, y0, x0 + bw, y0 + bh]))
            elif el.tag == "ellipse":
                rle = ellipse_mask(float(a["cx"]), float(a["cy"]), float(a["rx"]),
                                   float(a["ry"]), float(a.get("rotation", 0)), h, w)
                anns.append(dm.RleMask(rle=rle, **common))
            elif el.tag == "mask":
                counts = [int(v) for v in a["rle"].split(",")]
                rle = cvat_rle_mask(counts, int(a["left"]), int(a["top"]), int(a["width"]),
                                    int(a["height"]), h, w)
                anns.append(dm.RleMask(rle=rle, **common))
            else:
                raise SystemExit(f"fixture shape not handled by the oracle: {el.tag}")
        stem = name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name
        media = dm.Image.from_file(path=str(task / "images" / name), size=(h, w))
        items.append(dm.DatasetItem(id=stem, subset=subset, media=media, annotations=anns))
    return labels, items


def write_labelmap(path: Path, labels, with_colors: bool) -> None:
    bg = [x for x in labels if x[0] == "background"] or [("background", (0, 0, 0))]
    rows = ["# label:color_rgb:parts:actions"]
    for name, rgb in bg + [x for x in labels if x[0] != "background"]:
        rows.append(f"{name}:{','.join(map(str, rgb)) if with_colors else ''}::")
    path.write_text("\n".join(rows) + "\n")


def export_task(task: Path, out: Path, mode: str = "source", xml: Path | None = None) -> None:
    """CVAT's Segmentation Mask export of a task folder (or of one CVAT XML file) into `out`,
    as CVAT runs it."""
    labels, items = load_task(task, xml)
    ds = dm.Dataset.from_iterable(items, categories=[n for n, _ in labels])
    ds.transform(RotatedBoxesToPolygons)
    ds.transform("polygons_to_masks")
    ds.transform("boxes_to_masks")
    ds.transform("merge_instance_segments")
    if out.exists():
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory() as tmp:
        lm = Path(tmp) / "labelmap.txt"
        write_labelmap(lm, labels, with_colors=mode == "source")
        ds.export(str(out), "voc_segmentation", save_media=False, apply_colormap=True,
                  label_map=str(lm))


def export(repo: Path, mode: str) -> None:
    out = repo / "tests" / "golden" / "cvat" / mode
    export_task(repo / TASK, out, mode)
    for empty in sorted(out.rglob("*"), reverse=True):  # datumaro makes empty dirs
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    print(f"golden {mode}: {sum(1 for p in out.rglob('*.png'))} PNGs in {out}")


def check_import(folder: str) -> None:
    """Strict import of a Segmentation Mask folder; any error exits non-zero."""
    kind = "voc_instance_segmentation" if Path(folder, "SegmentationObject").is_dir() \
        else "voc_segmentation"
    ds = dm.Dataset.import_from(folder, kind)
    labels = ds.categories()[dm.AnnotationType.label]
    out = {}
    for item in ds:
        anns = []
        for ann in item.annotations:
            if ann.type == dm.AnnotationType.mask:
                anns.append([labels[ann.label].name, int(ann.group),
                             int(np.count_nonzero(ann.image))])
        out[f"{item.subset}/{item.id}"] = sorted(anns)
    json.dump(out, sys.stdout, sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[2]))
    ap.add_argument("--mode", action="append", choices=MODES)
    ap.add_argument("--check-import")
    ap.add_argument("--export-task", nargs=2, metavar=("TASK", "OUT"),
                    help="export any task folder; prints the seconds it took (benchmarks)")
    args = ap.parse_args()
    if args.check_import:
        check_import(args.check_import)
        return
    if args.export_task:
        import time

        started = time.perf_counter()
        export_task(Path(args.export_task[0]), Path(args.export_task[1]))
        print(json.dumps({"seconds": time.perf_counter() - started}))
        return
    repo = Path(args.repo)
    for mode in args.mode or MODES:
        export(repo, mode)
    info = {
        "generator": "tests/oracles/run_datumaro_oracle.sh",
        "datumaro": metadata.version("datumaro"),
        "pycocotools": metadata.version("pycocotools"),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "fixture_trees": [TASK],
        "fixture_sha256": fixture_sha256(repo, (TASK,)),
        "modes": {m: {"labelmap": "CVAT label colours" if m == "source" else "VOC by line"}
                  for m in MODES},
    }
    (repo / "tests" / "golden" / "cvat" / "ORACLE.json").write_text(
        json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
