"""A whole export through S3 at scale: N items from a moto S3 server to moto, on a LocalCluster.

    .venv/bin/python benchmarks/bench_s3_e2e.py [--items 100000] [--workers 2] [--format ...]
                                                 [--floor-items 10000] [--preload] [--proxy]

What runs (nothing is a shortcut: the product's own CLI in a subprocess):

1. moto's S3 in a subprocess on 127.0.0.1 (`tests/e2e/moto_s3.py`, as the tests run it), which
   counts the requests it serves by kind; with `--proxy`, every client of the job talks to a
   counting HTTP proxy in front of it instead (the fault proxy of the e2e tests with no faults:
   same counts, ~2 CPU-ms more per request);
2. a Supervisely project of `--items` tiny items (16x16 PNG, an annotation with a polygon and
   a rectangle in two classes, 10 datasets) uploaded straight to moto with s3fs (not timed), or
   with `--preload` written to a local folder and put into moto's S3 backend by the server
   before it listens (same objects, no HTTP: 200,000 PUTs would take moto ~15 min here);
3. baseline, same run: the I/O floor with raw s3fs in this process - read each item's two input
   objects and write one output object of the same size as our machine mask, in concurrent
   batches of 1,000 (`_cat_file` with one GET / `pipe`), on the first `--floor-items` items (a
   rate: a sample of 10,000 tells it);
4. `maskjob export s3://in s3://out --workers W` (embedded LocalCluster), timed from process
   start to exit, every request counted by kind.

Prints items/s of both, the ratio, S3 requests per item by kind (LIST, GET, HEAD, PUT, POST,
DELETE), the CPU-seconds of every process during the export (moto, this process, the driver,
the workers) with the CPU-bound wall they allow on an idle 2-core box, and the peak RSS (VmHWM,
sampled) of every process of the job. The driver's peak must not grow with --items.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fsspec.asyn import sync  # noqa: E402

from tests.e2e.faultproxy import FaultProxy  # noqa: E402
from tests.e2e.helpers import MotoServer, new_fs, s3_env  # noqa: E402

VENV_BIN = Path(sys.executable).parent
DATASETS = 10
KINDS = ("LIST", "GET", "HEAD", "PUT", "POST", "DELETE")


def tiny_png() -> bytes:
    import cv2
    import numpy as np

    img = np.full((16, 16, 3), (40, 90, 160), np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def annotation(i: int) -> bytes:
    k = i % 7
    return json.dumps({
        "size": {"width": 16, "height": 16}, "tags": [],
        "objects": [
            {"classTitle": "car", "geometryType": "polygon", "tags": [],
             "points": {"exterior": [[1, 1], [12, 2 + k], [6, 14]], "interior": []}},
            {"classTitle": "road", "geometryType": "rectangle", "tags": [],
             "points": {"exterior": [[k, 9], [15, 15]], "interior": []}},
        ]}).encode()


META = json.dumps({"classes": [
    {"title": "car", "shape": "polygon", "color": "#FF0000"},
    {"title": "road", "shape": "rectangle", "color": "#00FF00"}], "tags": []}).encode()


def item_keys(n: int) -> list[tuple[str, str]]:
    return [(f"ds{i % DATASETS}", f"img_{i:08d}.png") for i in range(n)]


def project_objects(n: int):
    """(key relative to the project, bytes) of every object of the project."""
    png = tiny_png()
    yield "meta.json", META
    for i, (ds, name) in enumerate(item_keys(n)):
        yield f"{ds}/img/{name}", png
        yield f"{ds}/ann/{name}.json", annotation(i)


def upload_project(fs, url: str, n: int) -> float:
    t0 = time.perf_counter()
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    base = url.removeprefix("s3://").rstrip("/")
    batch: dict[str, bytes] = {}
    for key, data in project_objects(n):
        batch[f"{base}/{key}"] = data
        if len(batch) >= 2000:
            fs.pipe(batch)
            batch = {}
    if batch:
        fs.pipe(batch)
    return time.perf_counter() - t0


def write_project(folder: Path, n: int) -> float:
    t0 = time.perf_counter()
    made: set[str] = set()
    for key, data in project_objects(n):
        parent = key.rpartition("/")[0]
        if parent not in made:
            (folder / parent).mkdir(parents=True, exist_ok=True)
            made.add(parent)
        (folder / key).write_bytes(data)
    return time.perf_counter() - t0


async def _gather(coros: list) -> list:
    return await asyncio.gather(*coros)


def raw_floor(fs, src: str, dst: str, n: int, out_size: int) -> float:
    """Read both input objects of every item and write one output object, batches of 1,000."""
    src, dst = src.removeprefix("s3://").rstrip("/"), dst.removeprefix("s3://").rstrip("/")
    body = b"\0" * out_size
    t0 = time.perf_counter()
    keys = item_keys(n)
    for s in range(0, n, 1000):
        chunk = keys[s:s + 1000]
        paths = [p for ds, nm in chunk
                 for p in (f"{src}/{ds}/img/{nm}", f"{src}/{ds}/ann/{nm}.json")]
        sync(fs.loop, _gather, [fs._cat_file(p, max_concurrency=1)  # 1 GET, no HEAD
                                for p in paths])
        fs.pipe({f"{dst}/{ds}/masks_machine/{nm}": body for ds, nm in chunk})
    return time.perf_counter() - t0


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _role(proc) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:
        return "?"
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        return "worker"
    return "other"


def run_export(args: argparse.Namespace, env: dict[str, str], src: str, dst: str, log: Path
               ) -> tuple[float, int, dict[str, int], dict[str, float], dict]:
    """Run the CLI; its wall time, exit code, peak RSS and CPU-seconds by process, manifest."""
    import psutil

    cmd = [str(VENV_BIN / "maskjob"), "export", src, dst, "--workers", str(args.workers)]
    for f in args.format:
        cmd += ["--format", f]
    t0 = time.perf_counter()
    with open(log, "wb") as out:  # a file, not a pipe nobody reads until the end
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    peaks: dict[int, tuple[str, int]] = {}
    cpu: dict[int, tuple[str, float]] = {}
    roles: dict[int, str] = {}  # the first seen: a worker renames itself later
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            hwm = _vm_hwm(p.pid)
            role = roles.setdefault(p.pid, "driver" if p.pid == proc.pid else _role(p))
            if hwm > peaks.get(p.pid, ("", 0))[1]:
                peaks[p.pid] = (role, hwm)
            with contextlib.suppress(psutil.Error):
                cpu[p.pid] = (role, sum(p.cpu_times()[:2]))
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    out = log.read_text(errors="replace")
    cpu_by_role: dict[str, float] = {}
    for role, seconds in cpu.values():
        cpu_by_role[role] = cpu_by_role.get(role, 0.0) + seconds
    by_role: dict[str, int] = {}
    workers = sorted(h for r, h in peaks.values() if r == "worker")
    for role, hwm in peaks.values():
        if role != "worker":
            by_role[role] = max(by_role.get(role, 0), hwm)
    summary = {}
    fs = new_fs()
    try:
        summary = json.loads(fs.cat(dst.removeprefix("s3://") + "/manifest.json"))
    except Exception:
        print(out[-3000:])
    return wall, proc.returncode, {**by_role, **{f"worker {k}": h for k, h in
                                                enumerate(workers)}}, cpu_by_role, summary


def main() -> None:
    import psutil

    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--format", action="append", default=[],
                    help="output format(s), default: supervisely")
    ap.add_argument("--floor-items", type=int, default=10_000,
                    help="items the raw floor reads and writes (at most --items)")
    ap.add_argument("--proxy", action="store_true",
                    help="count requests in a proxy in front of moto (the e2e fault proxy), "
                         "not in moto's server")
    ap.add_argument("--preload", action="store_true",
                    help="put the input into moto's backend at server start, not by PUTs")
    args = ap.parse_args()
    args.format = args.format or ["supervisely"]
    n = args.items
    n_floor = min(n, args.floor_items)

    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None  # 200,000 small files
    with tempfile.TemporaryDirectory(prefix="maskjob-s3e2e-", dir=scratch) as tmp:
        preload: tuple[str, ...] = ()
        if args.preload:
            local = Path(tmp) / "proj"
            print(f"writing {n:,} items ({2 * n + 1:,} objects) to {local} ...", flush=True)
            print(f"  {write_project(local, n):.1f} s", flush=True)
            preload = (f"input/proj={local}",)
        t0 = time.perf_counter()
        moto = MotoServer(Path(tmp) / "moto.log", preload=preload).start(timeout=1800)
        if preload:
            print(f"  moto started with them in {time.perf_counter() - t0:.1f} s", flush=True)
        server = psutil.Process(moto.proc.pid)
        try:
            with contextlib.ExitStack() as stack:
                os.environ.update(s3_env(moto.endpoint))
                if not preload:
                    print(f"uploading {n:,} items ({2 * n + 1:,} objects) to moto ...",
                          flush=True)
                    up = upload_project(new_fs(), "s3://input/proj", n)
                    print(f"  {up:.1f} s ({2 * n / up:,.0f} objects/s, direct to moto)",
                          flush=True)
                if args.proxy:
                    proxy = stack.enter_context(FaultProxy(moto.endpoint, methods=()))
                    endpoint = proxy.url

                    def counted() -> Counter:
                        calls = Counter({k: v for k, v in proxy.counters.items()
                                         if k.endswith(" calls")})
                        proxy.counters.clear()
                        return calls
                else:
                    endpoint = moto.endpoint

                    def counted() -> Counter:
                        return Counter({f"{k} calls": v for k, v in moto.counts(True).items()})

                env = {**os.environ, **s3_env(endpoint)}
                os.environ.update(s3_env(endpoint))
                pfs = new_fs()
                pfs.mkdir("floor")
                pfs.mkdir("output")
                counted()
                floor = raw_floor(pfs, "s3://input/proj", "s3://floor/out", n_floor,
                                  out_size=120)
                floor_calls = counted()
                print(f"raw s3fs floor: {floor:.1f} s ({n_floor / floor:,.0f} items/s)",
                      flush=True)

                cpu0 = sum(server.cpu_times()[:2]), time.process_time()
                wall, rc, peaks, cpu, summary = run_export(
                    args, env, "s3://input/proj", "s3://output/job", Path(tmp) / "export.log")
                cpu1 = sum(server.cpu_times()[:2]), time.process_time()
                calls = counted()
        finally:
            moto.stop()
    total = time.perf_counter() - t_start
    requests = sum(calls.values()) or 1

    counts = summary.get("counts", summary.get("summary", {}))
    print()
    print(f"### End to end through moto S3 (`benchmarks/bench_s3_e2e.py --items {n}"
          f" --workers {args.workers}{' --preload' * args.preload}{' --proxy' * args.proxy}`)")
    print()
    print(f"formats: {', '.join(args.format)}; exit code {rc}; manifest counts: {counts}")
    print()
    print("| run | items | seconds | items/s | vs raw floor |")
    print("|---|---:|---:|---:|---:|")
    print(f"| raw s3fs floor (2 GETs + 1 PUT per item, batches of 1,000) | {n_floor:,} |"
          f" {floor:.1f} | {n_floor / floor:,.0f} | 1.00x |")
    print(f"| `maskjob export --workers {args.workers}` (process start to exit) | {n:,} |"
          f" {wall:.1f} | {n / wall:,.0f} | {(n / wall) / (n_floor / floor):.2f}x |")
    print()
    print("| S3 requests per item | " + " | ".join(KINDS) + " | all |")
    print("|---|" + "---:|" * (len(KINDS) + 1))
    for label, c, m in (("raw floor", floor_calls, n_floor), ("export", calls, n)):
        print(f"| {label} | " + " | ".join(f"{c.get(f'{k} calls', 0) / m:.3f}" for k in KINDS)
              + f" | {sum(c.values()) / m:.3f} |")
    print()
    here = "counting proxy (this process)" if args.proxy else "this process (sampling)"
    print(f"During the export: {requests / wall:,.0f} requests/s; CPU per request: moto server"
          f" {1000 * (cpu1[0] - cpu0[0]) / requests:.2f} ms, {here}"
          f" {1000 * (cpu1[1] - cpu0[1]) / requests:.2f} ms. Whole command: {total:.0f} s.")
    print()
    used = {"moto server": cpu1[0] - cpu0[0], here: cpu1[1] - cpu0[1], **cpu}
    print("| export: CPU by process | CPU-s | CPU-ms per item |")
    print("|---|---:|---:|")
    for role, seconds in used.items():
        print(f"| {role} | {seconds:.1f} | {1000 * seconds / n:.2f} |")
    all_cpu = sum(used.values())
    bound = max(all_cpu / 2, used["moto server"])
    print(f"| all | {all_cpu:.1f} | {1000 * all_cpu / n:.2f} |")
    print()
    print(f"CPU-bound wall of this export on an idle 2-core box: at least {bound:.0f} s"
          f" ({n / bound:,.0f} items/s): max(all CPU / 2, the single moto process).")
    print()
    print("| process | peak RSS (VmHWM, sampled every 0.25 s) |")
    print("|---|---:|")
    for role, hwm in sorted(peaks.items()):
        print(f"| {role} | {hwm / 2**20:.0f} MB |")


if __name__ == "__main__":
    main()
