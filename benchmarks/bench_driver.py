"""Driver scaling on the REAL code paths (jobs/plan.py, jobs/run.py, jobs/manifest_store.py).

    nice .venv/bin/python benchmarks/bench_driver.py [--items 1000000 10000000]
                          [--dispatch-tasks 4000] [--deletes 10000] [--s3] [--all]

Each phase runs in a fresh process (its peak RSS is the driver's for that phase):
- plan N: a synthetic, lazily generated stream of N sorted ItemRefs -> `write_plan` (plan shards
  on local disk, fingerprint) -> `prepare_plan` -> every partition's task description
  (`Plan.slice`). Seconds, items/s, tasks, peak RSS.
- incremental N: the same with a completed previous run of N lines (manifest.jsonl +
  manifest.json, written beforehand, not timed): baseline snapshot (streaming copy), merge-join
  while planning (1 % of the items removed, 1 % new), removed outputs deleted in bulk.
- delete K: K removed items' outputs deleted with `delete_keys` (bulk batches, no exists()), on
  local disk and, with --s3, on a moto S3 server (DeleteObjects of 1,000 keys).
- dispatch: a real `dask scheduler` + `dask worker` on 127.0.0.1; `run_partitions` with the
  elastic window over T one-item partitions whose item fails at once (no input read): the
  driver's and the scheduler's CPU seconds per task (measured, so a shared machine's starved
  workers do not hide them); dispatch capacity = 1 / the larger of the two. Cores kept busy =
  capacity x seconds of work per partition (auto partition size at 1M and 10M items, 2-4 ms
  per item).
With --all, the same command also runs, at the same sizes, each in fresh processes:
- listing: `bench_listing.py` on Supervisely (hard-linked files: 20M entries at 10M), COCO and
  CVAT inputs (no image files): `list_input` into the spool + one sorted pass of the refs;
- finalize: `bench_finalize.py --formats each`: the real `finalize_export` of every format
  alone on N committed manifest lines;
- zarr: `zarr.open_group` of a layout-2 store of min(N, --zarr-open-max) item groups.
Ratios and peaks in the table come from the same run. Targets (issue 10): peak <= 500 MB at
10M, 10M peak within 1.2x of 1M, planning >= 20k items/s, tasks <= 100k at 10M, dispatch for
>= 1,000 busy cores on tiny items, 10k removed items' outputs deleted in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, *, skip_every: int = 0, new_every: int = 0,
              problem: str | None = None) -> Iterator:
    """N refs sorted by (dataset, name), generated lazily (7 datasets of n/7 items)."""
    from jobs.listing import ItemRef

    per = -(-n // 7)
    for d in range(7):
        for i in range(d * per, min(n, (d + 1) * per)):
            if skip_every and i % skip_every == 0:
                continue  # removed from the input since the baseline
            name = f"image_{i:09d}.jpg"
            yield ItemRef(f"ds{d}", name, f"ds{d}/ann/{name}.json", f"ds{d}/img/{name}",
                          problem, ann_tag=f"5120-{i}", image_tag=f"99999-{i}")
            if new_every and i % new_every == 1:
                new = f"image_{i:09d}_new.jpg"
                yield ItemRef(f"ds{d}", new, f"ds{d}/ann/{new}.json", f"ds{d}/img/{new}",
                              ann_tag="1-1", image_tag="2-2")


def _plan(dest_dir: str, n: int, incremental: bool) -> dict:
    from jobs.plan import auto_partition_size, prepare_plan, write_plan
    from jobs.storage import Root

    dest = Root(dest_dir)
    size = auto_partition_size(n)
    def refs() -> Iterator:
        return synthetic(n, skip_every=100, new_every=100) if incremental else synthetic(n)

    t0 = time.perf_counter()
    for _ in refs():  # the synthetic stream alone (the lister's share, not the planner's)
        pass
    gen_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), sum(os.times()[:2])
    plan = write_plan(dest, refs(), partition_size=size, settings="bench",
                      incremental=incremental)
    t1, cpu = time.perf_counter(), sum(os.times()[:2]) - c0
    prepare_plan(dest, plan)
    plan.close()
    tasks = sum(1 for pid in range(plan.n_parts) if plan.slice(pid).end > 0)
    t2 = time.perf_counter()
    return {"items": plan.count, "partition_size": size, "tasks": tasks,
            "shards": plan.n_shards, "plan_s": t1 - t0, "adopt_s": t2 - t1,
            "items_per_s": plan.count / (t1 - t0), "generate_s": gen_s, "cpu_s": cpu,
            "planner_items_per_s": plan.count / max(t1 - t0 - gen_s, 1e-9),
            "baseline_matched": plan.baseline_lines,
            "removed_items": plan.removed_items, "peak_rss_mb": rss_mb()}


def step_plan(n: int) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        return _plan(tmp, n, incremental=False)


def write_previous_run(out: Path, n: int) -> None:
    """A completed previous run of n items: manifest.jsonl (one output per item) + .json."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.jsonl", "w") as f:
        for r in synthetic(n):  # the shape of a real line, formatted fast (names are ASCII)
            stem = r.name.rsplit(".", 1)[0]
            f.write(f'{{"dataset": "{r.dataset}", "item": "{r.name}", "status": "ok", '
                    f'"error": null, "inputs": {{"settings": "s", "annotation": {{"key": '
                    f'"{r.ann_key}", "tag": "{r.ann_tag}"}}, "image": {{"key": '
                    f'"{r.image_key}", "tag": "{r.image_tag}"}}}}, "outputs": [{{"key": '
                    f'"supervisely/{r.dataset}/masks_machine/{stem}.png", "size": 20480, '
                    f'"checksum": "md5:{"1" * 32}"}}], "class_pixels": {{"car": 1000}}, '
                    f'"instances": 3}}\n')
    (out / "manifest.json").write_text("{}")


