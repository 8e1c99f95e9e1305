"""Plan-time clash detection (jobs/clashes.py) at scale: time and peak memory on the driver.

    .venv/bin/python benchmarks/bench_clashes.py [--items 1000000] [--formats supervisely,cvat]
    .venv/bin/python benchmarks/bench_clashes.py --items 100000 --baseline ../base-checkout

Streams N synthetic item refs (datasets of 10,000 images, sub-folders in 10% of the names, 1%
of the images with a same-stem twin: `x.jpg` + `x.png`) into `detect_clashes` with the given
formats, then merges the reasons back with `annotate`. Prints items per CPU second (the refs
are generated lazily inside the measured time, as a streaming planner would pass them), the
number of failing items, the peak RSS of the process (ru_maxrss: Python + SQLite page cache)
and the temporary disk. `--baseline DIR` runs the same measurement in two child processes,
first with the code of the checkout DIR, then with this one, and prints the ratios (same run,
same inputs); `--code DIR` is what the children get.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def refs(n: int):
    from jobs.listing import ItemRef
    for i in range(n):
        ds = f"dataset{i // 10_000:04d}"
        name = f"sub{i % 7}/img{i:08d}.jpg" if i % 10 == 0 else f"img{i:08d}.jpg"
        yield ItemRef(ds, name, None, None)
        if i % 100 == 1:
            yield ItemRef(ds, name[:-4] + ".png", None, None)


def measure(items: int, formats: tuple[str, ...], cache_mib: int) -> dict:
    from jobs.clashes import detect_clashes
    from maskcore.formats import FORMATS
    options = {f: FORMATS[f].Options.from_mapping({}, prefix=f, defaults={}) for f in formats}
    c0, t0 = time.process_time(), time.perf_counter()
    with detect_clashes(refs(items), formats=formats, options=options,
                        cache_mib=cache_mib) as report:
        c1, t1 = time.process_time(), time.perf_counter()
        db = sum(f.stat().st_size for f in Path(report._folder).iterdir())
        failed = sum(1 for r in report.annotate(refs(items)) if r.problem)
        t2 = time.perf_counter()
    return {"items": report.items, "cpu": c1 - c0, "wall": t1 - t0, "annotate": t2 - t1,
            "failed": failed, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "runs_mib": report.spilled_bytes / 2**20, "db_mib": db / 2**20}


def show(label: str, r: dict) -> None:
    print(f"{label}: {r['items']:,} items, detect {r['cpu']:.1f} CPU s "
          f"({r['items'] / r['cpu']:,.0f} items per CPU second, {r['wall']:.1f} s wall); "
          f"annotate {r['annotate']:.1f} s; failing items {r['failed']:,}; peak RSS "
          f"{r['rss_mib']:.0f} MiB; temporary disk: sorted key runs {r['runs_mib']:.0f} MiB at "
          f"most (removed after the scan), database {r['db_mib']:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--formats", default="supervisely,cvat,clearml,zarr")
    ap.add_argument("--cache-mib", type=int, default=64)
    ap.add_argument("--baseline", help="a checkout to compare with, in the same run")
    ap.add_argument("--code", default=str(ROOT), help="the checkout whose code is measured")
    ap.add_argument("--json", action="store_true", help="one JSON line (for --baseline)")
    args = ap.parse_args()
    if args.baseline:
        common = ["--items", str(args.items), "--formats", args.formats, "--cache-mib",
                  str(args.cache_mib), "--json"]
        results = {}
        for label, code in (("baseline", args.baseline), ("this", str(ROOT))):
            out = subprocess.run([sys.executable, __file__, "--code", code, *common],
                                 check=True, capture_output=True, text=True).stdout
            results[label] = json.loads(out.splitlines()[-1])
            show(f"{label} ({code})", results[label])
        base, this = results["baseline"], results["this"]
        print(f"speed-up {base['cpu'] / this['cpu']:.2f}x (items per CPU second), peak RSS "
              f"{this['rss_mib'] / base['rss_mib']:.2f}x of the baseline's (load avg "
              f"{os.getloadavg()[0]:.1f})")
        return
    sys.path.insert(0, args.code)
    r = measure(args.items, tuple(args.formats.split(",")), args.cache_mib)
    if args.json:
        print(json.dumps(r))
    else:
        show(f"{','.join(args.formats.split(','))} (load avg {os.getloadavg()[0]:.1f})", r)


if __name__ == "__main__":
    main()
