"""Every format in one pass vs each format alone, on the same data (one core each).

    .venv/bin/python benchmarks/bench_formats.py [--images 8] [--rounds 5] [--input both]

Inputs (cached under benchmarks/.data/):
- `supervisely`: the synthetic 1080p project of datagen.py (~40 objects per image: polygons
  with holes, rectangles, bitmaps, a polyline, points), OpenCV pixel rule;
- `coco`: the same photos with a COCO instances JSON of ~40 float polygons (some multi-part)
  and 2 RLE crowd regions per image, pycocotools' pixel rule.
Runs: `maskjob export --workers 0` with each single format (`supervisely` with its defaults:
machine + human masks and image/annotation copies; `clearml`; `zarr`; `cvat` when registered)
and with all of them at once. Rounds are interleaved (each round runs every configuration
once, in a rotated order); each run is a fresh process with one thread for OpenCV/BLAS, timed
inside the process around the export (interpreter start and imports excluded). Prints a
markdown table of medians and the target check: all formats <= 1.5x the slowest single one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import datagen  # noqa: E402

from maskcore.formats import FORMATS  # noqa: E402

DATA = REPO / "benchmarks" / ".data"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENCV_FOR_THREADS_NUM": "1", "ZARR_THREADING__MAX_WORKERS": "1"}
SINGLES = [f for f in ("supervisely", "clearml", "zarr", "cvat") if f in FORMATS]
TARGET = 1.5
COCO_VERSION = 1

RUN = """
import json, sys, time
import cv2
cv2.setNumThreads(1)
from jobs.cli import run
args = json.loads(sys.argv[1])
started = time.perf_counter()
rc = run(args)
print(json.dumps({"seconds": time.perf_counter() - started, "rc": rc}))
"""


def build_coco(root: Path, project: Path, seed: int = 11) -> Path:
    """A COCO dataset on the project's photos (images hard-linked), cached by a stamp."""
    imgs = sorted((project / datagen.DATASET / "img").iterdir())
    params = {"version": COCO_VERSION, "project": json.loads(
        (project / ".complete.json").read_text()), "seed": seed}
    stamp = root / ".complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    import cv2
    from pycocotools import mask as coco_mask

    cats = [{"id": i + 1, "name": n} for i, n in enumerate(("car", "person", "tree", "sign"))]
    images, anns = [], []
    rng = np.random.default_rng(seed)
    for k, img in enumerate(imgs):
        try:
            (root / "images" / img.name).hardlink_to(img)
        except OSError:
            shutil.copy(img, root / "images" / img.name)
        h, w = cv2.imread(str(img), cv2.IMREAD_REDUCED_GRAYSCALE_8).shape
        h, w = h * 8, w * 8
        images.append({"id": k + 1, "file_name": img.name, "width": w, "height": h})
        for j in range(40):
            parts = []
            for _ in range(1 if j % 5 else 2):
                cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), math.exp(
                    rng.uniform(math.log(15), math.log(220)))
                m = int(rng.integers(30, 300))
                ang = np.sort(rng.uniform(0, 2 * math.pi, m))
                rad = r * rng.uniform(0.6, 1.0, m)
                pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
                parts.append([round(float(v), 2) for v in pts.ravel()])
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "iscrowd": 0,
                         "category_id": int(rng.integers(1, 5)), "segmentation": parts})
        for _ in range(2):
            crowd = np.zeros((h, w), np.uint8)
            x, y = int(rng.uniform(0, w - 400)), int(rng.uniform(0, h - 300))
            cv2.ellipse(crowd, (x + 200, y + 150), (190, 140), 0, 0, 360, 1, -1)
            enc = coco_mask.encode(np.asfortranarray(crowd))
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "iscrowd": 1,
                         "category_id": 2, "segmentation": {
                             "size": [h, w], "counts": enc["counts"].decode()}})
    doc = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_bench.json").write_text(json.dumps(doc))
    stamp.write_text(json.dumps(params))
    return root


def timed(args: list[str]) -> float:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
    got = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], cwd=REPO, env=env,
                         capture_output=True, text=True, check=False)
    if got.returncode != 0:
        raise SystemExit(f"{args} failed:\n{got.stderr[-3000:]}")
    result = json.loads(got.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{args} exited {result['rc']}:\n{got.stderr[-3000:]}")
    return float(result["seconds"])


def bench(inp: Path, rounds: int, tmp: Path) -> dict[str, list[float]]:
    configs = {f: [f] for f in SINGLES}
    configs["all"] = list(SINGLES)
    names = list(configs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            out = tmp / f"out-{name}"
            if out.exists():
                shutil.rmtree(out)
            fmt = [a for f in configs[name] for a in ("--format", f)]
            times[name].append(timed(["export", str(inp), str(out), "--workers", "0", *fmt]))
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
              file=sys.stderr)
    return times


def table(label: str, n: int, times: dict[str, list[float]]) -> bool:
    med = {k: statistics.median(v) for k, v in times.items()}
    slowest = max(med[f] for f in SINGLES)
    print(f"\n{label}: {n} images, {len(next(iter(times.values())))} interleaved rounds, "
          "one core\n")
    print("| formats | median s | ms / image | vs slowest single |")
    print("|---|---:|---:|---:|")
    for name in [*SINGLES, "all"]:
        shown = " + ".join(SINGLES) if name == "all" else name
        print(f"| {shown} | {med[name]:.2f} | {1000 * med[name] / n:.0f} | "
              f"{med[name] / slowest:.2f}x |")
    total = sum(med[f] for f in SINGLES)
    ok = med["all"] <= TARGET * slowest
    print(f"\nall in one pass: {med['all'] / slowest:.2f}x the slowest single format "
          f"(target <= {TARGET}x: {'met' if ok else 'MISSED'}); the singles run one after "
          f"another would take {total:.2f} s ({total / med['all']:.2f}x the one pass).")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--input", choices=("supervisely", "coco", "both"), default="both")
    args = ap.parse_args()
    project = datagen.build_project(DATA / f"sly_1080p_{args.images}", args.images, 1920, 1080,
                                    seed=1)
    inputs = []
    if args.input in ("supervisely", "both"):
        inputs.append(("Supervisely project (OpenCV rule)", project))
    if args.input in ("coco", "both"):
        inputs.append(("COCO instances (pycocotools rule)",
                       build_coco(DATA / f"coco_1080p_{args.images}", project)))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for label, inp in inputs:
            ok &= table(label, args.images, bench(inp, args.rounds, Path(tmp)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
