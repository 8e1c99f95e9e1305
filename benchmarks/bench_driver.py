"""Driver scaling: planning and finalize for a synthetic 1,000,000-item input.

    .venv/bin/python benchmarks/bench_driver.py [--items 1000000]

Measures, in a fresh process each: (1) planning: the item list (keys only), partitioning,
the plan fingerprint and the partition descriptors, with the driver's peak RSS; (2) finalize:
merging 1M manifest lines from their parts into manifest.jsonl + manifest.json on local disk.
Targets (issue 6): driver peak < 1 GB, at most 100,000 tasks, finalize < 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plan(n: int) -> dict:
    from jobs.config import load
    from jobs.listing import ItemRef
    from jobs.plan import chunk, plan_fingerprint
    from jobs.storage import Root
    from jobs.tasks import PartitionJob
    from maskcore.model import ClassInfo, ClassTable

    t0 = time.perf_counter()
    refs = [ItemRef(f"ds{i % 7}", f"image_{i:08d}.jpg", f"ds{i % 7}/ann/image_{i:08d}.jpg.json",
                    f"ds{i % 7}/img/image_{i:08d}.jpg", ann_tag=f"1234-{i}", image_tag=f"99-{i}")
            for i in range(n)]
    refs.sort(key=lambda r: (r.dataset, r.name))
    t1 = time.perf_counter()
    spec = load(None)
    parts = chunk(refs, spec.partition_size)
    fp = plan_fingerprint(refs, spec.partition_size, spec.config_hash)
    classes = ClassTable((ClassInfo("a", (1, 2, 3)),))
    src, dst = Root("/data/in"), Root("/data/out")
    jobs = [PartitionJob(pid, items, src, dst, classes, spec.formats,
                         {"supervisely": spec.supervisely}, spec.limits)
            for pid, items in enumerate(parts)]
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"items": n, "tasks": len(jobs), "list_s": t1 - t0, "plan_s": t2 - t1,
            "peak_rss_mb": rss, "fingerprint": fp[:20]}


def finalize(n: int, per_part: int = 50) -> dict:
    from jobs.finalize import finalize as do_finalize
    from jobs.manifest_store import part_key
    from jobs.storage import Root
    from maskcore.manifest import ManifestEntry

    with tempfile.TemporaryDirectory() as tmp:
        dest = Root(tmp)
        t0 = time.perf_counter()
        n_parts = (n + per_part - 1) // per_part
        for pid in range(n_parts):
            lines = []
            for i in range(pid * per_part, min(n, (pid + 1) * per_part)):
                e = ManifestEntry("ds", f"image_{i:08d}.jpg", "ok", inputs={
                    "annotation": {"key": f"ds/ann/image_{i:08d}.jpg.json", "size": 5120,
                                   "checksum": "md5:" + "0" * 32}},
                    outputs=[{"key": f"supervisely/ds/masks_machine/image_{i:08d}.png",
                              "size": 20480, "checksum": "md5:" + "1" * 32}],
                    class_pixels={"car": 1000 + i % 100, "road": 5000}, instances=12)
                lines.append(e.to_line())
            p = Path(tmp, part_key(pid))
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("".join(lines))
        t1 = time.perf_counter()
        summary = do_finalize(dest, n_parts, [], {"bench": True})
        t2 = time.perf_counter()
        size = Path(tmp, "manifest.jsonl").stat().st_size
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"items": summary.items, "parts": n_parts, "make_parts_s": t1 - t0,
            "finalize_s": t2 - t1, "manifest_mb": size / 1e6, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--step", choices=["plan", "finalize"])
    a = ap.parse_args()
    if a.step:
        print(json.dumps(plan(a.items) if a.step == "plan" else finalize(a.items)))
        return
    results = {}
    for step in ("plan", "finalize"):
        out = subprocess.run([sys.executable, __file__, "--items", str(a.items), "--step", step],
                             capture_output=True, text=True, check=True).stdout
        results[step] = json.loads(out.strip().splitlines()[-1])
    p, f = results["plan"], results["finalize"]
    print("| step | items | tasks/parts | time | driver peak RSS | target |")
    print("|---|---|---|---|---|---|")
    print(f"| planning (list keys, partition, fingerprint, descriptors) | {p['items']:,} | "
          f"{p['tasks']:,} tasks | {p['list_s'] + p['plan_s']:.1f} s | "
          f"{p['peak_rss_mb']:.0f} MB | < 1 GB, <= 100,000 tasks |")
    print(f"| finalize (merge {f['manifest_mb']:.0f} MB of manifest lines + summary) | "
          f"{f['items']:,} | {f['parts']:,} parts | {f['finalize_s']:.1f} s | "
          f"{f['peak_rss_mb']:.0f} MB | < 120 s |")


if __name__ == "__main__":
    main()
