"""Our side of the benchmarks, run as a child process with maskjob's venv.

    ours.py time    --project P --out O --config C [--set K=V]... [--warmup]
    ours.py profile --project P --out O --config C [--set K=V]... --top N
    ours.py cli     --project P --out O --config C [--set K=V]... --workers N

- `time`: the job is planned by `maskjob export` itself (config file + --set, listing,
  options; run in process and stopped just before its partitions execute), then every item
  is exported by
  `jobs.tasks.process_partition` on a partition of its own, in this process, and timed: that
  is the per-image cost of a worker (parse, render, encode, write the files and the manifest
  part). Then the whole CLI (`jobs.cli.run([... "--workers", "0"])`) is timed end to end on a
  fresh output (listing, plan, partitions, finalize) for a per-image figure that includes
  everything but interpreter start-up.
- `profile`: the same per-item loop under cProfile; prints the top functions (JSON).
- `cli`: `jobs.cli.run` with `--workers N` (0 = in-process); reports wall time and the
  export's own duration from `manifest.json` (excludes LocalCluster start-up), and this
  process's peak RSS (VmHWM) and RSS after imports.

OpenCV is pinned to one thread here (cv2.setNumThreads(1)); the parent sets OMP_NUM_THREADS,
OPENCV_FOR_THREADS_NUM etc. and the CPU affinity.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import job as graph  # noqa: E402  (the driver flow; run_partitions is patched there)
from jobs.cli import run  # noqa: E402
from jobs.listing import ItemRef  # noqa: E402
from jobs.manifest_store import PlanSlice, read_slice  # noqa: E402
from jobs.tasks import ExportContext, process_partition  # noqa: E402

cv2.setNumThreads(1)


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _Planned(BaseException):  # not an Exception: the job must not turn it into exit 3
    """Raised from inside `maskjob export` once its partitions are planned."""

    def __init__(self, parts: list[PlanSlice], ctx: ExportContext) -> None:
        super().__init__("planned")
        self.parts, self.ctx = parts, ctx


Job = tuple[ExportContext, PlanSlice]


def plan_jobs(project: str, out: str, config: str, sets: list[str]) -> list[Job]:
    """One partition per item, exactly as `maskjob export` plans them (`partition_size=1`):
    the CLI is run in this process up to the point where its partitions are handed to the
    executor. The plan shards stay under `out` (the partitions read their items there)."""

    def capture(parts: Iterable[PlanSlice], *, ctx: ExportContext, **_kwargs: object) -> None:
        raise _Planned(list(parts), ctx)

    argv = ["export", project, out, "--config", config, "--workers", "0"]
    for s in [*sets, "partition_size=1"]:
        argv += ["--set", s]
    original = graph.run_partitions
    graph.run_partitions = capture
    try:
        rc = run(argv)
    except _Planned as planned:
        return [(planned.ctx, part) for part in planned.parts]
    finally:
        graph.run_partitions = original
    raise SystemExit(f"maskjob export did not plan any partition (exit {rc})")


def _item(job: Job) -> ItemRef:
    ctx, part = job
    return read_slice(ctx.dest, part)[0][0]


def cmd_time(args: argparse.Namespace) -> dict:
    jobs = plan_jobs(args.project, args.out, args.config, args.set)
    if args.warmup and jobs:  # first-call costs (lazy imports, codec init), untimed
        process_partition(*jobs[0])
    items = []
    failed = 0
    for job in jobs:
        c0, t0 = time.process_time(), time.perf_counter()
        counts = process_partition(*job)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        failed += counts["failed"]
        ref = _item(job)
        items.append({"dataset": ref.dataset, "item": ref.name,
                      "total": dt, "cpu": cpu, "outputs": counts["outputs"],
                      "bytes": counts["bytes"]})
    # end to end: the CLI in this process, on a fresh output
    e2e_out = args.out + "_cli"
    argv = ["export", args.project, e2e_out, "--config", args.config, "--workers", "0"]
    for s in args.set:
        argv += ["--set", s]
    t0 = time.perf_counter()
    rc = run(argv)
    e2e = time.perf_counter() - t0
    shutil.rmtree(e2e_out, ignore_errors=True)
    return {"side": "ours", "items": items, "failed": failed, "cli_rc": rc,
            "cli_wall": e2e, "cli_items": len(jobs)}


def cmd_profile(args: argparse.Namespace) -> dict:
    jobs = plan_jobs(args.project, args.out, args.config, args.set)
    if jobs:
        process_partition(*jobs[0])  # warm-up, untimed
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for job in jobs:
        process_partition(*job)
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof)
    n = max(len(jobs), 1)
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():
        where = filename
        for marker in (str(ROOT) + "/", "site-packages/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        rows.append({"func": f"{where}:{line}({func})" if line else func, "calls": nc / n,
                     "tottime_ms": 1000 * tt / n, "cumtime_ms": 1000 * ct / n})
    by_tot = sorted(rows, key=lambda r: -r["tottime_ms"])[: args.top]
    by_cum = sorted(rows, key=lambda r: -r["cumtime_ms"])[: args.top * 2]
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(args.top)
    return {"items": len(jobs), "wall_ms_per_item": 1000 * wall / n, "by_tottime": by_tot,
            "by_cumtime": by_cum, "pstats": text.getvalue()}


def cmd_cli(args: argparse.Namespace) -> dict:
    rss_after_imports = proc_status_kb("VmRSS")
    argv = ["export", args.project, args.out, "--config", args.config,
            "--workers", str(args.workers)]
    for s in args.set:
        argv += ["--set", s]
    t0 = time.perf_counter()
    rc = run(argv)
    wall = time.perf_counter() - t0
    summary = json.loads((Path(args.out) / "manifest.json").read_text())
    return {"rc": rc, "wall": wall, "export_seconds": summary.get("seconds"),
            "items": summary["summary"].get("items"), "ok": summary["summary"].get("ok"),
            "vm_hwm_kb": proc_status_kb("VmHWM"), "rss_after_imports_kb": rss_after_imports}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=("time", "profile", "cli"))
    ap.add_argument("--project", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--warmup", action="store_true")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    result = {"time": cmd_time, "profile": cmd_profile, "cli": cmd_cli}[args.cmd](args)
    text = json.dumps(result)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
