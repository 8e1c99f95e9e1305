"""Driver listing benchmark: items/s and driver peak RSS per input format, at 1M (or --items).

    python benchmarks/bench_listing.py                     # 1M items, every format
    python benchmarks/bench_listing.py --items 10000000    # 10M
    python benchmarks/bench_listing.py --items 1000000 10000000 --formats supervisely --links
    python benchmarks/bench_listing.py --formats cvat,coco --items 200000 --no-image-files
    python benchmarks/bench_listing.py --items 20000 --s3   # the same inputs on moto S3
    python benchmarks/bench_listing.py --items 100000 --formats coco --coco-order coco2017

Generates synthetic inputs (cached under --workdir, one folder per format and size): a
Supervisely project (images are empty files, annotations tiny JSONs, 10 datasets), one COCO
instances JSON with one polygon per image and its images folder (empty files), one CVAT
for images 1.1 annotations.xml with one box per image and its images/ folder, and (format
`cvatmask`, not in the default list) a CVAT Segmentation Mask 1.1 archive of empty PNGs and
images with two subset lists. --links makes the Supervisely project's files hard links to
one inode per 60,000 of them (a 10M project is 20M directory entries, more than the inodes a
disk has free, at ~1 GB of directory blocks): the walk still finds and stats every entry, but
the linked files share their size-mtime tags. Several --items are measured in one run, in the
order given, each against the smallest (peak RSS and items per CPU-s ratios). Each measurement
runs in a fresh subprocess: `list_input` (listing into the spool) then one full `iter_refs()`
pass; it prints seconds of each, items/s over both, items per CPU-second of both (the child's
CPU after its imports; `cpu_s_with_imports` adds the ~0.75 CPU-s of interpreter start and
imports a job pays once) and the child's peak RSS (ru_maxrss).

--s3 starts the tests' moto server (tests/e2e/moto_s3.py) on 127.0.0.1, uploads each input to
s3://bench-listing/<format>-<items>/ and lists it there through s3fs; the requests are the
server's own counts by kind (`/_counts`, reset after the upload: listing + one pass), reported
per item.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = 10
IMG = b""  # listing never reads pixels: empty files are enough


IMAGE_FILES = True  # --no-image-files: COCO/CVAT without images/ (every item then fails)


def _touch_many(folder: str, names: list[str], data: bytes = IMG) -> None:
    os.makedirs(folder, exist_ok=True)
    if not IMAGE_FILES and not data:
        return
    for n in names:
        with open(os.path.join(folder, n), "wb") as f:
            if data:
                f.write(data)


LINKS = False  # --links: Supervisely files as hard links to a few inodes (see gen_supervisely)
LINKS_PER_INODE = 60_000  # under ext4's 65,000 links per inode


def _link_many(folder: str, src_dir: str, names: list[str], data: bytes) -> None:
    """`names` in `folder` as hard links to files holding `data`, one source file (in
    `src_dir`, which the listing never walks) per LINKS_PER_INODE names: real directory
    entries each listing must find and stat, at one inode per 60,000 of them."""
    os.makedirs(folder, exist_ok=True)
    os.makedirs(src_dir, exist_ok=True)
    link, fd, src_fd = os.link, os.open(folder, os.O_RDONLY), os.open(src_dir, os.O_RDONLY)
    try:
        for at in range(0, len(names), LINKS_PER_INODE):
            src = str(at)
            with open(os.path.join(src_dir, src), "wb") as f:
                f.write(data)
            for n in names[at:at + LINKS_PER_INODE]:  # by descriptors: no lookup of a path
                link(src, n, src_dir_fd=src_fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
        os.close(src_fd)


def gen_supervisely(path: str, n: int) -> None:
    """A project of DATASETS datasets; with LINKS its files are hard links (their sources
    under `<path>.src/`, outside the project: the listing sees only the links), the datasets
    made by one process per core (linking is system time: 20M links take ~20 CPU-min)."""
    meta = {"classes": [{"title": "car", "shape": "polygon", "color": "#FF0000"}], "tags": []}
    os.makedirs(path, exist_ok=True)
    if LINKS:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(DATASETS, os.cpu_count() or 1)) as pool:
            list(pool.map(_gen_dataset, [path] * DATASETS, [n] * DATASETS, range(DATASETS),
                          [True] * DATASETS))
    else:
        for d in range(DATASETS):
            _gen_dataset(path, n, d, False)
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)


def _gen_dataset(path: str, n: int, d: int, links: bool) -> None:
    """Dataset `ds<d>` of `gen_supervisely`: its share of the `n` images and annotations."""
    ann = json.dumps({"size": {"width": 4, "height": 4}, "objects": []}).encode()
    per = -(-n // DATASETS)
    names = [f"img_{i:08d}.jpg" for i in range(d * per, min(n, (d + 1) * per))]
    anns = [x + ".json" for x in names]
    if links:
        src = os.path.join(path + ".src", f"ds{d}")
        _link_many(os.path.join(path, f"ds{d}", "img"), src + "/img", names, IMG)
        _link_many(os.path.join(path, f"ds{d}", "ann"), src + "/ann", anns, ann)
        return
    _touch_many(os.path.join(path, f"ds{d}", "img"), names)
    _touch_many(os.path.join(path, f"ds{d}", "ann"), anns, ann)


COCO_ORDER = "in-order"  # --coco-order
COCO2017_CATEGORIES = 80
_ANN = ('{{"id":{},"image_id":{},"category_id":{},"iscrowd":0,'
        '"segmentation":[[0.5,0.5,3.5,0.5,2.0,3.5]],"bbox":[0.5,0.5,3,3],"area":4.5}}')


def gen_coco(path: str, n: int) -> None:
    """`in-order` (CVAT / datumaro's layout: one polygon per image, ids and names
    increasing, the listing's in-order path), `coco2017` (COCO 2017's own layout, the
    careful path: images in no name order with ids not increasing in name order, 1-5
    polygons per image (~3) of 80 categories, annotations grouped by category across
    images, their ids increasing in file order) or `shuffled` (the in-order file's content
    - one polygon per image, one category - in that layout)."""
    import random

    os.makedirs(os.path.join(path, "annotations"), exist_ok=True)
    names = [f"img_{i:08d}.jpg" for i in range(n)]
    if COCO_ORDER == "in-order":
        images = list(enumerate(names))
        anns = [(i, 1) for i in range(n)]
        cats = [(1, "car")]
    else:
        rnd = random.Random(2017)
        ids = rnd.sample(range(1, 10 * n + 1), n)  # name k has id ids[k]: unrelated orders
        images = list(zip(ids, names, strict=True))
        rnd.shuffle(images)
        one = COCO_ORDER == "shuffled"
        cats = [(1, "car")] if one else [(c, f"class{c}")
                                         for c in range(1, COCO2017_CATEGORIES + 1)]
        by_cat: list[list[int]] = [[] for _ in cats]
        for iid, _name in images if one else zip(ids, names, strict=True):
            for _ in range(1 if one else rnd.randint(1, 5)):
                by_cat[rnd.randrange(len(cats))].append(iid)
        anns = [(iid, c + 1) for c, got in enumerate(by_cat) for iid in got]
    with open(os.path.join(path, "annotations", "instances_default.json"), "w") as f:
        f.write('{"categories":[')
        f.write(",".join(f'{{"id":{c},"name":"{nm}"}}' for c, nm in cats))
        f.write('],"images":[')
        f.write(",".join(f'{{"id":{i},"file_name":"{nm}","width":4,"height":4}}'
                         for i, nm in images))
        f.write('],"annotations":[')
        f.write(",".join(_ANN.format(k, iid, cid) for k, (iid, cid) in enumerate(anns)))
        f.write("]}")
    _touch_many(os.path.join(path, "images"), names)


def gen_cvat(path: str, n: int) -> None:
    os.makedirs(path, exist_ok=True)
    names = [f"img_{i:08d}.jpg" for i in range(n)]
    with open(os.path.join(path, "annotations.xml"), "w") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n'
                "<meta><task><labels><label><name>car</name><color>#ff0000</color></label>"
                "</labels></task></meta>\n")
        for i, nm in enumerate(names):
            f.write(f'  <image id="{i}" name="{nm}" width="4" height="4">\n'
                    '    <box label="car" occluded="0" source="manual" xtl="0.5" ytl="0.5" '
                    'xbr="2.5" ybr="3.0" z_order="0">\n    </box>\n  </image>\n')
        f.write("</annotations>\n")
    _touch_many(os.path.join(path, "images"), names)


def gen_cvatmask(path: str, n: int) -> None:
    """A CVAT Segmentation Mask 1.1 archive: a class PNG and an image per item, an object PNG
    for every other one, ids split over two subset lists (train, val)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "labelmap.txt"), "w") as f:
        f.write("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:255,0,0::\n")
    ids = [f"img_{i:08d}" for i in range(n)]
    _touch_many(os.path.join(path, "SegmentationClass"), [i + ".png" for i in ids])
    _touch_many(os.path.join(path, "SegmentationObject"), [i + ".png" for i in ids[::2]])
    _touch_many(os.path.join(path, "JPEGImages"), [i + ".jpg" for i in ids])
    lists = os.path.join(path, "ImageSets", "Segmentation")
    os.makedirs(lists, exist_ok=True)
    for subset, part in (("train", ids[: n * 4 // 5]), ("val", ids[n * 4 // 5:])):
        with open(os.path.join(lists, subset + ".txt"), "w") as f:
            f.writelines(i + "\n" for i in part)


GENERATORS = {"supervisely": gen_supervisely, "coco": gen_coco, "cvat": gen_cvat,
              "cvatmask": gen_cvatmask}
READERS = {"cvatmask": "cvat"}  # the input format of a generated input, when not its name


def upload(fs, local: str, url: str) -> None:
    """Every file under `local` to `url` (s3://bucket/prefix), in batches of fs.pipe."""
    batch: dict[str, bytes] = {}
    for folder, _dirs, files in os.walk(local):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                batch[f"{url}/{os.path.relpath(path, local)}"] = f.read()
            if len(batch) >= 2000:
                fs.pipe(batch)
                batch.clear()
    fs.pipe(batch)


def child(fmt: str, path: str) -> None:
    sys.path.insert(0, ROOT)
    from jobs.listing import list_input
    from jobs.storage import Root

    start = resource.getrusage(resource.RUSAGE_SELF)  # after the imports (~0.75 CPU-s)
    base = start.ru_maxrss / 1024
    t0 = time.perf_counter()
    listing = list_input(Root(path), READERS.get(fmt, fmt))
    t1 = time.perf_counter()
    n = 0
    prev = None
    for ref in listing.iter_refs():
        key = (ref.dataset, ref.name)
        assert prev is None or prev <= key, (prev, key)
        prev = key
        n += 1
    t2 = time.perf_counter()
    use = resource.getrusage(resource.RUSAGE_SELF)  # listing + one pass, not the count below
    problems = sum(1 for r in listing.iter_refs() if r.problem) if n <= 2_000_000 else -1
    listing.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = use.ru_utime + use.ru_stime - start.ru_utime - start.ru_stime
    print(json.dumps({"format": fmt, "items": n, "count": listing.count, "list_s": t1 - t0,
                      "cpu_s": cpu, "items_per_cpu_s": n / cpu,
                      "cpu_s_with_imports": use.ru_utime + use.ru_stime,
                      "iter_s": t2 - t1, "items_per_s": n / (t2 - t0), "peak_rss_mb": rss,
                      "base_rss_mb": base,
                      "problems": problems}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[1_000_000],
                    help="item counts, measured in this order in the same run (ratios against "
                         "the smallest)")
    ap.add_argument("--formats", default="supervisely,coco,cvat")
    ap.add_argument("--workdir", default="/tmp/maskjob-bench-listing")
    ap.add_argument("--no-image-files", action="store_true",
                    help="COCO/CVAT without image files: faster to generate on slow disks")
    ap.add_argument("--coco-order", choices=("in-order", "coco2017", "shuffled"),
                    default="in-order",
                    help="COCO file layout: in order (the in-order path), COCO 2017's "
                    "(images shuffled, ~3 annotations per image grouped by category: the "
                    "careful path), or shuffled (the in-order content in that layout)")
    ap.add_argument("--links", action="store_true",
                    help="Supervisely files as hard links to a few inodes: 20M entries of a 10M "
                         "project at no inode cost (tags then repeat; the walk and stats do not)")
    ap.add_argument("--s3", action="store_true",
                    help="list the inputs from a moto S3 server (subprocess on 127.0.0.1)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--generate", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global IMAGE_FILES, LINKS, COCO_ORDER
    IMAGE_FILES, LINKS = not args.no_image_files, args.links
    COCO_ORDER = args.coco_order
    if args.child:
        child(*args.child)
        return
    if args.generate:
        fmt, path, n = args.generate
        GENERATORS[fmt](path, int(n))
        return
    if not args.s3:
        run(args, os.environ, None)
        return
    sys.path.insert(0, ROOT)
    from pathlib import Path

    from tests.e2e.helpers import MotoServer, new_fs, s3_env

    os.makedirs(args.workdir, exist_ok=True)
    server = MotoServer(Path(args.workdir) / "moto.log").start()
    try:
        env = {**os.environ, **s3_env(server.endpoint)}
        os.environ.update(s3_env(server.endpoint))
        run(args, env, (new_fs(), server))
    finally:
        server.stop()


def run(args: argparse.Namespace, env: dict[str, str], s3: tuple | None) -> None:
    for fmt in args.formats.split(","):
        results = [measure(args, fmt, items, env, s3) for items in args.items]
        first = min(results, key=lambda r: r["items"])  # the ratios' base: the smallest
        for r in results:
            if r is first:
                continue
            print(f"# {fmt} {r['items']:,} / {first['items']:,} items: peak RSS "
                  f"{r['peak_rss_mb'] / first['peak_rss_mb']:.2f}x ({r['peak_rss_mb']:.0f} / "
                  f"{first['peak_rss_mb']:.0f} MB), items per CPU-s "
                  f"{r['items_per_cpu_s'] / first['items_per_cpu_s']:.2f}x", flush=True)


def measure(args: argparse.Namespace, fmt: str, items: int, env: dict[str, str],
            s3: tuple | None) -> dict:
    """One format at one size: generate (cached), upload with --s3, list in a fresh child."""
    links = args.links and fmt == "supervisely"
    path = os.path.join(args.workdir, f"{fmt}-{items}" + (
        "-noimg" if args.no_image_files and fmt != "supervisely" else "") + (
        "-links" if links else "") + (
        f"-{args.coco_order}" if fmt == "coco" and args.coco_order != "in-order" else ""))
    done = path + ".done"
    if not os.path.exists(done):
        # in a process of its own: a child inherits this process's peak RSS (ru_maxrss
        # survives fork + exec), which generating a large input would raise
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", fmt, path, str(items)]
                       + (["--no-image-files"] if args.no_image_files else [])
                       + (["--links"] if links else [])
                       + ["--coco-order", args.coco_order],
                       check=True, cwd=ROOT)
        open(done, "w").close()
        print(f"# generated {fmt} x {items} in {time.perf_counter() - t:.0f} s", flush=True)
    requests = 0
    if s3 is not None:
        fs, server = s3
        url = f"s3://bench-listing/{os.path.basename(path)}"
        if not fs.exists("bench-listing"):
            fs.mkdir("bench-listing")
        t = time.perf_counter()
        upload(fs, path, url)
        print(f"# uploaded {fmt} to {url} in {time.perf_counter() - t:.0f} s", flush=True)
        path = url
        server.counts(reset=True)
    out = subprocess.run([sys.executable, __file__, "--child", fmt, path], check=True,
                         capture_output=True, text=True, cwd=ROOT,
                         env={**env, "PYTHONPATH": ROOT}, timeout=6 * 3600)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if s3 is not None:
        counts = s3[1].counts()
        requests = sum(counts.values())
        print(f"# S3 requests during listing + one pass: {requests:,} "
              f"({requests / r['items']:.4f} per item; {dict(sorted(counts.items()))})")
    print(f"{fmt:12s} items={r['items']:>9,d}  listing {r['list_s']:7.1f} s  "
          f"iterate {r['iter_s']:6.1f} s  {r['items_per_s']:9,.0f} items/s  "
          f"({r['items_per_cpu_s']:9,.0f} per CPU-s, {r['cpu_s']:.0f} CPU-s)  "
          f"peak RSS {r['peak_rss_mb']:4.0f} MB (imports {r['base_rss_mb']:.0f} MB)  "
          f"problems={r['problems']}", flush=True)
    return r


if __name__ == "__main__":
    main()
