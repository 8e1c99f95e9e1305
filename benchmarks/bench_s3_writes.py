"""How fast does an export write its outputs to S3, against raw s3fs on the same objects?

    .venv/bin/python benchmarks/bench_s3_writes.py [--copies 3] [--rounds 5]

Starts its own `moto_server` (a subprocess on 127.0.0.1, port 0), uploads the demo Supervisely
project (8 images, plus `--copies` renamed copies of each) and measures, in one process:

- raw:        `s3fs.S3FileSystem.pipe({path: bytes, ...})` - one concurrent call for the batch;
- write_many: `jobs.storage.Root.write_many(objects)` - what a partition calls;
- partition:  a whole export (`maskjob export ... --workers 0`, all items in one partition): the
              time spent inside `process_partition`'s writes (outputs + its manifest part),
              measured by timing `Root.write_many` while `process_partition` runs.

raw and write_many send exactly the objects that the partition wrote (captured in a warm-up
round). Rounds are interleaved (the order rotates each round) and each round writes under
fresh prefixes; medians are reported, with the ratio of each path to raw (target: partition
writes >= 80 % of raw). The last lines are a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.helpers import MotoServer  # noqa: E402

# -- moto ----------------------------------------------------------------------------------

@contextlib.contextmanager
def moto_server(workdir: Path):
    """The e2e tests' `MotoServer` (one moto launcher for tests and benchmarks)."""
    server = MotoServer(workdir / "moto.log").start()
    try:
        yield server.endpoint
    finally:
        server.stop()


def set_s3_env(endpoint: str) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "DASK_SCHEDULER_ADDRESS",
                 "FSSPEC_S3_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": "", "AWS_CONFIG_FILE": "", "BOTO_CONFIG": "/dev/null",
    })


# -- data ----------------------------------------------------------------------------------

def make_project(workdir: Path, copies: int) -> Path:
    from jobs.demo import make_demo_project

    project = Path(make_demo_project(str(workdir / "demo"))[0])
    for img in sorted(project.rglob("img/*")):
        ann = img.parent.parent / "ann"
        for k in range(copies):
            name = f"copy{k:02d} {img.name}"
            shutil.copyfile(img, img.parent / name)
            shutil.copyfile(ann / f"{img.name}.json", ann / f"{name}.json")
    return project


def upload(fs, local: Path, target: str) -> None:
    fs.pipe({f"{target}/{p.relative_to(local).as_posix()}": p.read_bytes()
             for p in sorted(local.rglob("*")) if p.is_file()})


# -- measurements --------------------------------------------------------------------------

@dataclass
class Sample:
    objects: int
    nbytes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.objects / self.seconds


@dataclass
class WriteLog:
    """Writes made through Root.write_many while process_partition runs."""
    active: bool = False
    objects: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    partition_seconds: float = 0.0
    captured: dict[str, bytes] = field(default_factory=dict)
    capture: bool = False

    def reset(self, capture: bool = False) -> None:
        self.objects = self.nbytes = 0
        self.seconds = self.partition_seconds = 0.0
        self.captured = {}
        self.capture = capture


def install_hooks(wlog: WriteLog) -> None:
    """Time Root.write_many inside process_partition (the export itself is unchanged)."""
    from jobs import run as graph
    from jobs import storage

    original_write_many = storage.Root.write_many
    original_process = graph.process_partition

    def write_many(self, objects):
        if not wlog.active:
            return original_write_many(self, objects)
        t = time.perf_counter()
        original_write_many(self, objects)
        wlog.seconds += time.perf_counter() - t
        wlog.objects += len(objects)
        wlog.nbytes += sum(len(v) for v in objects.values())
        if wlog.capture:
            wlog.captured.update(objects)

    def process_partition(*args):
        wlog.active = True
        t = time.perf_counter()
        try:
            return original_process(*args)
        finally:
            wlog.partition_seconds += time.perf_counter() - t
            wlog.active = False

    storage.Root.write_many = write_many
    graph.process_partition = process_partition


def run_partition(wlog: WriteLog, src: str, dst: str, config: str, n_items: int,
                  capture: bool = False) -> tuple[Sample, float]:
    from jobs.cli import run

    wlog.reset(capture)
    rc = run(["export", src, dst, "--config", config, "--workers", "0",
              "--set", f"partition_size={n_items}"])
    if rc != 0:
        raise RuntimeError(f"export failed with exit code {rc}")
    return Sample(wlog.objects, wlog.nbytes, wlog.seconds), wlog.partition_seconds


