"""CVAT Segmentation Mask 1.1 export: datumaro (as CVAT runs it) vs maskjob, one core each.

    .venv/bin/python benchmarks/bench_cvat.py [--images 20] [--polygons 50] [--rounds 5]
    .venv/bin/python benchmarks/bench_cvat.py --dense [--images 64,96] [--rounds 1] [--baseline DIR]

`--dense`: ~110 shapes per 1080p image (70 float polygons, 12 boxes, 12 rotated boxes, 15 RLE
masks, an ellipse; some grouped, z_order 0-2, some crossing the border), run at two sizes N1 < N2
(the smaller task is the first N1 images of the larger): the MARGINAL cost per image,
(t(N2) - t(N1)) / (N2 - N1), of each side (whole job, wall and CPU seconds, so fixed costs such
as imports, listing and finalize cancel), the whole-job figures at N2, and each side's peak RSS.
The default 64,96: a job of N <= 6400 items plans min(N, 64) partitions, so from 64 images up
the partition count is fixed and the marginal cost is per image, as in a large job (with N1 <
64 it also carries the per-partition costs of a small job: thread pools, manifest parts).
maskjob's CPU per image inside the partitions of the N2 job is printed too (process time
around each partition: fixed costs drop out without a difference of two runs, so it holds up
under load where the marginal figures do not). `--baseline DIR`: also time the maskjob of
another checkout (e.g. a `git worktree` of the commit before a change) in the same rounds,
interleaved, and compare its PNGs with datumaro's too: its row, and our speed-up over it,
come from the same machine load.

Builds a CVAT for images 1.1 task (annotations.xml and placeholder JPEGs: neither tool reads
pixels for this format) with N images of 1920x1080 and about P float polygons each, plus a few
boxes (some rotated) and ellipses, then alternates rounds: datumaro 1.13.12 in the oracle venv
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
import json, resource, sys, time
import cv2
cv2.setNumThreads(1)
import jobs.run
from jobs.cli import run
items = [0.0, 0.0]
inner = jobs.run.process_partition
def timed_partition(*args):
    t, c = time.perf_counter(), time.process_time()
    try:
        return inner(*args)
    finally:
        items[0] += time.perf_counter() - t
        items[1] += time.process_time() - c
jobs.run.process_partition = timed_partition
started, cpu = time.perf_counter(), time.process_time()
rc = run(["export", sys.argv[1], sys.argv[2], "--format", "cvat", "--workers", "0"])
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                  "items": items[0], "items_cpu": items[1], "rc": rc,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# datumaro's side, run in the oracle venv from tests/oracles: the same export_task as
# `datumaro_oracle.py --export-task`, with CPU seconds and peak RSS
THEIRS = """
import json, resource, sys, time
from pathlib import Path
import cv2
cv2.setNumThreads(1)
import datumaro_oracle
started, cpu = time.perf_counter(), time.process_time()
datumaro_oracle.export_task(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build_task(root: Path, n_images: int, n_polygons: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        rows = []
        for k in range(n_polygons):
            pts = _polygon_points(rng)
            rows.append(f'    <polygon label="{LABELS[k % len(LABELS)][0]}" points="{pts}" '
                        f'z_order="{int(rng.integers(0, 3))}"/>')
        for k in range(5):
            x, y = rng.uniform(0, W - 300), rng.uniform(0, H - 300)
            rot = f' rotation="{rng.uniform(-45, 45):.2f}"' if k % 2 else ""
            rows.append(f'    <box label="car" xtl="{x:.2f}" ytl="{y:.2f}" xbr="{x + 250:.2f}" '
                        f'ybr="{y + 120:.2f}"{rot} z_order="1"/>')
            rows.append(f'    <ellipse label="sign" cx="{x + 100:.2f}" cy="{y + 60:.2f}" '
                        f'rx="{rng.uniform(10, 90):.2f}" ry="{rng.uniform(10, 90):.2f}" '
                        f'rotation="{rng.uniform(0, 90):.2f}" z_order="2"/>')
        images.append(rows)
    write_task(root, images)


def _polygon_points(rng: np.random.Generator) -> str:
    cx, cy = rng.uniform(0, W), rng.uniform(0, H)
    r = rng.uniform(20, 250)
    m = int(rng.integers(6, 40))
    ang = np.sort(rng.uniform(0, 2 * math.pi, m))
    rad = rng.uniform(0.5 * r, r, m)
    return ";".join(f"{cx + q * math.cos(a):.2f},{cy + q * math.sin(a):.2f}"
                    for a, q in zip(ang, rad, strict=True))


def cvat_rle(mask: np.ndarray) -> str:
    """CVAT's `<mask rle>`: row-major run lengths over the box, starting with a 0-run."""
    flat = mask.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    return ",".join(map(str, runs))


def _blob(rng: np.random.Generator, bw: int, bh: int) -> np.ndarray:
    yy, xx = np.mgrid[0:bh, 0:bw]
    d = ((yy - bh / 2) / (bh / 2)) ** 2 + ((xx - bw / 2) / (bw / 2)) ** 2
    noise = cv2.resize(rng.uniform(-1, 1, (6, 6)).astype(np.float32), (bw, bh))
    mask = (1 - d + 0.5 * noise) > 0.3
    mask[0, :] |= rng.uniform(size=bw) < 0.2  # touches the box's edges (and, placed there, the
    mask[:, -1] |= rng.uniform(size=bh) < 0.2  # image's): runs start and end on a border
    return mask


def dense_image(rng: np.random.Generator, i: int) -> list[str]:
    """~110 shapes: 70 float polygons (some crossing the border), 12 boxes, 12 rotated boxes,
    15 RLE masks (one flush with the right and bottom edges), one ellipse; a few grouped."""
    rows = []
    z = lambda: f' z_order="{int(rng.integers(0, 3))}"'  # noqa: E731
    for k in range(70):
        grp = f' group_id="{1 + k % 3}"' if k < 6 else ""
        rows.append(f'    <polygon label="{LABELS[k % len(LABELS)][0]}" occluded="0" '
                    f'points="{_polygon_points(rng)}"{z()}{grp}/>')
    for k in range(24):
        bw, bh = rng.uniform(20, 400), rng.uniform(20, 300)
        x, y = rng.uniform(-40, W - bw + 40), rng.uniform(-40, H - bh + 40)
        rot = f' rotation="{rng.uniform(-180, 180):.2f}"' if k % 2 else ""
        rows.append(f'    <box label="{LABELS[k % len(LABELS)][0]}" occluded="0" '
                    f'xtl="{x:.2f}" ytl="{y:.2f}" xbr="{x + bw:.2f}" ybr="{y + bh:.2f}"{rot}'
                    f'{z()}/>')
    for k in range(15):
        bw, bh = int(rng.integers(30, 300)), int(rng.integers(30, 250))
        left, top = int(rng.integers(0, W - bw + 1)), int(rng.integers(0, H - bh + 1))
        if k == 0:
            left, top = W - bw, H - bh
        grp = ' group_id="3"' if k == 1 else ""
        rows.append(f'    <mask label="{LABELS[k % len(LABELS)][0]}" occluded="0" '
                    f'rle="{cvat_rle(_blob(rng, bw, bh))}" left="{left}" top="{top}" '
                    f'width="{bw}" height="{bh}"{z()}{grp}/>')
    rows.append(f'    <ellipse label="sign" occluded="0" cx="{rng.uniform(0, W):.2f}" '
                f'cy="{rng.uniform(0, H):.2f}" rx="{rng.uniform(10, 150):.2f}" '
                f'ry="{rng.uniform(10, 150):.2f}" rotation="{rng.uniform(0, 90):.2f}"{z()}/>')
    order = rng.permutation(len(rows))  # kinds interleaved, as annotators make them
    return [rows[j] for j in order]


def build_dense_task(root: Path, n_images: int, seed: int = 7) -> None:
    """A task of `n_images` dense images; image i is the same whatever `n_images`."""
    write_task(root, [dense_image(np.random.default_rng([seed, i]), i) for i in range(n_images)])


def write_task(root: Path, images: list[list[str]]) -> None:
    """annotations.xml with one `<image>` per list of shape rows, and under images/ a black
    JPEG of the task's size per image (the job fails items without their image; neither side
    decodes it for this format)."""
    rows = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>",
            "  <meta><task><labels>"]
    rows += [f"    <label><name>{n}</name><color>{c}</color></label>" for n, c in LABELS]
    rows.append("  </labels></task></meta>")
    for i, shapes in enumerate(images):
        rows.append(f'  <image id="{i}" name="frame_{i:06d}.jpg" width="{W}" height="{H}">')
        rows += shapes
        rows.append("  </image>")
    rows.append("</annotations>")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations.xml").write_text("\n".join(rows) + "\n")
    ok, jpeg = cv2.imencode(".jpg", np.zeros((H, W, 3), np.uint8))
    assert ok
    for i in range(len(images)):
        (root / "images" / f"frame_{i:06d}.jpg").write_bytes(jpeg.tobytes())


def timed(cmd: list[str], cwd: Path, repo: Path = REPO) -> dict[str, float]:
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(repo)}
    got = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if got.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def compare_pngs(theirs: Path, ours: Path) -> dict[str, int]:
    """Every PNG datumaro wrote, decoded (RGB) and compared with ours: how many there are, how
    many differ, and how many of ours have no counterpart."""
    bad = total = 0
    for p in sorted(theirs.rglob("*.png")):
        rel = p.relative_to(theirs)
        a, b = cv2.imread(str(p)), cv2.imread(str(ours / rel))
        total += 1
        bad += int(b is None or a.shape != b.shape or (a != b).any())
    extra = sum(1 for p in ours.rglob("*.png") if not (theirs / p.relative_to(ours)).exists())
    return {"pngs": total, "differ": bad, "extra": extra}


