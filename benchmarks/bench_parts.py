"""The driver's listing of committed parts at resume: `prepare_plan` on the REAL resume path
(jobs/plan.py -> manifest_store's listing of `_manifest/`), at 1k and 100k parts.

    nice .venv/bin/python benchmarks/bench_parts.py [--local 1000,100000] [--s3 1000,4000]
                                                    [--base /path/to/other/checkout]
                                                    [--replan 1000,20000] [--repeats 2]

For each N: an output holding plan.json, N committed parts of its token and 10 parts of another
plan (late commits of a dead driver, re-created before every run: the resume deletes them).
Each measurement is a FRESH process that builds the Plan (N partitions) and opens the store,
then runs `prepare_plan` - the resume - and reports its peak RSS (VmHWM: ru_maxrss of the
process image alone - Linux's ru_maxrss keeps the parent's peak across fork and exec), the
growth of that peak during the call (the listing's share), CPU and wall seconds.
`--replan 1000,20000`: the other branch of prepare_plan at those Ns (settings changed: all N
parts of the old plan are stale and deleted; local disk only, re-created for every run).
`--base DIR`: the same measurements with PYTHONPATH=DIR (e.g. a `git worktree` of the branch
point), interleaved with this checkout's, so ratios come from the same run. `--s3`: on a moto
S3 server (tests/e2e/helpers.py); moto takes ~25 ms per PUT on a loaded machine, so its Ns
are smaller. Outputs go under .scratch/bench_parts/ (removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STALE = 10
TOKEN, OTHER = "a" * 16, "b" * 16

CHILD = r"""
import json, sys, time
from array import array
from jobs.manifest_store import PLAN_KEY, ShardWriter
from jobs.plan import Plan, prepare_plan
from jobs.storage import Root
url, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dest = Root(url)
previous = json.loads(dest.read(PLAN_KEY))  # opens the store (an S3 client) before measuring
shards = ShardWriter(dest)
shards.shard_of, shards.starts, shards.ends = array("i", [0]) * n, array("q", [0]) * n, \
    array("q", [0]) * n
plan = Plan(previous["fingerprint"] if mode == "resume" else "sha256:changed", 1, n, shards, 1)
def hwm():  # this process image's own peak RSS in KB (ru_maxrss would include the peak
    # of the benchmark's parent: Linux carries the maximum across fork and exec)
    with open("/proc/self/status") as f:
        return int(next(x for x in f if x.startswith("VmHWM:")).split()[1])
before = hwm()
cpu, wall = time.process_time(), time.perf_counter()
done = prepare_plan(dest, plan)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
peak = hwm()
print(json.dumps({"done": len(done), "cpu": cpu, "wall": wall, "peak_mb": peak / 1024,
                  "growth_mb": (peak - before) / 1024}))
"""


def _plan_json(n: int) -> bytes:
    return json.dumps({"fingerprint": "sha256:bench", "partitions": n, "partition_size": 1,
                       "items": n, "shards": 1, "token": TOKEN}).encode()


def _keys(n: int, token: str) -> list[str]:
    from jobs.manifest_store import part_key

    return [part_key(i, token) for i in range(n)]


def _setup_local(top: Path, n: int, mode: str) -> str:
    """The output for one run: plan.json, N parts (kept between resume runs), stale parts."""
    out = top / f"local-{n}"
    man = out / "_manifest"
    man.mkdir(parents=True, exist_ok=True)
    (man / "plan.json").write_bytes(_plan_json(n))
    have = set(os.listdir(man))
    for k in _keys(n, TOKEN) + _keys(STALE if mode == "resume" else n, OTHER):
        if k[len("_manifest/"):] not in have:
            os.close(os.open(out / k, os.O_CREAT | os.O_WRONLY, 0o644))
    return str(out)


def _setup_s3(fs, bucket: str, n: int) -> str:
    base = f"{bucket}/out-{n}"
    fs.pipe({f"{base}/_manifest/plan.json": _plan_json(n)})
    if not fs.exists(f"{base}/_manifest/{_keys(1, TOKEN)[0][len('_manifest/'):]}"):
        keys = _keys(n, TOKEN)
        for i in range(0, n, 1000):
            fs.pipe({f"{base}/{k}": b"" for k in keys[i:i + 1000]})
    fs.pipe({f"{base}/{k}": b"" for k in _keys(STALE, OTHER)})
    fs.invalidate_cache()
    return f"s3://{base}"


def _measure(code_root: str, url: str, n: int, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": code_root}
    out = subprocess.run([sys.executable, "-c", CHILD, url, str(n), mode], env=env,
                         capture_output=True, text=True, check=True, cwd=code_root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(where: str, mode: str, n: int, label: str, r: dict) -> str:
    return (f"| {where} | {mode} | {n:,} | {label} | {r['peak_mb']:.1f} | {r['growth_mb']:.1f} "
            f"| {r['cpu']:.2f} | {r['wall']:.2f} | {r['done']:,} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", default="1000,100000")
    ap.add_argument("--s3", default="")
    ap.add_argument("--base", default="")
    ap.add_argument("--replan", default="", help="Ns for the replan path (local disk)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    codes = [("this", str(ROOT))] + ([("base", args.base)] if args.base else [])
    top = ROOT / ".scratch" / "bench_parts"
    top.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    best: dict[tuple, dict] = {}

    def run(where: str, mode: str, n: int, setup) -> None:
        for _ in range(args.repeats):
            for label, code in (codes if _ % 2 == 0 else codes[::-1]):  # interleaved
                r = _measure(code, setup(), n, mode)
                key = (where, mode, n, label)
                if key not in best or r["growth_mb"] < best[key]["growth_mb"]:
                    best[key] = r
        for label, _code in codes:
            rows.append(_row(where, mode, n, label, best[(where, mode, n, label)]))
            print(rows[-1], flush=True)

    try:
        for n in [int(x) for x in args.local.split(",") if x]:
            run("local", "resume", n, lambda n=n: _setup_local(top, n, "resume"))
        for n in [int(x) for x in args.replan.split(",") if x]:
            run("local", "replan", n, lambda n=n: _setup_local(top, n, "replan"))
        if args.s3:
            _s3(args, run, top)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("| store | path | parts | code | peak RSS MB | peak growth MB | CPU s | wall s | "
          "resumed |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for (where, mode, n, label), r in sorted(best.items()):
        if label == "this" and ("base" in [c for c, _ in codes]):
            b = best[(where, mode, n, "base")]
            print(f"{where} {mode} {n:,}: growth base/this = {b['growth_mb']:.1f}/"
                  f"{r['growth_mb']:.1f} MB, CPU base/this = {b['cpu'] / max(r['cpu'], 1e-9):.2f}x")


def _s3(args: argparse.Namespace, run, top: Path) -> None:
    from tests.e2e.helpers import MotoServer, new_fs, s3_env

    server = MotoServer(top / "moto.log").start()
    try:
        os.environ.update(s3_env(server.endpoint))
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        fs = new_fs()
        fs.mkdir("bench-parts")
        for n in [int(x) for x in args.s3.split(",") if x]:
            run("moto S3", "resume", n, lambda n=n: _setup_s3(fs, "bench-parts", n))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
