"""Finalize at scale: the real `jobs.finalize.finalize_export` on synthetic committed parts.

    .venv/bin/python benchmarks/bench_finalize.py [--items 1000000] [--formats each,all]
                                                  [--per-part 50] [--zarr-open 100000]
                                                  [--s3 30000,100000]

For each format alone and for all four at once (`--formats each,all`, or a list such as
`cvat,zarr`), writes N synthetic manifest lines in committed parts of `--per-part` items on
local disk (plus what a finalizer reads besides: the per-partition records of the formats with
PART_RECORDS - ClearML's frames, one object per partition), then runs
finalize_export in a FRESH process and reports its seconds, CPU seconds and peak RSS
(`ru_maxrss` of that process: the driver's whole footprint, interpreter and imports included).
`--zarr-open N`: a layout-2 zarr store with N item groups; `zarr.open_group` time and RSS in a
fresh process, and the store requests to read one image's masks.

`--s3 30000,100000`: the same finalize with its output on S3 (moto's S3 on loopback,
`tests/e2e/moto_s3.py`; the parts and records preloaded into the bucket), for each size once
with the streams' multipart policy of a30ed04 (`old`: manifest.jsonl in 16 MiB parts, every
other stream - ClearML frames.jsonl, CVAT ImageSets lists - in s3fs's 50 MiB default) and once
with storage's policy (`new`: every line stream in `LINES_BLOCK` parts), interleaved in one run;
each finalize in a fresh process: its CPU seconds, RSS before finalize_export and peak RSS.
`--formats` defaults to clearml there (the stream that grows with the items besides the
manifest).

`--stream 512 --base ../_base`: one 512 MiB manifest stream through `Root.open_write` onto
moto's S3, in a fresh process per run, `--rounds` times interleaved: the `--base` checkout, this
one, and this one with the part size doubling every `--growth-step` parts (default 2: the part
sizes a real stream reaches past 15.6 GiB - 128 MiB parts at 160 GiB). Reports the parts, the
largest part, CPU seconds and peak RSS minus the RSS before the stream (medians).

Other benchmarks call `finalize_run(items=..., formats=..., per_part=...)` (one measured
finalize in a fresh process, returns a dict) and `zarr_open_run(items=...)`.
Lines look like real ones (same keys and sizes as the writers make, 1% failed items, 7
datasets); the class and object PNGs themselves are not written (finalize never reads them,
except for `cvat.zip: true` and the 12 preview samples, which are then left out and logged).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALL = ("supervisely", "cvat", "clearml", "zarr")
DATASETS = 7
CHECK = "md5:" + "0" * 32


def _outputs(fmt: str, ds: str, stem: str) -> list[str]:
    """Output keys of one item, as the writers name them."""
    return {
        "supervisely": [f"supervisely/{ds}/masks_machine/{stem}.png",
                        f"supervisely/{ds}/masks_human/{stem}.png",
                        f"supervisely/{ds}/img/{stem}.jpg",
                        f"supervisely/{ds}/ann/{stem}.jpg.json"],
        "cvat": [f"cvat/SegmentationClass/{stem}.png", f"cvat/SegmentationObject/{stem}.png"],
        "clearml": [f"clearml/masks/{ds}/{stem}.png", f"clearml/_frames/{ds}/{stem}.json"],
        "zarr": [f"zarr/{ds}/{stem}/zarr.json", f"zarr/{ds}/{stem}/class/zarr.json",
                 f"zarr/{ds}/{stem}/class/c/0/0", f"zarr/{ds}/{stem}/instance/zarr.json",
                 f"zarr/{ds}/{stem}/instance/c/0/0"],
    }[fmt]


FRAME = ('{{"id":"{ds}/{stem}.jpg","meta":{{"dataset":"{ds}","image":"{stem}.jpg"}},'
         '"sources":[{{"id":"image_entry_0","uri":"s3://in/{ds}/img/{stem}.jpg",'
         '"content_type":"image/jpeg","width":1920,"height":1080,"timestamp":0,"masks":[{{'
         '"id":"00","content_type":"image/png","uri":"s3://out/clearml/masks/{ds}/{stem}.png",'
         '"timestamp":0}}]}}],"rois":[{{"label":["car"],"sources":["image_entry_0"],'
         '"meta":{{"_type":"mask"}},"mask":{{"id":"00","value":[1,1,1]}}}}]}}\n')


def _line(i: int, n: int, formats: tuple[str, ...]) -> tuple[str, str, str, bool]:
    ds = f"ds{i * DATASETS // n}"
    stem = f"image_{i:08d}"
    failed = i % 100 == 99
    inputs = (f'{{"settings":"sha256:{"b" * 64}","annotation":{{"key":"{ds}/ann/{stem}.jpg.json",'
              f'"size":5120,"checksum":"{CHECK}","tag":"5120-1700000000.0"}},'
              f'"image":{{"key":"{ds}/img/{stem}.jpg","tag":"99-1700000000.0"}}}}')
    if failed:
        return ds, stem, (f'{{"dataset":"{ds}","item":"{stem}.jpg","status":"failed",'
                          f'"error":"Expected a polygon. Got 1 point instead.","inputs":{inputs},'
                          '"outputs":[],"class_pixels":{},"instances":0}\n'), failed
    outs = ",".join(f'{{"key":"{k}","size":20480,"checksum":"{CHECK}"}}'
                    for f in formats for k in _outputs(f, ds, stem))
    return ds, stem, (f'{{"dataset":"{ds}","item":"{stem}.jpg","status":"ok","error":null,'
                      f'"inputs":{inputs},"outputs":[{outs}],'
                      f'"class_pixels":{{"car":{1000 + i % 100},"road":5000}},"instances":12}}\n'
                      ), failed


TOKEN = "0123456789abcdef"  # the plan token the parts are committed under


def make_parts(root: Path, items: int, formats: tuple[str, ...], per_part: int = 50) -> int:
    """Committed parts of `items` synthetic lines under `root` (and the partitions' records:
    ClearML frames, as the workers write them beside each part); returns the number of parts."""
    from jobs.manifest_store import part_key, records_key

    n_parts = (items + per_part - 1) // per_part
    (root / "_manifest").mkdir(parents=True, exist_ok=True)
    if "clearml" in formats:
        (root / records_key("clearml", 0, TOKEN)).parent.mkdir(parents=True, exist_ok=True)
    for pid in range(n_parts):
        lines, frames = [], []
        for i in range(pid * per_part, min(items, (pid + 1) * per_part)):
            ds, stem, line, failed = _line(i, items, formats)
            lines.append(line)
            if not failed:
                frames.append(FRAME.format(ds=ds, stem=stem))
        if "clearml" in formats:
            (root / records_key("clearml", pid, TOKEN)).write_text("".join(frames))
        (root / part_key(pid, TOKEN)).write_text("".join(lines))
    return n_parts


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024


def _old_policy() -> None:
    """The streams' part sizes of a30ed04: manifest.jsonl in 16 MiB parts (LINES_BLOCK), every
    other stream with s3fs's 50 MiB default (= ARCHIVE_BLOCK)."""
    from jobs.manifest_store import MANIFEST_LINES
    from jobs.storage import Root

    real = Root.open_write

    def open_write(self, key, *, archive=False):
        return real(self, key, archive=archive or key != MANIFEST_LINES)

    Root.open_write = open_write  # type: ignore[method-assign]


