"""Files WRITTEN by real datumaro (1.13.12) at scale, for the listings' fast paths: runs ONLY in
the oracle venv (`run_datumaro_oracle.sh --toolfiles [--items N] [--out DIR]`), never in
maskjob's.

Builds one datumaro dataset with messy names and lets datumaro write it as `coco_instances`,
`cvat` (CVAT for images 1.1, `<subset>.xml`) and `voc_segmentation` (what CVAT's Segmentation
mask 1.1 export runs), without media. The items of each subset are in CVAT's default frame
order (lexicographical: Python `sorted` of the file names) and image ids are datumaro's own
(1, 2, ... over all subsets, as CVAT exports a task). Names: spaces and '(' (sort before '.'),
unicode (NFC/NFD, astral, fullwidth), names whose byte / code point / natural orders differ,
dots, nested folders, case pairs, 200-character names, the same stem with two extensions (in
two subsets: datumaro's item id is the name without its extension, so one subset cannot hold
both). Subsets whose `<subset>.xml` names sort unlike the subsets ('train-extra.xml' <
'train.xml', 'train' < 'train-extra'). Annotations: polygons, RLE masks, crowd masks, boxes,
groups, an image with 300 instances, 300 labels, images with no annotation, and (`extras`, a
random stream of its own) z_order, occluded flags, a text attribute, rotated boxes, polylines
and points. Deterministic
for a given --items.

`--voc` adds `voc/`, datumaro's `voc_segmentation` (label_map "source": a labelmap without
colours, background first; ids without a mask are listed but get no PNG).

Default output: tests/data/toolfiles/ (committed, small). `images.txt` lists every image file
with its size, for the test to create.

`--goldens` (alone: the committed inputs are read, not rewritten) renders what the vendors'
own pipelines make of the committed files into tests/golden/toolfiles/:
- `cvat/`: CVAT's Segmentation mask 1.1 export of each `<subset>.xml`
  (`datumaro_oracle.export_task`: CVAT's fork points, polygons_to_masks, boxes_to_masks,
  merge_instance_segments, voc_segmentation with a labelmap without colours - datumaro's labels
  have none - so VOC colours by line, background first), one export per subset (an item id may
  be in two subsets; one VOC tree would hold one PNG for both);
- `coco/`: pycocotools on each `instances_<subset>.json` (`datumaro_fidelity.coco_maps`: every
  annotation in file order, class index and annotation number), 16-bit.
To keep them small and their names portable (the inputs' names differ only by case or by
Unicode normalisation), each subset's masks are stacked top to bottom, left-aligned, into one
lossless PNG per kind (`<subset>.class.png`, `<subset>.object.png` / `.instance.png`);
`index.json` gives each image's [name, height, width, top row] in file order, top -1 for an
image CVAT writes no PNG for (no annotation, or none that paints), and for CVAT a fifth field:
1 if CVAT's subset list names the image."""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import cv2
import datumaro as dm
import numpy as np
from datumaro.components.annotation import RotatedBbox

N_LABELS = 300
KIND_LABELS = 40  # labels that declare the text attribute `kind`
SUBSETS = ["train", "val", "test (hold-out)", "train-extra"]
BASES = ["a", "a b", "a-b", "a.b", "a.b.c", "img (1)", "img", "img2", "img10", "Img", "IMG",
         "cat", "Cat", "é", "e\u0301", "\u03a9", "\U0001f600", "\uff21", "z", "_x", "~y",
         "v1.0/a", "sub/dir/deep/x", "sub/dir/x y", "sub/é", "0", "00", "1e3",
         "L" * 200, "q'r", "x,y"]


def names(n: int, rnd: random.Random) -> list[str]:
    out = [b + ".jpg" for b in BASES]
    while len(out) < n:
        b = rnd.choice(BASES[:-3]) if rnd.random() < 0.5 else ""
        sep = rnd.choice(["", " ", "_", "-", ".", "/"])
        ext = rnd.choice([".jpg", ".jpg", ".png", ".JPG", ".jpeg"])
        out.append(f"{b}{sep}{len(out)}{ext}".lstrip("/"))
    return out[:n]