def same_pixels(theirs: Path, ours: Path) -> int:
    return compare_pngs(theirs, ours)["differ"]


def _sides(task: Path, tmp: Path, tag: str) -> tuple[list[str], list[str], Path, Path]:
    dm_out, mj_out = tmp / f"dm{tag}", tmp / f"mj{tag}"
    for d in (dm_out, mj_out):
        if d.exists():
            shutil.rmtree(d)
    return ([str(ORACLE_PY), "-c", THEIRS, str(task), str(dm_out)],
            [sys.executable, "-c", OURS, str(task), str(mj_out)], dm_out, mj_out / "cvat")


def dense(args: argparse.Namespace) -> None:
    n1, n2 = sorted(int(v) for v in (args.images or "64,96").split(","))
    base = Path(args.baseline).resolve() if args.baseline else None
    rounds = args.rounds or 1
    oracles = REPO / "tests" / "oracles"
    runs: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for n in (n1, n2):
            build_dense_task(tmp / f"task{n}", n)
        shapes = (tmp / f"task{n2}" / "annotations.xml").read_text().count(' label="') - 5
        for r in range(rounds):
            for n in (n1, n2):
                theirs_cmd, ours_cmd, _, _ = _sides(tmp / f"task{n}", tmp, str(n))
                runs.setdefault(("dm", n), []).append(timed(theirs_cmd, oracles))
                runs.setdefault(("mj", n), []).append(timed(ours_cmd, REPO))
                if base is not None:
                    base_cmd = [*ours_cmd[:-1], str(tmp / f"base{n}")]
                    shutil.rmtree(tmp / f"base{n}", ignore_errors=True)
                    runs.setdefault(("base", n), []).append(timed(base_cmd, base, base))
                print(f"round {r + 1}, {n} images: datumaro {runs['dm', n][-1]['seconds']:.2f} s, "
                      f"maskjob {runs['mj', n][-1]['seconds']:.2f} s", file=sys.stderr)
        cmp = compare_pngs(tmp / f"dm{n2}", tmp / f"mj{n2}" / "cvat")
        cmp_base = compare_pngs(tmp / f"dm{n2}", tmp / f"base{n2}" / "cvat") if base else None

    def med(side: str, n: int, key: str) -> float:
        return statistics.median(x[key] for x in runs[side, n])

    def marginal(side: str, key: str) -> float:  # ms per image
        return 1000 * statistics.median(
            (b[key] - a[key]) / (n2 - n1) for a, b in zip(runs[side, n1], runs[side, n2],
                                                           strict=True))

    print(f"\nCVAT Segmentation Mask 1.1, DENSE: {W}x{H}, ~{shapes / n2:.0f} shapes per image "
          f"(70 float polygons, 12 boxes, 12 rotated boxes, 15 RLE masks, 1 ellipse), "
          f"{n1} and {n2} images, {rounds} round(s), one core each\n")
    print("| exporter | marginal ms/image (wall) | marginal CPU ms/image | "
          f"whole job {n2} images, s (CPU s) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    sides = [("dm", "datumaro 1.13.12 (CVAT's pipeline)"), ("mj", "maskjob `--workers 0`")]
    if base is not None:
        sides.append(("base", f"maskjob `--workers 0`, baseline {base.name}"))
    for side, title in sides:
        print(f"| {title} | {marginal(side, 'seconds'):.1f} | {marginal(side, 'cpu'):.1f} | "
              f"{med(side, n2, 'seconds'):.2f} ({med(side, n2, 'cpu'):.2f}) | "
              f"{med(side, n2, 'rss_mb'):.0f} |")
    wall_x = marginal("dm", "seconds") / marginal("mj", "seconds")
    cpu_x = marginal("dm", "cpu") / marginal("mj", "cpu")
    print(f"\nspeed-up, marginal per image: {wall_x:.1f}x wall, {cpu_x:.1f}x CPU; whole job "
          f"({n2} images): {med('dm', n2, 'seconds') / med('mj', n2, 'seconds'):.1f}x wall, "
          f"{med('dm', n2, 'cpu') / med('mj', n2, 'cpu'):.1f}x CPU")
    print(f"PNGs compared: {cmp['pngs']} ({n2} images x class + object), differing from "
          f"datumaro's: {cmp['differ']}; PNGs only maskjob wrote: {cmp['extra']}")
    inside = {side: 1000 * med(side, n2, "items_cpu") / n2 for side in ("mj", "base")
              if (side, n2) in runs}
    print("CPU ms per image inside the partitions (" + f"{n2} images): " + ", ".join(
        f"{'maskjob' if side == 'mj' else 'baseline'} {v:.1f}" for side, v in inside.items())
        + (f"; baseline / maskjob {inside['base'] / inside['mj']:.2f}x" if "base" in inside
           else ""))
    if base is not None and cmp_base is not None:
        print(f"baseline: {marginal('dm', 'seconds') / marginal('base', 'seconds'):.1f}x wall, "
              f"{marginal('dm', 'cpu') / marginal('base', 'cpu'):.1f}x CPU marginal; ours over "
              f"the baseline {marginal('base', 'seconds') / marginal('mj', 'seconds'):.2f}x wall, "
              f"{marginal('base', 'cpu') / marginal('mj', 'cpu'):.2f}x CPU; its PNGs differing "
              f"from datumaro's: {cmp_base['differ']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dense", action="store_true",
                    help="dense images (~110 shapes incl. RLE masks), marginal cost per image")
    ap.add_argument("--images", default=None,
                    help="images (default 20); with --dense two sizes 'N1,N2' (default 64,96)")
    ap.add_argument("--polygons", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=None, help="default 5 (--dense: 1)")
    ap.add_argument("--baseline", default=None,
                    help="--dense: also time the maskjob checkout at this path, same rounds")
    args = ap.parse_args()
    if not ORACLE_PY.exists():
        raise SystemExit("datumaro venv missing: run tests/oracles/run_datumaro_oracle.sh "
                         "--setup-only")
    if args.dense:
        dense(args)
        return
    n = int(args.images or 20)
    rounds = args.rounds or 5
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        task = tmp / "task"
        build_task(task, n, args.polygons)
        t_dm, t_mj, t_items = [], [], []
        for r in range(rounds):
            theirs_cmd, ours_cmd, dm_out, mj_out = _sides(task, tmp, "")
            t_dm.append(timed(theirs_cmd, REPO / "tests" / "oracles")["seconds"])
            got = timed(ours_cmd, REPO)
            t_mj.append(got["seconds"])
            t_items.append(got["items"])
            print(f"round {r + 1}: datumaro {t_dm[-1]:.2f} s, maskjob {t_mj[-1]:.2f} s "
                  f"(items {t_items[-1]:.2f} s)", file=sys.stderr)
        mismatched = same_pixels(dm_out, mj_out)
    d, m, i = (statistics.median(t) for t in (t_dm, t_mj, t_items))
    print(f"\nCVAT Segmentation Mask 1.1, {n} images {W}x{H}, ~{args.polygons} polygons + 5 "
          f"boxes + 5 ellipses each, {rounds} interleaved rounds, one core each\n")
    print("| exporter | median s | images/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| datumaro 1.13.12 (CVAT's pipeline) | {d:.2f} | {n / d:.2f} | 1.0x |")
    print(f"| maskjob `--workers 0`, whole job | {m:.2f} | {n / m:.2f} | {d / m:.1f}x |")
    print(f"| maskjob, items only (partitions, no listing/finalize) | {i:.2f} | {n / i:.2f} | "
          f"{d / i:.1f}x |")
    print(f"\nPNGs differing from datumaro's: {mismatched}")


if __name__ == "__main__":
    main()
