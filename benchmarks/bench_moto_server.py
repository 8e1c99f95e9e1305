"""CPU per S3 request of the tests' moto server (`tests/e2e/moto_s3.py`) against `moto_server`.

    .venv/bin/python benchmarks/bench_moto_server.py [--objects 2000] [--rounds 2]

Both servers on 127.0.0.1, in turns (A, B, A, B, ...), each round on a fresh server: s3fs puts
`--objects` objects of 120 bytes in concurrent batches of 1,000 (`pipe`), then reads each with
one GET (`_cat_file`, max_concurrency=1). Prints the server's CPU-ms per PUT and per GET (psutil,
user+system of the server process), the wall of each phase, the ratio moto_server / ours, and
each server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fsspec.asyn import sync  # noqa: E402

from tests.e2e.helpers import VENV_BIN, MotoServer, new_fs, s3_env  # noqa: E402


class PlainMotoServer(MotoServer):
    """`moto_server` itself (moto's multi-service server), as the tests ran it before."""

    def command(self) -> list[str]:
        return [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"]


async def _gather(coros: list) -> list:
    return await asyncio.gather(*coros)


def one_round(server: MotoServer, n: int) -> dict[str, float]:
    import psutil

    proc = psutil.Process(server.proc.pid)
    os.environ.update(s3_env(server.endpoint))
    fs = new_fs()
    fs.mkdir("bench")
    body = b"x" * 120

    def cpu() -> float:
        return sum(proc.cpu_times()[:2])

    c0, t0 = cpu(), time.perf_counter()
    for s in range(0, n, 1000):
        fs.pipe({f"bench/k/{i:08d}": body for i in range(s, min(n, s + 1000))})
    c1, t1 = cpu(), time.perf_counter()
    for s in range(0, n, 1000):
        sync(fs.loop, _gather, [fs._cat_file(f"bench/k/{i:08d}", max_concurrency=1)
                                for i in range(s, min(n, s + 1000))])
    c2, t2 = cpu(), time.perf_counter()
    with open(f"/proc/{server.proc.pid}/status") as f:
        hwm = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM:"))
    return {"put_ms": 1000 * (c1 - c0) / n, "get_ms": 1000 * (c2 - c1) / n,
            "put_wall": t1 - t0, "get_wall": t2 - t1, "rss": hwm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {"moto_server": [], "tests/e2e/moto_s3.py": []}
    with tempfile.TemporaryDirectory(prefix="maskjob-motobench-") as tmp:
        for r in range(args.rounds):
            for name, cls in (("moto_server", PlainMotoServer),
                              ("tests/e2e/moto_s3.py", MotoServer)):
                server = cls(Path(tmp) / f"{r}-{cls.__name__}.log").start()
                try:
                    results[name].append(one_round(server, args.objects))
                finally:
                    server.stop()
                print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)

    def mean(name: str, key: str) -> float:
        return sum(x[key] for x in results[name]) / len(results[name])

    print()
    print(f"| server ({args.objects:,} objects x {args.rounds} rounds) | CPU-ms per PUT |"
          " CPU-ms per GET | wall PUTs | wall GETs | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in results:
        print(f"| `{name}` | {mean(name, 'put_ms'):.2f} | {mean(name, 'get_ms'):.2f} |"
              f" {mean(name, 'put_wall'):.1f} s | {mean(name, 'get_wall'):.1f} s |"
              f" {mean(name, 'rss') / 2**20:.0f} MB |")
    a, b = "moto_server", "tests/e2e/moto_s3.py"
    print(f"| ratio | {mean(a, 'put_ms') / mean(b, 'put_ms'):.2f}x |"
          f" {mean(a, 'get_ms') / mean(b, 'get_ms'):.2f}x |"
          f" {mean(a, 'put_wall') / mean(b, 'put_wall'):.2f}x |"
          f" {mean(a, 'get_wall') / mean(b, 'get_wall'):.2f}x | |")


if __name__ == "__main__":
    main()