def _finalize_step(root: str, n_parts: int, formats: tuple[str, ...], policy: str = "new"
                   ) -> dict:
    """Runs in the fresh process: one finalize_export, measured."""
    from jobs.config import load
    from jobs.finalize import finalize_export
    from jobs.storage import Root
    from maskcore.model import ClassInfo, ClassTable

    if policy == "old":
        _old_policy()

    spec = load(None)
    classes = ClassTable((ClassInfo("car", (255, 0, 0), "polygon"),
                          ClassInfo("road", (0, 0, 255), "polygon")))
    options = {f: spec.options[f] for f in formats}
    meta = {"formats": list(formats), "output": {"url": root}, "input": {},
            "classes": [{"index": i, "name": c.name, "color": list(c.color)}
                        for i, c in enumerate(classes.classes, start=1)]}
    import logging

    logging.getLogger("maskjob").setLevel(logging.ERROR)  # 12 absent preview samples
    dest = Root(root)
    dest.exists("manifest.json")  # the filesystem opened (S3: client, credentials)
    before = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = finalize_export(dest=dest, n_parts=n_parts, plan_token=TOKEN,
                              formats=formats, options=options, classes=classes, meta=meta)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    sizes = {k: dest.fs.size(dest.full(k)) for k in ("manifest.jsonl", "clearml/frames.jsonl")
             if dest.exists(k)}
    return {"items": summary.items, "failed": summary.to_dict()["failed"],
            "parts": n_parts, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "manifest_mb": round(sizes["manifest.jsonl"] / 1e6, 1),
            "frames_mb": round(sizes.get("clearml/frames.jsonl", 0) / 1e6, 1)}