def step_incremental(n: int) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        write_previous_run(Path(tmp), n)
        return _plan(tmp, n, incremental=True)


def step_delete(k: int, s3: bool) -> dict:
    from jobs.manifest_store import delete_keys
    from jobs.storage import Root

    keys = [f"supervisely/ds/masks_machine/image_{i:09d}.png" for i in range(k)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        dest = Root(tmp)
        for key in keys:
            p = Path(tmp, key)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
        t0 = time.perf_counter()
        delete_keys(dest, keys)
        out["local_s"] = time.perf_counter() - t0
        assert not any(Path(tmp, "supervisely/ds/masks_machine").iterdir())
    if s3:
        from tests.e2e.helpers import MotoServer, new_fs, s3_env

        with tempfile.TemporaryDirectory() as tmp:
            server = MotoServer(Path(tmp) / "moto.log").start()
            try:
                os.environ.update(s3_env(server.endpoint))
                fs = new_fs()
                fs.mkdir("bench")
                fs.pipe({f"bench/out/{key}": b"x" for key in keys})
                dest = Root("s3://bench/out")
                t0 = time.perf_counter()
                delete_keys(dest, keys)
                out["s3_s"] = time.perf_counter() - t0
                fs.invalidate_cache()
                assert not fs.find("bench/out")
            finally:
                server.stop()
    out["keys"] = k
    out["peak_rss_mb"] = rss_mb()
    return out


def step_dispatch(t: int) -> dict:
    """Run t one-item partitions (items that fail at once) on a real scheduler + workers."""
    import psutil
    from distributed import Client

    from jobs.config import load
    from jobs.plan import prepare_plan, write_plan
    from jobs.run import run_partitions
    from jobs.storage import Root
    from jobs.tasks import ExportContext
    from maskcore.model import ClassInfo, ClassTable
    from tests.e2e.helpers import die_with_parent, stop_process, wait_for

    with tempfile.TemporaryDirectory() as tmp:
        sched_file = Path(tmp, "scheduler.json")
        procs = []
        try:
            log = open(Path(tmp, "dask.log"), "wb")  # noqa: SIM115 - closed below
            procs.append(subprocess.Popen(
                [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent))
            address = wait_for(lambda: sched_file.exists() and json.loads(
                sched_file.read_text()).get("address"), 60, "the scheduler")
            procs.append(subprocess.Popen(
                [str(VENV_BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads",
                 "4", "--host", "127.0.0.1", "--local-directory", tmp],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent))
            client = Client(address, timeout=60)
            client.wait_for_workers(2, timeout=120)
            dest = Root(str(Path(tmp, "out")))
            plan = write_plan(dest, synthetic(t, problem="bench: no work"), partition_size=1,
                              settings="bench")
            prepare_plan(dest, plan)
            spec = load(None)
            ctx = ExportContext(Root("/nonexistent"), dest, ClassTable((ClassInfo("a", (1, 2,
                                3)),)), spec.formats, {f: spec.options[f] for f in spec.formats},
                                spec.limits, plan_token=plan.token)
            done = [0]
            sched = psutil.Process(procs[0].pid)
            i0 = sum(sched.cpu_times()[:2])
            time.sleep(10)  # the scheduler's own idle cost (heartbeats, dashboard), per second
            idle_per_s = (sum(sched.cpu_times()[:2]) - i0) / 10
            s0, c0 = sum(sched.cpu_times()[:2]), sum(os.times()[:2])
            t0 = time.perf_counter()
            run_partitions((plan.slice(p) for p in range(plan.n_parts)), ctx=ctx,
                           client=client, max_in_flight=0,
                           on_done=lambda p: done.__setitem__(0, done[0] + plan.items_in(p.pid)))
            seconds = time.perf_counter() - t0
            sched_cpu, driver_cpu = sum(sched.cpu_times()[:2]) - s0, sum(os.times()[:2]) - c0
            threads = sum(client.nthreads().values())
            client.close()
        finally:
            for p in procs[::-1]:
                stop_process(p, grace=5)
            log.close()
    assert done[0] == t
    sched_net = max(sched_cpu - idle_per_s * seconds, 0.0)
    per_task = max(driver_cpu, sched_net) / t
    return {"tasks": t, "seconds": seconds, "tasks_per_s": t / seconds,
            "worker_threads": threads, "driver_cpu_ms_per_task": 1000 * driver_cpu / t,
            "scheduler_cpu_ms_per_task": 1000 * sched_cpu / t,
            "scheduler_net_cpu_ms_per_task": 1000 * sched_net / t,
            "scheduler_idle_cpu_per_s": idle_per_s,
            "capacity_tasks_per_s": 1 / per_task, "peak_rss_mb": rss_mb()}


def sub(step: str, arg: int, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--step", step, "--arg", str(arg), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{step} {arg} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--dispatch-tasks", type=int, default=4000)
    ap.add_argument("--deletes", type=int, default=10_000)
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--all", action="store_true",
                    help="also listing (Supervisely, COCO, CVAT inputs), finalize of every "
                         "format and the zarr open, at the same sizes")
    ap.add_argument("--zarr-open-max", type=int, default=1_000_000,
                    help="--all: item groups of the zarr open at most (one folder each)")
    ap.add_argument("--step", choices=["plan", "incremental", "delete", "dispatch"])
    ap.add_argument("--arg", type=int)
    a = ap.parse_args()
    if a.step:
        fn = {"plan": step_plan, "incremental": step_incremental, "dispatch": step_dispatch,
              "delete": lambda k: step_delete(k, a.s3)}[a.step]
        print(json.dumps(fn(a.arg)))
        return
    from jobs.plan import auto_partition_size

    rows = []
    res: dict = {}
    for n in a.items:
        for step in ("plan", "incremental"):
            r = res[(step, n)] = sub(step, n)
            rows.append(f"| {step} | {n:,} | {r['partition_size']} | {r['tasks']:,} | "
                        f"{r['plan_s']:.1f} s + {r['adopt_s']:.1f} s | "
                        f"{r['items_per_s']:,.0f} ({r['planner_items_per_s']:,.0f} without "
                        f"generating the refs) | {r['peak_rss_mb']:.0f} MB |")
            print(rows[-1], file=sys.stderr)
    d = sub("delete", a.deletes, *(["--s3"] if a.s3 else []))
    disp = sub("dispatch", a.dispatch_tasks)
    print("| phase | items | partition size | tasks | seconds (plan + adopt) | items/s "
          "| driver peak RSS |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if len(a.items) > 1:
        lo, hi = min(a.items), max(a.items)
        for step in ("plan", "incremental"):
            ratio = res[(step, hi)]["peak_rss_mb"] / res[(step, lo)]["peak_rss_mb"]
            print(f"\n{step}: peak at {hi:,} / peak at {lo:,} = {ratio:.2f}x")
    print(f"\ndelete {d['keys']:,} removed outputs: local {d['local_s']:.2f} s"
          + (f", moto S3 {d['s3_s']:.2f} s" if "s3_s" in d else ""))
    rate = disp["capacity_tasks_per_s"]
    print(f"\ndispatch: {disp['tasks']:,} one-item partitions in {disp['seconds']:.1f} s = "
          f"{disp['tasks_per_s']:,.0f} tasks/s observed on {disp['worker_threads']} worker "
          f"threads of this shared machine; CPU per task: driver "
          f"{disp['driver_cpu_ms_per_task']:.2f} ms, scheduler "
          f"{disp['scheduler_cpu_ms_per_task']:.2f} ms ("
          f"{disp['scheduler_net_cpu_ms_per_task']:.2f} ms net of its idle "
          f"{disp['scheduler_idle_cpu_per_s']:.3f} CPU-s/s) -> {rate:,.0f} tasks/s with one core "
          f"each (driver peak {disp['peak_rss_mb']:.0f} MB)")
    for n in a.items:
        size = auto_partition_size(n)
        for ms in (2, 4):
            print(f"  at {n:,} items ({size} per partition, {ms} ms/item): "
                  f"{rate * size * ms / 1000:,.0f} cores kept busy")
    if a.all:
        run_the_others(a.items, a.zarr_open_max)


def run_the_others(items: list[int], zarr_max: int) -> None:
    """Listing, finalize and the zarr open: the other benchmarks' own commands, in turn."""
    here = Path(__file__).parent
    sizes = [str(n) for n in items]
    commands = [[str(here / "bench_listing.py"), "--items", *sizes, "--no-image-files",
                 "--links"]]
    for n in items:
        commands.append([str(here / "bench_finalize.py"), "--items", str(n), "--formats", "each",
                         *(["--zarr-open", str(min(n, zarr_max))] if n == max(items) else [])])
    for cmd in commands:
        print(f"\n$ {Path(cmd[0]).name} {' '.join(cmd[1:])}", flush=True)
        subprocess.run([sys.executable, *cmd], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
