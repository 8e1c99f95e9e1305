"""Cost of `supervisely.archive: tar` (and `archive_split`): the finalize that streams the tree
into a tar, against the same finalize without it, on the same committed export.

    .venv/bin/python benchmarks/bench_archive.py [--images 150] [--size 1024x768]
                                                  [--split 64MiB] [--s3]

1. Builds a synthetic project (benchmarks/datagen.py) and exports it once with
   `supervisely` (machine + human masks, images and annotations copied), in this process.
2. Runs the REAL `jobs.finalize.finalize_export` on that committed output, each time in a
   FRESH process: without archive (baseline), `archive: tar`, and `archive: tar` +
   `archive_split`. With `--s3`, the committed output is first copied to a moto S3 server and
   the three finalizes run against `s3://` (the archive streams as multipart uploads).
Reports per run: wall seconds, CPU seconds and peak RSS of the finalizing process (the
driver): VmHWM from /proc, because ru_maxrss of a child started by a big parent carries the
parent's peak over fork+exec; the archive's bytes, CPU seconds per GiB archived, and ratios to
the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETS = ["supervisely.masks_machine=true", "supervisely.masks_human=true"]


def finalize_child(src: str, out: str, sets: list[str]) -> dict:
    """One finalize_export of the committed export at `out` (this is the measured process)."""
    from benchmarks.ours import proc_status_kb
    from jobs import config as jobconfig
    from jobs.finalize import finalize_export
    from jobs.listing import list_input
    from jobs.manifest_store import PLAN_KEY
    from jobs.storage import Root

    spec = jobconfig.load(None, [*SETS, *sets], ("supervisely",))
    dest = Root(out)
    listing = list_input(Root(src), "auto", None)
    n_parts = json.loads(dest.read(PLAN_KEY))["partitions"]
    t0, c0 = time.perf_counter(), time.process_time()
    summary = finalize_export(dest=dest, n_parts=n_parts, formats=("supervisely",),
                              options={"supervisely": spec.options["supervisely"]},
                              classes=listing.classes, meta={})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    body = json.loads(dest.read("manifest.json"))
    archive = body.get("format_details", {}).get("supervisely", {}).get("archive", {})
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "peak_rss_mib": round(proc_status_kb("VmHWM") / 1024, 1),
            "archive_bytes": archive.get("bytes", 0), "pieces": len(archive.get("pieces", [])),
            "items": summary.items}


def run_child(src: str, out: str, sets: list[str], env: dict[str, str]) -> dict:
    got = subprocess.run([sys.executable, __file__, "--child", src, out, json.dumps(sets)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--split", default="64MiB")
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(finalize_child(args.child[0], args.child[1],
                                        json.loads(args.child[2]))))
        return

    from benchmarks.datagen import build_project
    from jobs.cli import run

    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="maskjob-bench-archive-"))
    project = build_project(work / "project", args.images, w, h, seed=7)
    out = work / "out"
    sets = [a for s in SETS for a in ("--set", s)]
    assert run(["export", str(project), str(out), "--workers", "0", *sets]) == 0
    env = dict(os.environ)
    target = str(out)
    server = None
    if args.s3:
        from tests.e2e.helpers import MotoServer, new_fs, s3_env, upload_folder

        server = MotoServer(work / "moto.log").start()
        env.update(s3_env(server.endpoint))
        os.environ.update(s3_env(server.endpoint))
        fs = new_fs()
        fs.mkdir("bench")
        upload_folder(fs, out, "s3://bench/out")
        target = "s3://bench/out"
    try:
        runs = {
            "no archive (baseline)": [],
            "archive: tar": ["supervisely.archive=tar"],
            f"archive: tar, split {args.split}": ["supervisely.archive=tar",
                                                  f"supervisely.archive_split={args.split}"],
        }
        results = {name: run_child(str(project), target, s, env) for name, s in runs.items()}
    finally:
        if server is not None:
            server.stop()
    base = results["no archive (baseline)"]
    print(f"\n{args.images} images {args.size}, output {'s3 (moto)' if args.s3 else 'local'}"
          f" ({base['items']} items)")
    print(f"{'run':32} {'wall s':>8} {'cpu s':>8} {'x cpu':>7} {'rss MiB':>8} "
          f"{'archive MiB':>12} {'pieces':>6} {'cpu s/GiB':>9}")
    for name, r in results.items():
        gib = r["archive_bytes"] / (1 << 30)
        extra = (r["cpu_s"] - base["cpu_s"]) / gib if gib else 0
        print(f"{name:32} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} "
              f"{r['cpu_s'] / max(base['cpu_s'], 1e-9):7.2f} {r['peak_rss_mib']:8.1f} "
              f"{r['archive_bytes'] / (1 << 20):12.1f} {r['pieces']:6d} {extra:9.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
