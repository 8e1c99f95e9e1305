"""Small jobs end to end: `maskjob export` of 24 1080p images, process start to manifest.json,
against the Supervisely export-as-masks app's per-image work (real SDK) x 24, same run.

    .venv/bin/python benchmarks/bench_small_jobs.py [--images 24] [--rounds 2] [--peer-images 6]

Needs the SDK venv of benchmarks/run_all.py. Machine + instance masks (no human masks, no image
or annotation copies), the project of bench_supervisely.py replicated to `--images` items.

- ours: `python -m jobs.cli export P O --config mi.yaml` as a fresh process (interpreter start,
  imports, listing, plan, partitions, finalize), timed from the spawn to the mtime of
  `manifest.json` (written last), and to the process's exit; once with the default worker
  choice (jobs/api.py `choose_workers`: in process for a job this small) and once with
  `--workers 2` (a LocalCluster). Rounds interleave; medians; CPU seconds from wait4 rusage
  of the whole process tree (children included).
- peer: benchmarks/peers/sly_app.py on `--peer-images` images pinned to one CPU after one
  warm-up image: median per-image load + machine + instances, x `--images` (the app's
  download, project open and tar are not counted, which favours the peer).
Prints a JSON line and a Markdown table; ratios = peer job / our job from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_supervisely as bs  # noqa: E402
import datagen  # noqa: E402

TARGET = 25.0
PEER_KINDS = ("load", "machine", "instances")


def run_cli(project: Path, out: Path, job: Path, workers: int | None) -> dict:
    """One `maskjob export` process: seconds to manifest.json and to exit, CPU of the tree."""
    cmd = [sys.executable, "-m", "jobs.cli", "export", str(project), str(out),
           "--config", str(job)]
    for s in bs.SETS_NO_COPIES:
        cmd += ["--set", s]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    before = os.times()
    t0 = time.time()
    proc = subprocess.run(cmd, env=bs.child_env(), cwd=bs.REPO, capture_output=True, text=True)
    t_exit = time.time() - t0
    after = os.times()
    manifest = out / "manifest.json"
    if proc.returncode != 0 or not manifest.exists():
        sys.stdout.write(proc.stderr[-3000:])
        raise RuntimeError(f"maskjob export failed (exit {proc.returncode})")
    summary = json.loads(manifest.read_text())
    chose = next((ln.split(" runs ", 1)[1] for ln in proc.stderr.splitlines()
                  if " runs " in ln), "")
    return {"to_manifest": manifest.stat().st_mtime - t0, "to_exit": t_exit,
            "cpu": (after.children_user - before.children_user)
            + (after.children_system - before.children_system),
            "ok": summary["summary"]["ok"], "chose": chose[:200]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peer-images", type=int, default=6)
    args = ap.parse_args(argv)
    if not bs.sly_python().exists():
        print(f"SDK venv missing at {bs.sly_python()}: run benchmarks/run_all.py first")
        return 1
    base = datagen.build_project(bs.DATA / "sly_1080p_12", 12, 1920, 1080, 1)
    copies = -(-args.images // 12)
    project = datagen.replicate_project(base, bs.DATA / f"sly_1080p_12_x{copies}", copies)
    jobs_dir = bs.DATA / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    job = bs.write_job(jobs_dir / "mi.yaml", bs.CONFIGS["mi"][2], 4)
    if copies * 12 != args.images:  # exactly --images items: a trimmed copy of the project
        trimmed = bs.DATA / f"sly_1080p_{args.images}"
        shutil.rmtree(trimmed, ignore_errors=True)
        shutil.copytree(project, trimmed, copy_function=os.link)
        for img in sorted((trimmed / datagen.DATASET / "img").iterdir())[args.images:]:
            (trimmed / datagen.DATASET / "ann" / f"{img.name}.json").unlink()
            img.unlink()
        project = trimmed
    cpus = sorted(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="maskjob-small-"))
    runs: dict[str, list[dict]] = {"default": [], "workers 2": []}
    peer_per_image: list[float] = []
    peer_cpu: list[float] = []
    try:
        for r in range(args.rounds):
            peer, _usage = bs.run_child(bs.peer_cmd(base, tmp / f"peer{r}", "machine,instances",
                                                    args.peer_images),
                                        cpu=cpus[-1], json_path=tmp / "peer.json")
            peer_per_image += [sum(i[k] for k in PEER_KINDS) for i in peer["items"]]
            peer_cpu += [sum(i[k + "_cpu"] for k in PEER_KINDS) for i in peer["items"]]
            for name, workers in (("default", None), ("workers 2", 2)):
                out = tmp / f"ours-{r}-{workers}"
                runs[name].append(run_cli(project, out, job, workers))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peer_job = statistics.median(peer_per_image) * args.images
    peer_job_cpu = statistics.median(peer_cpu) * args.images
    result = {"images": args.images, "peer_per_image": statistics.median(peer_per_image),
              "peer_job": peer_job, "peer_job_cpu": peer_job_cpu, "ours": {}}
    rows = ["| maskjob run | to manifest.json | to exit | CPU s | vs peer (wall) | "
            "vs peer (CPU) | target | met |", "|---|---|---|---|---|---|---|---|"]
    for name, rs in runs.items():
        m = statistics.median(x["to_manifest"] for x in rs)
        e = statistics.median(x["to_exit"] for x in rs)
        c = statistics.median(x["cpu"] for x in rs)
        result["ours"][name] = {"to_manifest": m, "to_exit": e, "cpu": c, "runs": rs,
                                "ratio": peer_job / m, "ratio_cpu": peer_job_cpu / c}
        where = ("in this process" if rs[0]["chose"].startswith("in this process")
                 else "LocalCluster")
        rows.append(f"| `{name}` ({where}) | {m:.2f} s | {e:.2f} s | "
                    f"{c:.2f} | **{peer_job / m:.1f}x** | {peer_job_cpu / c:.1f}x | "
                    f">= {TARGET:.0f}x | {'yes' if peer_job / m >= TARGET else 'no'} |")
    print(json.dumps(result))
    print(f"\nPeer (SDK app, one core): {result['peer_per_image'] * 1000:.0f} ms per image "
          f"(median of {len(peer_per_image)}) x {args.images} = {peer_job:.1f} s "
          f"({peer_job_cpu:.1f} CPU-s).\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
