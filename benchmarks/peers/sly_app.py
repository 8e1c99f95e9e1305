"""Peer: the export-as-masks app's per-image work, done with the real Supervisely SDK.

Runs ONLY with the SDK venv's python (supervisely==6.74.51; see benchmarks/run_all.py). For
each image of a local Supervisely project it does what the app does (reference/supervisely.md
A.2-A.6), re-implemented from that description (no upstream code copied):

- load:      `sly.Annotation.load_json_file(ann_path, meta)` (SDK parsing + load-time crop);
- machine:   `zeros(H, W, 3)`, labels sorted by `label.area` descending (stable),
             `label.geometry.draw(canvas, [i, i, i], thickness=t)` (no config), `sly.image.write`
             (RGB PNG via cv2), then PIL open -> convert('L') -> save (the app's
             convert2gray_and_save);
- instances: per label, `zeros(H, W, 3)`, draw [255, 255, 255] (no config), names from
             `generate_free_name` (`<class>.png`, `<class>_01.png`, ...), write + PIL L as above;
- human:     `sly.image.read`, per label (annotation order) `tmp = overlay.copy()`,
             `label.draw(tmp, thickness=t)` (class colour, class geometry_config),
             `overlay = ((overlay.astype(uint16) + tmp) / 2).astype(uint8)`, then
             `cv2.hconcat([raw, overlay])` written with `sly.image.write`.

The benchmark projects hold no cuboids, alpha masks or graphs, so none of the app's special
branches (or bugs, A.10) are involved. The app's download, project open and final tar are not
per-image work and are not timed. Single process, OpenCV pinned to one thread.

Output: a JSON file with per-image wall (`<kind>`) and CPU (`<kind>_cpu`) seconds per step.

Usage: python sly_app.py --project DIR --out DIR --kinds machine,instances[,human]
                         [--thickness 2] [--json FILE] [--limit N] [--warmup]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import supervisely as sly
from PIL import Image
from supervisely._utils import generate_free_name

cv2.setNumThreads(1)


def vm_hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def convert2gray_and_save(path: str, rgb: np.ndarray) -> None:
    """The app's machine/instance mask writer: RGB PNG by the SDK, then PIL 'L' over it."""
    sly.image.write(path, rgb)
    gray = Image.open(path).convert("L")
    gray.save(path)


def machine_mask(ann: sly.Annotation, colors: dict, t: int, path: str) -> None:
    canvas = np.zeros((*ann.img_size, 3), dtype=np.uint8)
    for label in sorted(ann.labels, key=lambda lb: lb.area, reverse=True):
        label.geometry.draw(canvas, color=colors[label.obj_class.name], thickness=t)
    convert2gray_and_save(path, canvas)


def instance_masks(ann: sly.Annotation, t: int, folder: str) -> None:
    used: list[str] = []
    for label in ann.labels:
        canvas = np.zeros((*ann.img_size, 3), dtype=np.uint8)
        label.geometry.draw(canvas, color=[255, 255, 255], thickness=t)
        name = generate_free_name(used, f"{label.obj_class.name}.png", with_ext=True)
        used.append(name)
        convert2gray_and_save(os.path.join(folder, name), canvas)


def human_mask(ann: sly.Annotation, img_path: str, t: int, path: str) -> None:
    raw = sly.image.read(img_path)
    overlay = raw.copy()
    for label in ann.labels:
        tmp = overlay.copy()
        label.draw(tmp, thickness=t)
        overlay = ((overlay.astype(np.uint16) + tmp.astype(np.uint16)) / 2).astype(np.uint8)
    sly.image.write(path, cv2.hconcat([raw, overlay]))


def export_item(meta: sly.ProjectMeta, colors: dict, kinds: set[str], t: int, out_ds: Path,
                name: str, img_path: str, ann_path: str) -> dict[str, float]:
    """One image, as the app does it; wall (`<kind>`) and CPU (`<kind>_cpu`) seconds per step."""
    stem = os.path.splitext(name)[0]
    times: dict[str, float] = {}

    def step(kind: str, fn, *a):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn(*a)
        times[kind] = time.perf_counter() - t0
        times[kind + "_cpu"] = time.process_time() - c0
        return result

    ann = step("load", sly.Annotation.load_json_file, ann_path, meta)
    if "human" in kinds:
        step("human", human_mask, ann, img_path, t, str(out_ds / "masks_human" / f"{stem}.png"))
    if "machine" in kinds:
        step("machine", machine_mask, ann, colors, t,
             str(out_ds / "masks_machine" / f"{stem}.png"))
    if "instances" in kinds:
        step("instances", instance_masks, ann, t, str(out_ds / "masks_instances" / stem))
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--kinds", default="machine,instances")
    ap.add_argument("--thickness", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--warmup", action="store_true",
                    help="machine mask of the first image once, untimed (first-call costs)")
    args = ap.parse_args()
    kinds = set(args.kinds.split(","))
    t = args.thickness

    project = sly.Project(str(args.project), sly.OpenMode.READ)
    meta = project.meta
    colors = {c.name: [i, i, i] for i, c in enumerate(meta.obj_classes, start=1)}
    items = []
    for ds in sorted(project.datasets, key=lambda d: d.directory):
        rel = Path(ds.directory).relative_to(Path(project.directory))
        for name in sorted(ds.get_items_names()):
            paths = ds.get_item_paths(name)
            items.append((rel, name, paths.img_path, paths.ann_path))
    if args.limit:
        items = items[: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.warmup and items:
        scratch = args.out / "_warmup"
        rel, name, img, ann = items[0]
        export_item(meta, colors, {"machine"}, t, scratch, name, img, ann)
        shutil.rmtree(scratch)

    results = []
    wall = time.perf_counter()
    for rel, name, img, ann in items:
        times = export_item(meta, colors, kinds, t, args.out / rel, name, img, ann)
        results.append({"dataset": str(rel), "item": name, **times})
    wall = time.perf_counter() - wall
    body = {"side": "peer", "kinds": sorted(kinds), "items": results, "wall": wall,
            "vm_hwm_kb": vm_hwm_kb(), "supervisely": sly.__version__,
            "opencv": cv2.__version__, "numpy": np.__version__,
            "pillow": Image.__version__}
    text = json.dumps(body)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