def annotations(rnd: random.Random, k: int, h: int, w: int) -> list[dm.Annotation]:
    anns: list[dm.Annotation] = []
    kinds = rnd.randrange(5)
    if kinds == 0:
        return anns  # an image with no annotation
    for j in range(rnd.randrange(1, 6)):
        label = rnd.randrange(N_LABELS)
        x, y = rnd.uniform(0, w - 8), rnd.uniform(0, h - 8)
        kind = rnd.randrange(5)
        group = rnd.choice([0, 0, 1, 2])
        if kind == 0:
            anns.append(dm.Polygon([x, y, x + 7.25, y + 0.5, x + 3.5, y + 6.75], label=label,
                                   group=group, id=j))
        elif kind == 1:
            anns.append(dm.Bbox(x, y, rnd.uniform(1, 8), rnd.uniform(1, 8), label=label,
                                group=group, id=j))
        else:
            m = np.zeros((h, w), np.uint8)
            m[int(y):int(y) + 5, int(x):int(x) + 6] = 1
            m[int(y) + 2, int(x) + 2] = 0
            anns.append(dm.Mask(m, label=label, group=group, id=j,
                                attributes={"is_crowd": kind == 4}))
    return anns


def extras(rnd: random.Random, anns: list[dm.Annotation], h: int,
           w: int) -> list[dm.Annotation]:
    """What CVAT users draw besides filled shapes, from a random stream of its own (the items,
    names and shapes above stay as they were): z_order on some shapes (so CVAT's paint order
    is not the file order), occluded flags, a declared text attribute, rotated boxes (CVAT
    turns them into polygons after every other shape; datumaro's COCO writer drops them),
    polylines and points (no mask shows them). No ellipses: datumaro's CVAT writer drops them
    and its COCO writer turns each into a polygon of hundreds of float points (the fidelity
    set has one)."""
    if rnd.random() < 0.4:
        return anns
    out = []
    for a in anns:
        if rnd.random() < 0.5:
            attrs = dict(a.attributes)
            if rnd.random() < 0.3:
                attrs["occluded"] = True
            if rnd.random() < 0.3 and a.label < KIND_LABELS:
                attrs["kind"] = rnd.choice(["oak", "a b", "é"])
            a = a.wrap(z_order=rnd.choice([-1, 0, 1, 2]), attributes=attrs)
        out.append(a)
    for j in range(100, 100 + rnd.randrange(1, 4)):
        label, kind = rnd.randrange(N_LABELS), rnd.randrange(3)
        x, y = rnd.uniform(2, w - 10), rnd.uniform(2, h - 10)
        z = rnd.choice([-1, 0, 1])
        if kind == 0:
            out.append(RotatedBbox(x + 4, y + 4, rnd.uniform(2, 8), rnd.uniform(2, 8),
                                   rnd.choice([15.0, 30.0, 45.0, 90.0]), label=label, id=j,
                                   z_order=z, group=rnd.choice([0, 1])))
        elif kind == 1:
            out.append(dm.PolyLine([x, y, x + 6.5, y + 3.25, x + 1, y + 7], label=label, id=j))
        else:
            out.append(dm.Points([x, y, x + 2, y + 2], label=label, id=j))
    return out


def many(h: int, w: int) -> list[dm.Annotation]:
    """300 instances in one image (one per label): boxes and polygons."""
    out: list[dm.Annotation] = []
    for i in range(300):
        x, y = (i * 7) % (w - 4), (i * 3) % (h - 4)
        if i % 2:
            out.append(dm.Bbox(x, y, 3, 3, label=i, id=i))
        else:
            out.append(dm.Polygon([x, y, x + 3, y, x + 3, y + 3], label=i, id=i))
    return out