def run_raw(fs, base: str, objects: dict[str, bytes]) -> Sample:
    batch = {f"{base}/{k}": v for k, v in objects.items()}
    t = time.perf_counter()
    fs.pipe(batch)
    return Sample(len(batch), sum(len(v) for v in batch.values()), time.perf_counter() - t)


def run_write_many(url: str, objects: dict[str, bytes]) -> Sample:
    from jobs.storage import Root

    root = Root(url)
    t = time.perf_counter()
    root.write_many(objects)
    return Sample(len(objects), sum(len(v) for v in objects.values()),
                  time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=3,
                    help="renamed copies of each of the 8 demo items (default 3: 32 items)")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    args = ap.parse_args(argv)

    import logging

    logging.disable(logging.INFO)  # the export's progress lines
    workdir = Path(tempfile.mkdtemp(prefix="bench_s3_writes-"))
    try:
        with moto_server(workdir) as endpoint:
            set_s3_env(endpoint)
            import s3fs

            from jobs import storage

            fs = s3fs.S3FileSystem()
            project = make_project(workdir, args.copies)
            config = str(project / "demo-job.yaml")
            n_items = len([p for p in project.rglob("img/*") if p.is_file()])
            src_bucket, out_bucket = f"in-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
            fs.mkdir(src_bucket)
            fs.mkdir(out_bucket)
            src = f"s3://{src_bucket}/proj"
            upload(fs, project, src.removeprefix("s3://"))

            wlog = WriteLog()
            install_hooks(wlog)
            # warm-up (connections, imports, caches) and capture of the partition's objects
            _, _ = run_partition(wlog, src, f"s3://{out_bucket}/warm-part", config, n_items,
                                 capture=True)
            objects = dict(wlog.captured)
            run_raw(fs, f"{out_bucket}/warm-raw", objects)
            run_write_many(f"s3://{out_bucket}/warm-wm", objects)

            results: dict[str, list[Sample]] = {"raw": [], "write_many": [], "partition": []}
            partition_totals: list[float] = []
            variants = list(results)
            for r in range(args.rounds):
                order = variants[r % 3:] + variants[:r % 3]
                for v in order:
                    if v == "raw":
                        s = run_raw(fs, f"{out_bucket}/raw-{r}", objects)
                    elif v == "write_many":
                        s = run_write_many(f"s3://{out_bucket}/wm-{r}", objects)
                    else:
                        s, total = run_partition(wlog, src, f"s3://{out_bucket}/part-{r}",
                                                 config, n_items)
                        partition_totals.append(total)
                    results[v].append(s)
                print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{v} {results[v][-1].rate:.0f} obj/s" for v in variants), flush=True)
            _ = storage  # imported above for the hooks; keeps the module alive
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    med = {v: statistics.median(s.rate for s in results[v]) for v in results}
    mb = {v: statistics.median(s.nbytes / s.seconds / 1e6 for s in results[v]) for v in results}
    sec = {v: statistics.median(s.seconds for s in results[v]) for v in results}
    n_obj = {v: results[v][0].objects for v in results}
    size = results["raw"][0].nbytes
    ratio_wm = med["write_many"] / med["raw"]
    ratio_part = med["partition"] / med["raw"]
    print()
    print(f"{n_items} items in one partition, {len(objects)} output objects "
          f"({size / 1e6:.1f} MB, mean {size / len(objects) / 1024:.0f} KiB); "
          f"moto_server {endpoint}; {args.rounds} rounds, medians; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"whole process_partition (read, render, encode, write): median "
          f"{statistics.median(partition_totals):.2f} s, "
          f"{n_items / statistics.median(partition_totals):.1f} items/s")
    print()
    print("| S3 write path (moto_server, same objects) | objects | median s | objects/s | MB/s "
          "| vs raw |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {"raw": "raw `s3fs.pipe(dict)`",
              "write_many": "`Root.write_many`",
              "partition": "`process_partition` write phase (+ manifest part)"}
    for v in variants:
        rel = med[v] / med["raw"]
        print(f"| {labels[v]} | {n_obj[v]} | {sec[v]:.2f} | {med[v]:.0f} | {mb[v]:.1f} "
              f"| {rel:.0%} |")
    print()
    verdict = "meets" if ratio_part >= 0.8 else "MISSES"
    print(f"partition writes = {ratio_part:.0%} of raw ({verdict} the >= 80% target); "
          f"write_many = {ratio_wm:.0%} of raw")
    return 0 if ratio_part >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
