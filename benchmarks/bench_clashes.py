"""Plan-time clash detection (jobs/clashes.py) at scale: time and peak memory on the driver.

    .venv/bin/python benchmarks/bench_clashes.py [--items 1000000] [--formats supervisely,cvat]

Streams N synthetic item refs (datasets of 10,000 images, sub-folders in 10% of the names, 1%
of the images with a same-stem twin: `x.jpg` + `x.png`) into `detect_clashes` with the given
formats, then merges the reasons back with `annotate`. Prints items/s, the number of failing
items, the peak RSS of this process (ru_maxrss: Python + SQLite page cache) and the size of the
temporary database. The refs are generated lazily, as a streaming planner would pass them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.clashes import detect_clashes  # noqa: E402
from jobs.listing import ItemRef  # noqa: E402
from maskcore.formats import FORMATS  # noqa: E402


def refs(n: int):
    for i in range(n):
        ds = f"dataset{i // 10_000:04d}"
        name = f"sub{i % 7}/img{i:08d}.jpg" if i % 10 == 0 else f"img{i:08d}.jpg"
        yield ItemRef(ds, name, None, None)
        if i % 100 == 1:
            yield ItemRef(ds, name[:-4] + ".png", None, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--formats", default="supervisely,cvat,clearml,zarr")
    ap.add_argument("--cache-mib", type=int, default=64)
    args = ap.parse_args()
    formats = tuple(args.formats.split(","))
    options = {f: FORMATS[f].Options.from_mapping({}, prefix=f, defaults={}) for f in formats}
    c0, t0 = time.process_time(), time.perf_counter()
    with detect_clashes(refs(args.items), formats=formats, options=options,
                        cache_mib=args.cache_mib) as report:
        c1, t1 = time.process_time(), time.perf_counter()
        db = sum(f.stat().st_size for f in Path(report._folder).iterdir())
        failed = sum(1 for r in report.annotate(refs(args.items)) if r.problem)
        t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"items: {report.items:,} formats: {','.join(formats)} (load avg "
          f"{os.getloadavg()[0]:.1f})")
    print(f"detect: {t1 - t0:.1f} s wall, {c1 - c0:.1f} s CPU ({report.items / (c1 - c0):,.0f} "
          f"items per CPU second); annotate: "
          f"{t2 - t1:.1f} s; failing items: {failed:,}")
    print(f"peak RSS: {rss:.0f} MiB; temporary disk: sorted key runs "
          f"{report.spilled_bytes / 2**20:.0f} MiB at most (removed after the scan), "
          f"database {db / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