def dataset(n: int) -> tuple[dm.Dataset, list[tuple[str, int, int]]]:
    rnd, more = random.Random(n), random.Random(f"extras {n}")
    files = names(n, rnd)
    by_subset: dict[str, list[str]] = {s: [] for s in SUBSETS}
    for i, f in enumerate(files):
        by_subset[SUBSETS[i % len(SUBSETS)]].append(f)
    by_subset["val"].append("img.png")  # the stem of train's img.jpg (another subset)
    items, images = [], []
    for subset in SUBSETS:
        for name in sorted(by_subset[subset]):  # CVAT's default (lexicographical) frame order
            h, w = rnd.choice([(24, 32), (30, 40), (48, 64)])
            anns = many(h, w) if name == "img2.jpg" else \
                extras(more, annotations(rnd, len(items), h, w), h, w)
            stem, _ext = name.rsplit(".", 1)
            media = dm.Image.from_file(path=f"/nonexistent/{subset}/{name}", size=(h, w))
            items.append(dm.DatasetItem(id=stem, subset=subset, annotations=anns, media=media))
            images.append((f"{subset}/{name}", h, w))
    cats = dm.LabelCategories()
    for i in range(N_LABELS):  # `kind` declared on a few labels (the XML repeats it per label)
        cats.add(f"c{i:03d}", attributes={"kind"} if i < KIND_LABELS else set())
    return dm.Dataset.from_iterable(items, categories={dm.AnnotationType.label: cats}), images


def stack(masks: list[np.ndarray | None], dtype, channels: int) -> np.ndarray:
    """The masks top to bottom, left-aligned, zero-padded to the widest (None: no rows)."""
    rows = sum(m.shape[0] for m in masks if m is not None)
    width = max((m.shape[1] for m in masks if m is not None), default=1)
    out = np.zeros((rows, width, channels) if channels > 1 else (rows, width), dtype)
    y = 0
    for m in masks:
        if m is not None:
            out[y:y + m.shape[0], :m.shape[1]] = m
            y += m.shape[0]
    return out


def tops(sizes: list[tuple[str, int, int]], present: list[bool]) -> list[list]:
    out, y = [], 0
    for (name, h, w), has in zip(sizes, present, strict=True):
        out.append([name, h, w, y if has else -1])
        y += h if has else 0
    return out


def cvat_goldens(data: Path, out: Path) -> dict[str, list[list]]:
    import xml.etree.ElementTree as ET

    from datumaro_oracle import export_task

    index = {}
    (out / "cvat").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for xml in sorted((data / "cvat").glob("*.xml")):
            subset = xml.stem
            voc = Path(tmp) / subset
            export_task(Path(tmp) / "task", voc, mode="voc", xml=xml)
            sizes = [(el.get("name"), int(el.get("height")), int(el.get("width")))
                     for el in ET.parse(xml).getroot().iter("image")]
            kinds = {}
            for kind, folder in (("class", "SegmentationClass"), ("object", "SegmentationObject")):
                masks = []
                for name, _h, _w in sizes:
                    png = voc / folder / (name.rsplit(".", 1)[0] + ".png")
                    masks.append(cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
                                 if png.exists() else None)
                kinds[kind] = masks
                cv2.imwrite(str(out / "cvat" / f"{subset}.{kind}.png"),
                            stack(masks, np.uint8, 3), [cv2.IMWRITE_PNG_COMPRESSION, 9])
            listed = set((voc / "ImageSets/Segmentation/default.txt").read_text(
                encoding="utf-8").splitlines())
            index[subset] = [[*row, int(row[0].rsplit(".", 1)[0] in listed)]
                             for row in tops(sizes, [m is not None for m in kinds["class"]])]
            labelmap = (voc / "labelmap.txt").read_text()
            if (out / "cvat" / "labelmap.txt").exists():
                assert (out / "cvat" / "labelmap.txt").read_text() == labelmap
            (out / "cvat" / "labelmap.txt").write_text(labelmap)
    return index


def coco_goldens(data: Path, out: Path) -> dict[str, list[list]]:
    from datumaro_fidelity import class_values, coco_maps
    from pycocotools.coco import COCO

    index = {}
    (out / "coco").mkdir(parents=True)
    for path in sorted((data / "coco" / "annotations").glob("instances_*.json")):
        subset = path.stem.removeprefix("instances_")
        coco = COCO(str(path))
        value = class_values(coco)
        maps = [coco_maps(coco, img, value) for img in coco.dataset["images"]]
        for k, kind in enumerate(("class", "instance")):
            cv2.imwrite(str(out / "coco" / f"{subset}.{kind}.png"),
                        stack([m[k] for m in maps], np.uint16, 1),
                        [cv2.IMWRITE_PNG_COMPRESSION, 9])
        index[subset] = tops([(img["file_name"], img["height"], img["width"])
                              for img in coco.dataset["images"]], [True] * len(maps))
    return index