def _fresh(*args: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True,
                         env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def finalize_run(*, items: int, formats: tuple[str, ...], per_part: int = 50,
                 workdir: str | None = None) -> dict:
    """Make the parts, then one finalize_export in a fresh process; its figures."""
    tmp = tempfile.mkdtemp(prefix="bench-finalize-", dir=workdir)
    try:
        t0 = time.perf_counter()
        n_parts = make_parts(Path(tmp), items, formats, per_part)
        made = time.perf_counter() - t0
        res = _fresh("--step", "finalize", "--root", tmp, "--parts", str(n_parts),
                     "--formats", ",".join(formats))
        return {"formats": "+".join(formats), "make_s": round(made, 1), **res}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- on S3
@contextlib.contextmanager
def _moto(tmp: str, preload: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A moto server (`tests/e2e/moto_s3.py`, BUCKET[/PREFIX]=DIR preloaded) logging into
    `tmp`, which is removed afterwards; yields the environment a fresh process reaches it by."""
    from tests.e2e.helpers import MotoServer, s3_env

    moto = MotoServer(Path(tmp, "moto.log"), preload=preload)
    try:
        moto.start(600)
        yield {**s3_env(moto.endpoint), "AWS_EC2_METADATA_DISABLED": "true"}
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def s3_runs(*, sizes: list[int], formats: tuple[str, ...], per_part: int = 50,
            workdir: str | None = None) -> list[dict]:
    """Parts of each size preloaded into one moto server; per size, finalize_export onto S3
    with the `old` then the `new` streams' policy, each in a fresh process; their figures."""
    tmp = tempfile.mkdtemp(prefix="bench-finalize-s3-", dir=workdir)
    n_parts = {n: make_parts(Path(tmp, str(n)), n, formats, per_part) for n in sizes}
    with _moto(tmp, tuple(f"bench/p{n}={tmp}/{n}" for n in sizes)) as env:
        out = []
        for n in sizes:
            for policy in ("old", "new"):
                res = _fresh("--step", "finalize", "--root", f"s3://bench/p{n}",
                             "--parts", str(n_parts[n]), "--formats", ",".join(formats),
                             "--policy", policy, env=env)
                out.append({"formats": "+".join(formats), "policy": policy, **res})
        return out


def _print_s3(runs: list[dict]) -> None:
    print("| formats | items | streams' part size | finalize CPU s | RSS before | "
          "driver peak RSS | peak - before | manifest.jsonl | frames.jsonl |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        label = ("old: manifest 16 MiB, others 50 MiB" if r["policy"] == "old"
                 else "new: every line stream 16 MiB")
        print(f"| {r['formats']} | {r['items']:,} | {label} | {r['cpu_seconds']:.1f} | "
              f"{r['rss_before_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB | "
              f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB | {r['manifest_mb']:.0f} MB | "
              f"{r['frames_mb']:.0f} MB |", flush=True)


# ---------------------------------------------------------------------------- one long stream
def _stream_step(url: str, mib: int, step: int) -> dict:
    """Runs in the fresh process: `mib` MiB of manifest lines (~1 KiB each, 64 KiB writes: a
    committed part's worth each, as finalize writes them) through `Root.open_write` onto S3;
    `step`: parts per part size (jobs.s3_stream.GROWTH_STEP; 0: the checkout's own)."""
    import jobs
    from jobs.storage import Root

    if step:
        from jobs import s3_stream

        s3_stream.GROWTH_STEP = step
    dest = Root(url)
    dest.exists("manifest.jsonl")  # the filesystem opened (client, credentials)
    lines = [_line(i, 1_000_000, ("clearml",))[2].encode() for i in range(64)]
    per_write = len(b"".join(lines))
    before = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    with dest.open_write("manifest.jsonl") as f:
        for _ in range(mib * 2**20 // per_write):
            f.write(b"".join(lines))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    bucket, key = dest.full("manifest.jsonl").split("/", 1)
    head = dest.fs.call_s3("head_object", Bucket=bucket, Key=key, PartNumber=1)
    sizes = [dest.fs.call_s3("head_object", Bucket=bucket, Key=key, PartNumber=n)
             ["ContentLength"] for n in range(1, head.get("PartsCount", 1) + 1)]
    return {"code": os.path.dirname(os.path.dirname(jobs.__file__)),
            "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "object_mb": round(sum(sizes) / 2**20, 1), "parts": len(sizes),
            "largest_part_mb": round(max(sizes) / 2**20, 1)}


def stream_runs(*, mib: int, base: str, step: int, rounds: int = 3,
                workdir: str | None = None) -> list[dict]:
    """One `mib` MiB line stream onto moto's S3 per run, each in a fresh process: the `base`
    checkout, this one, and this one with parts doubling every `step` parts (the part sizes a
    stream reaches past 15.6 GiB, at a size a benchmark can write); rounds interleaved."""
    tmp = tempfile.mkdtemp(prefix="bench-stream-", dir=workdir)
    os.mkdir(Path(tmp, "empty"))
    with _moto(tmp, (f"bench={tmp}/empty",)) as env:
        out = []
        for r in range(rounds):
            for label, code, grow in (("base", base, 0), ("this", str(ROOT), 0),
                                      (f"this, step {step}", str(ROOT), step)):
                res = _fresh("--step", "stream", "--root", f"s3://bench/r{r}/{len(out)}",
                             "--stream", str(mib), "--growth-step", str(grow), "--code", code,
                             env=env)
                out.append({"run": label, **res})
                print(json.dumps(out[-1]), file=sys.stderr, flush=True)
        return out


def _print_streams(runs: list[dict]) -> None:
    import statistics

    print("| run | object | parts | largest part | CPU s (median) | peak RSS - before "
          "(median) | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in dict.fromkeys(r["run"] for r in runs):
        rs = [r for r in runs if r["run"] == label]
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        grow = statistics.median(r["peak_rss_mb"] - r["rss_before_mb"] for r in rs)
        print(f"| {label} | {rs[0]['object_mb']:.0f} MiB | {rs[0]['parts']} | "
              f"{rs[0]['largest_part_mb']:.0f} MiB | {cpu:.2f} | {grow:.0f} MB | {len(rs)} |")


# ---------------------------------------------------------------------------- zarr open
def _zarr_store(root: Path, items: int) -> None:
    """A layout-2 store of `items` item groups (their group documents; one item has real
    arrays) - what `zarr.open_group` and an item lookup touch."""
    from maskcore.formats import zarr_masks
    from maskcore.formats.base import ItemContext
    from maskcore.model import ClassInfo, ClassTable, Item, Label, Rectangle

    classes = ClassTable((ClassInfo("car", (255, 0, 0), "rectangle"),))
    opts = zarr_masks.Options()
    for b in zarr_masks.dataset_files(classes, opts):
        (root / b.key).parent.mkdir(parents=True, exist_ok=True)
        (root / b.key).write_bytes(b.data)
    item = Item("ds", "image_00000000.jpg", 1920, 1080, (Label(0, Rectangle(10, 10, 900, 700)),))
    out = zarr_masks.write_item(ItemContext(item, classes), opts)
    for b in out.blobs:
        (root / b.key).parent.mkdir(parents=True, exist_ok=True)
        (root / b.key).write_bytes(b.data)
    doc = next(b.data for b in out.blobs if b.key == "zarr/ds/image_00000000/zarr.json")
    (root / "zarr/ds/zarr.json").write_bytes(zarr_masks.empty_group())
    for i in range(1, items):
        d = root / f"zarr/ds/image_{i:08d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "zarr.json").write_bytes(doc)


def _zarr_open_step(root: str) -> dict:
    import warnings

    import zarr
    from zarr.storage import LocalStore

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    g = zarr.open_group(f"{root}/zarr", mode="r", zarr_format=3)
    opened = time.perf_counter() - t0
    assert g.attrs["maskjob"]["layout"] == 2
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gets = []

    class Counting(LocalStore):
        async def get(self, key, prototype, byte_range=None):  # type: ignore[override]
            gets.append(key)
            return await super().get(key, prototype, byte_range)

    g2 = zarr.open_group(Counting(f"{root}/zarr", read_only=True), mode="r", zarr_format=3)
    t1 = time.perf_counter()
    item = g2["ds/image_00000000"]
    cls, inst = item["class"][:], item["instance"][:]
    read = time.perf_counter() - t1
    return {"open_s": round(opened, 3), "open_peak_rss_mb": round(rss, 1),
            "item_read_s": round(read, 3), "item_requests": len(gets),
            "painted": int((cls > 0).sum() + (inst > 0).sum() > 0)}


def zarr_open_run(*, items: int, workdir: str | None = None) -> dict:
    tmp = tempfile.mkdtemp(prefix="bench-zarr-open-", dir=workdir)
    try:
        _zarr_store(Path(tmp), items)
        return {"items": items, **_fresh("--step", "zarr-open", "--root", tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--formats", default="each,all",
                    help="'each' (every format alone), 'all' (the four at once), or a list")
    ap.add_argument("--per-part", type=int, default=50)
    ap.add_argument("--zarr-open", type=int, default=0, help="item groups in the open test")
    ap.add_argument("--step", choices=["finalize", "zarr-open", "stream"])
    ap.add_argument("--root")
    ap.add_argument("--parts", type=int)
    ap.add_argument("--s3", help="item counts (e.g. 30000,100000): finalize onto moto's S3, "
                                 "old vs new streams' part sizes")
    ap.add_argument("--policy", choices=["old", "new"], default="new")
    ap.add_argument("--workdir", help="where the parts are made (default: the temp folder)")
    ap.add_argument("--stream", type=int, help="MiB: one line stream onto moto's S3, the "
                                               "--base checkout vs this one")
    ap.add_argument("--base", help="a checkout of the baseline (git worktree add ...)")
    ap.add_argument("--growth-step", type=int, default=2,
                    help="--stream: parts per part size of the scaled run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--code", help=argparse.SUPPRESS)  # the checkout a fresh step imports
    a = ap.parse_args()
    if a.code:
        sys.path.insert(0, a.code)
    if a.step == "stream":
        print(json.dumps(_stream_step(a.root, a.stream, a.growth_step)))
        return
    if a.stream:
        _print_streams(stream_runs(mib=a.stream, base=a.base or str(ROOT),
                                   step=a.growth_step, rounds=a.rounds, workdir=a.workdir))
        return
    if a.step == "finalize":
        print(json.dumps(_finalize_step(a.root, a.parts, tuple(a.formats.split(",")),
                                        a.policy)))
        return
    if a.s3:
        formats = ("clearml",) if a.formats == "each,all" else tuple(a.formats.split(","))
        _print_s3(s3_runs(sizes=[int(x) for x in a.s3.split(",")], formats=formats,
                          per_part=a.per_part, workdir=a.workdir))
        return
    if a.step == "zarr-open":
        print(json.dumps(_zarr_open_step(a.root)))
        return
    runs: list[tuple[str, ...]] = []
    for word in a.formats.split(","):
        if word == "each":
            runs += [(f,) for f in ALL]
        elif word == "all":
            runs.append(ALL)
        else:
            runs.append((word,))
    print("| formats | items | parts | finalize s | CPU s | CPU s per 1M items | "
          "driver peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for formats in runs:
        r = finalize_run(items=a.items, formats=formats, per_part=a.per_part)
        per_m = r["cpu_seconds"] / max(r["items"], 1) * 1e6
        print(f"| {r['formats']} | {r['items']:,} | {r['parts']:,} | {r['seconds']:.1f} | "
              f"{r['cpu_seconds']:.1f} | {per_m:.1f} | {r['peak_rss_mb']:.0f} MB |", flush=True)
    if a.zarr_open:
        z = zarr_open_run(items=a.zarr_open)
        print(f"\nzarr.open_group, {z['items']:,} item groups: {z['open_s']:.3f} s, peak RSS "
              f"{z['open_peak_rss_mb']:.0f} MB; one image's class + instance read: "
              f"{z['item_requests']} store GETs, {z['item_read_s']:.3f} s")


if __name__ == "__main__":
    main()
