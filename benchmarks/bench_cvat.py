"""CVAT Segmentation Mask 1.1 export: datumaro (as CVAT runs it) vs maskjob, one core each.

    .venv/bin/python benchmarks/bench_cvat.py [--images 20] [--polygons 50] [--rounds 5]

Builds a CVAT for images 1.1 task (annotations.xml only: neither tool reads pixels for this
format) with N images of 1920x1080 and about P float polygons each, plus a few boxes (some
rotated) and ellipses, then alternates rounds: datumaro 1.13.12 in the oracle venv
(tests/oracles/run_datumaro_oracle.sh; the same pipeline as the goldens: CVAT's
RotatedBoxesToPolygons, polygons_to_masks, boxes_to_masks, merge_instance_segments,
voc_segmentation export) and `maskjob export --format cvat --workers 0`. Each side runs in its
own fresh process with OMP/OpenBLAS/OpenCV limited to one thread and is timed inside the
process around the export only (interpreter start and imports excluded). Prints a markdown
table of medians and the ratio, and checks that both produced the same pixels.
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

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MASKJOB_ORACLE_CACHE", Path.home() / ".cache" / "maskjob"))
ORACLE_PY = CACHE / "datumaro-1.13.12" / "bin" / "python"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENCV_FOR_THREADS_NUM": "1"}
LABELS = [("person", "#fa3253"), ("car", "#33ddff"), ("road", "#b83df5"), ("tree", "#3df53d"),
          ("sign", "#ff6a4d")]
W, H = 1920, 1080

OURS = """
import json, sys, time
import cv2
cv2.setNumThreads(1)
import jobs.run
from jobs.cli import run
items = [0.0]
inner = jobs.run.process_partition
def timed_partition(*args):
    t = time.perf_counter()
    try:
        return inner(*args)
    finally:
        items[0] += time.perf_counter() - t
jobs.run.process_partition = timed_partition
started = time.perf_counter()
rc = run(["export", sys.argv[1], sys.argv[2], "--format", "cvat", "--workers", "0"])
print(json.dumps({"seconds": time.perf_counter() - started, "items": items[0], "rc": rc}))
"""


def build_task(root: Path, n_images: int, n_polygons: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    rows = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>",
            "  <meta><task><labels>"]
    rows += [f"    <label><name>{n}</name><color>{c}</color></label>" for n, c in LABELS]
    rows.append("  </labels></task></meta>")
    for i in range(n_images):
        rows.append(f'  <image id="{i}" name="frame_{i:06d}.jpg" width="{W}" height="{H}">')
        for k in range(n_polygons):
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            r = rng.uniform(20, 250)
            m = int(rng.integers(6, 40))
            ang = np.sort(rng.uniform(0, 2 * math.pi, m))
            rad = rng.uniform(0.5 * r, r, m)
            pts = ";".join(f"{cx + q * math.cos(a):.2f},{cy + q * math.sin(a):.2f}"
                           for a, q in zip(ang, rad, strict=True))
            label = LABELS[k % len(LABELS)][0]
            rows.append(f'    <polygon label="{label}" points="{pts}" '
                        f'z_order="{int(rng.integers(0, 3))}"/>')
        for k in range(5):
            x, y = rng.uniform(0, W - 300), rng.uniform(0, H - 300)
            rot = f' rotation="{rng.uniform(-45, 45):.2f}"' if k % 2 else ""
            rows.append(f'    <box label="car" xtl="{x:.2f}" ytl="{y:.2f}" xbr="{x + 250:.2f}" '
                        f'ybr="{y + 120:.2f}"{rot} z_order="1"/>')
            rows.append(f'    <ellipse label="sign" cx="{x + 100:.2f}" cy="{y + 60:.2f}" '
                        f'rx="{rng.uniform(10, 90):.2f}" ry="{rng.uniform(10, 90):.2f}" '
                        f'rotation="{rng.uniform(0, 90):.2f}" z_order="2"/>')
        rows.append("  </image>")
    rows.append("</annotations>")
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.xml").write_text("\n".join(rows) + "\n")


def timed(cmd: list[str], cwd: Path) -> dict[str, float]:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)}
    got = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if got.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def same_pixels(theirs: Path, ours: Path) -> int:
    bad = 0
    for p in sorted(theirs.rglob("*.png")):
        rel = p.relative_to(theirs)
        a, b = cv2.imread(str(p)), cv2.imread(str(ours / rel))
        bad += int(b is None or a.shape != b.shape or (a != b).any())
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--polygons", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not ORACLE_PY.exists():
        raise SystemExit("datumaro venv missing: run tests/oracles/run_datumaro_oracle.sh "
                         "--setup-only")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        task = tmp / "task"
        build_task(task, args.images, args.polygons)
        theirs_cmd = [str(ORACLE_PY), "datumaro_oracle.py", "--export-task", str(task),
                      str(tmp / "dm")]
        ours_cmd = [sys.executable, "-c", OURS, str(task), str(tmp / "mj")]
        t_dm, t_mj, t_items = [], [], []
        for r in range(args.rounds):
            t_dm.append(timed(theirs_cmd, REPO / "tests" / "oracles")["seconds"])
            if (tmp / "mj").exists():
                shutil.rmtree(tmp / "mj")
            got = timed(ours_cmd, REPO)
            t_mj.append(got["seconds"])
            t_items.append(got["items"])
            print(f"round {r + 1}: datumaro {t_dm[-1]:.2f} s, maskjob {t_mj[-1]:.2f} s "
                  f"(items {t_items[-1]:.2f} s)", file=sys.stderr)
        mismatched = same_pixels(tmp / "dm", tmp / "mj" / "cvat")
    d, m, i = (statistics.median(t) for t in (t_dm, t_mj, t_items))
    n = args.images
    print(f"\nCVAT Segmentation Mask 1.1, {n} images {W}x{H}, ~{args.polygons} polygons + 5 "
          f"boxes + 5 ellipses each, {args.rounds} interleaved rounds, one core each\n")
    print("| exporter | median s | images/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| datumaro 1.13.12 (CVAT's pipeline) | {d:.2f} | {n / d:.2f} | 1.0x |")
    print(f"| maskjob `--workers 0`, whole job | {m:.2f} | {n / m:.2f} | {d / m:.1f}x |")
    print(f"| maskjob, items only (partitions, no listing/finalize) | {i:.2f} | {n / i:.2f} | "
          f"{d / i:.1f}x |")
    print(f"\nPNGs differing from datumaro's: {mismatched}")


if __name__ == "__main__":
    main()