def upstream_points_differ(data: Path, out: Path) -> dict[str, int]:
    """Pixels (per subset) where UPSTREAM datumaro's rendering - shape points through float32,
    not the CVAT fork's float64 (datumaro_oracle.fork_points) - differs from the goldens: how
    much the set tells CVAT's pipeline from upstream's."""
    import datumaro_oracle

    fork = datumaro_oracle.fork_points
    datumaro_oracle.fork_points = lambda shape, points: shape  # upstream: points as given
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cvat_goldens(data, Path(tmp))
            diff = {}
            for xml in sorted((data / "cvat").glob("*.xml")):
                a, b = (cv2.imread(str(d / "cvat" / f"{xml.stem}.class.png"))
                        for d in (Path(tmp), out))
                assert a.shape == b.shape, xml
                diff[xml.stem] = int((a != b).any(axis=2).sum())
    finally:
        datumaro_oracle.fork_points = fork
    return diff


def goldens(repo: Path) -> None:
    import platform

    from fixture_hash import fixture_sha256

    data, out = repo / "tests/data/toolfiles", repo / "tests/golden/toolfiles"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index = {"cvat": cvat_goldens(data, out), "coco": coco_goldens(data, out)}
    rows = ",\n".join(f"{json.dumps(f)}: {{" + ",\n".join(
        f"{json.dumps(s)}: [\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rs) + "]"
        for s, rs in by.items()) + "}" for f, by in index.items())
    (out / "index.json").write_text("{" + rows + "}\n", encoding="utf-8")  # a row per line
    info = {"generator": "tests/oracles/run_datumaro_oracle.sh --toolfiles --goldens",
            "datumaro": metadata.version("datumaro"),
            "pycocotools": metadata.version("pycocotools"), "opencv": cv2.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "fixture_trees": ["tests/data/toolfiles"],
            "fixture_sha256": fixture_sha256(repo, ("tests/data/toolfiles",)),
            "upstream_float32_points_differ_px": upstream_points_differ(data, out)}
    (out / "ORACLE.json").write_text(json.dumps(info, indent=2) + "\n")
    print(out)


def main() -> None:
    logging.disable(logging.WARNING)  # the CVAT writer warns of every is_crowd attribute
    argv = sys.argv
    repo = Path(argv[argv.index("--repo") + 1]) if "--repo" in argv else \
        Path(__file__).resolve().parents[2]
    if "--goldens" in argv:
        goldens(repo)
        return
    n = int(argv[argv.index("--items") + 1]) if "--items" in argv else 150
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else \
        repo / "tests/data/toolfiles"
    ds, images = dataset(n)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        ds.export(str(Path(tmp) / "coco"), "coco_instances", save_media=False)
        ds.export(str(Path(tmp) / "cvat"), "cvat", save_media=False)
        shutil.copytree(Path(tmp) / "coco" / "annotations", out / "coco" / "annotations")
        (out / "cvat").mkdir()
        for xml in sorted((Path(tmp) / "cvat").glob("*.xml")):
            shutil.copy(xml, out / "cvat" / xml.name)
        if "--voc" in argv:  # PNGs: too big to commit, written at test time only
            ds.export(str(out / "voc"), "voc_segmentation", save_media=False,
                      label_map="source")
    (out / "images.txt").write_text("".join(f"{k}\t{h}\t{w}\n" for k, h, w in images),
                                    encoding="utf-8")
    info = {"generator": f"tests/oracles/run_datumaro_oracle.sh --toolfiles --items {n}",
            "datumaro": metadata.version("datumaro"), "numpy": np.__version__,
            "items": len(images)}
    (out / "ORACLE.json").write_text(json.dumps(info, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
