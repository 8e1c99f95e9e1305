"""Nightly cost: an --incremental rerun with 1% of the items changed vs the full export.

    .venv/bin/python benchmarks/bench_incremental.py [--items 400] [--rounds 3]

Builds (cached in benchmarks/.data/) a Supervisely project of 640x480 JPEGs with 25 polygons
each, exports it in full (`--workers 0`, machine + human + instance masks), then per round
rewrites 1% of the annotations and runs the same command with --incremental. Prints medians
and the ratio (target: the incremental run costs <= 5% of the full run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.cli import run  # noqa: E402


def make_project(root: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"classes": [
        {"title": f"c{i}", "shape": "polygon", "color": f"#{i * 40:02X}8040"} for i in range(5)
    ]}))
    for sub in ("img", "ann"):
        (root / "ds" / sub).mkdir(parents=True)
    base = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    for k in range(n):
        name = f"img{k:05d}.jpg"
        cv2.imwrite(str(root / "ds/img" / name), np.roll(base, k, axis=1))
        write_ann(root, name, rng)


def write_ann(root: Path, name: str, rng: np.random.Generator) -> None:
    objs = []
    for _ in range(25):
        cx, cy, r = rng.integers(40, 600), rng.integers(40, 440), rng.integers(10, 60)
        a = np.sort(rng.uniform(0, 2 * np.pi, 30))
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).round().tolist()
        objs.append({"classTitle": f"c{rng.integers(0, 5)}", "tags": [],
                     "points": {"exterior": pts, "interior": []}})
    (root / "ds/ann" / (name + ".json")).write_text(json.dumps(
        {"size": {"width": 640, "height": 480}, "tags": [], "objects": objs}))


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    rc = run(argv)
    assert rc == 0, rc
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    data = ROOT / "benchmarks/.data" / f"incremental_{a.items}"
    if not data.exists():
        make_project(data, a.items)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(data, project)
        out = str(Path(tmp) / "out")
        args = ["export", str(project), out, "--workers", "0", "--set",
                "supervisely.masks_instances=true", "--set", "supervisely.images=false"]
        full, nightly = [], []
        for _ in range(a.rounds):
            shutil.rmtree(out, ignore_errors=True)
            full.append(timed(args))
            for k in rng.choice(a.items, max(1, a.items // 100), replace=False):
                write_ann(project, f"img{k:05d}.jpg", rng)
            nightly.append(timed([*args, "--incremental"]))
            summary = json.loads((Path(out) / "manifest.json").read_text())["summary"]
            assert summary["ok"] == max(1, a.items // 100), summary
    f, n = statistics.median(full), statistics.median(nightly)
    print(f"| run ({a.items} items, 640x480, machine + human + instances, --workers 0) "
          "| median s | vs full |")
    print("|---|---:|---:|")
    print(f"| full export | {f:.2f} | 100% |")
    print(f"| --incremental, 1% of annotations changed | {n:.2f} | {100 * n / f:.1f}% |")


if __name__ == "__main__":
    main()
