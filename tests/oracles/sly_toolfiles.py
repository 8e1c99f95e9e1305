"""A messy Supervisely project WRITTEN by the real SDK (supervisely==6.74.51), and its goldens.

Runs ONLY in the SDK venv (run_supervisely_oracle.sh --toolfiles [--goldens]).

`write` (default): the SDK itself creates tests/data/sly_toolfiles with `sly.Project(CREATE)`,
`set_meta`, `create_dataset` (nested datasets in the SDK's `<parent>/datasets/<child>` layout)
and `add_item_np` / `add_item_file`, so meta.json, every annotation JSON, img_info and the image
files are the SDK's own bytes. Items come three ways, as in real users' projects:
- `sdk`: `sly.Annotation` objects (the SDK crops labels to the image when it builds the
  annotation, and writes its own JSON: nnCreated/nnUpdated, classId, id, labelerLogin,
  createdAt/updatedAt on geometries, `instance` (binding key), smartToolInput, tags);
- `server`: JSON as a project download stores it (`ann=dict`, written verbatim by the SDK):
  the SDK's label JSON of UNCROPPED labels (parts or all outside the image, bitmaps crossing the
  border, graphs with a node outside, some float coordinates) plus server fields (`priority`,
  `instance`, `nnCreated: true`, `smartToolInput`, ...) and an img_info file;
- `file`: `add_item_file(path, ann=<json path>)` (image and annotation files copied).
Geometries: polygon (holes, self-intersecting), rectangle, bitmap, alpha_mask, line, point,
graph (template with colours), cuboid_2d, multipolygon, oriented_bbox, and an `any` class holding
several geometry types. Also: the same class many times, an image with 300 objects, images
with no annotation (`ann=None`), annotations with tags but no objects, odd names (spaces,
unicode NFC and NFD, inner dots, case-only differences, `%`, `#`, upper-case extension, two
images of one stem), gray/RGBA PNGs and JPEGs. Seeded: a rerun writes the same bytes with the
same SDK/OpenCV/Pillow. Items whose names clash on macOS/Windows (case, NFC/NFD) are then stored
under portable names (sly_toolfiles_names.py); `stage()` restores the SDK's names.

`goldens`: loads the committed project with the SDK and renders, item by item with the SDK's
own draw, the export-as-masks app's masks (tests/data/configs/app.yaml,
supervisely_oracle.app_item_masks) and the DTL save_masks layer's (dtl_save_masks.json,
supervisely_oracle.dtl_item_masks), stacked per dataset and kind into tests/golden/sly_toolfiles/:
`d<k>.machine.png` (8-bit), `d<k>.semantic.png`, `d<k>.human.png` (RGB), `d<k>.instances.png`
(8-bit, every instance mask of the dataset top to bottom), `d<k>.dtl_machine.png`,
`d<k>.dtl_human.png` (RGB, human 2W+1 wide), `index.json` (per dataset dir: each
item's [name, height, width, top row, first instance row, [instance file names]], file order)
and ORACLE.json (versions, fixture_sha256).

Usage: python sly_toolfiles.py [write|goldens] [--repo REPO]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import PIL
import supervisely as sly
from build_sly_fixture import (
    CLASSES as FIXTURE_CLASSES,
)
from build_sly_fixture import (
    POSE_TEMPLATE_JSON,
    SHAPE_TO_GEOMETRY,
    b64_sdk_alpha,
    b64_sdk_bitmap,
    bitmap,
    cuboid,
    graph,
    line,
    multipoly,
    obb,
    point,
    poly,
    rect,
)
from fixture_hash import fixture_sha256
from PIL import Image
from sly_toolfiles_names import RENAMES, make_portable, stage
from supervisely.annotation.label import LabelingStatus
from supervisely_oracle import (
    SDK_VERSION,
    app_item_masks,
    dtl_item_masks,
    iter_items,
    load_settings,
    machine_colors,
    recompress_pngs,
    write_json,
)

SEED = 20261130
FIXTURE = "tests/data/sly_toolfiles"
GOLDEN = "tests/golden/sly_toolfiles"
CONFIG = "tests/data/configs/app.yaml"
DTL_CONFIG = "tests/data/configs/dtl_save_masks.json"
STAMP = "2026-11-30T12:00:00.000Z"

# (title, shape, colour) in meta order: sly_project's 15 (every geometry, `any`, a black class;
# so the DTL config's mapping names classes of this project) + 2
CLASSES = [
    *FIXTURE_CLASSES,
    ("Fußgänger ü", "polygon", "#00897B"),
    ("never used", "rectangle", "#123456"),
]
USED_CLASSES = [c for c in CLASSES if c[0] not in ("unused", "never used")]
ANY_SHAPES = ("polygon", "rectangle", "bitmap", "line", "point")


def build_meta() -> sly.ProjectMeta:
    classes = []
    for k, (title, shape, color) in enumerate(CLASSES):
        cfg = sly.GraphNodes.config_from_json(POSE_TEMPLATE_JSON) if shape == "graph" else None
        classes.append(
            sly.ObjClass(title, SHAPE_TO_GEOMETRY[shape], color=sly.color.hex2rgb(color),
                         geometry_config=cfg, sly_id=9000 + k)
        )
    tags = [
        sly.TagMeta("difficult", sly.TagValueType.NONE, color=[170, 170, 170]),
        sly.TagMeta("score", sly.TagValueType.ANY_NUMBER, color=[10, 20, 30]),
        sly.TagMeta("weather", sly.TagValueType.ONEOF_STRING, possible_values=["sun", "rain"],
                    color=[40, 50, 60]),
        sly.TagMeta("note", sly.TagValueType.ANY_STRING, color=[70, 80, 90]),
    ]
    return sly.ProjectMeta(obj_classes=classes, tag_metas=tags)


# --------------------------------------------------------------------------- random content


def image(h: int, w: int, kind: str) -> np.ndarray:
    """Small smooth gradient image (keeps the human-mask goldens small). kind: rgb|gray|rgba."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                     (xx + yy) * 127 // max(h + w - 2, 1)], axis=2)
    img = base.astype(np.uint8)
    if kind == "gray":
        return img[:, :, 0].copy()
    if kind == "rgba":
        alpha = np.full((h, w, 1), 255, np.uint8)
        alpha[: h // 2, : w // 3] = 0
        return np.concatenate([img, alpha], axis=2)
    return img


def xy(r: random.Random, w: int, h: int, out: int) -> list:
    return [r.randint(-out, w - 1 + out), r.randint(-out, h - 1 + out)]


def random_object(r: random.Random, w: int, h: int, shape: str, cls: str, *, out: int) -> dict:
    """One object's JSON (SDK field names) of `shape`; coordinates up to `out` px outside."""
    if shape == "polygon":
        ext = [xy(r, w, h, out) for _ in range(r.randint(3, 7))]
        holes = []
        if r.random() < 0.3:
            x0, y0 = r.randint(0, max(w - 4, 0)), r.randint(0, max(h - 4, 0))
            holes = [[[x0, y0], [x0 + 3, y0], [x0 + 3, y0 + 3], [x0, y0 + 3]]]
            ext = [[x0 - 3, y0 - 3], [x0 + 6, y0 - 3], [x0 + 6, y0 + 6], [x0 - 3, y0 + 6]]
        return poly(cls, ext, holes, gtype=shape)
    if shape in ("rectangle",):
        return rect(cls, xy(r, w, h, out), xy(r, w, h, out), gtype=shape)
    if shape in ("bitmap", "alpha_mask"):
        bh, bw = r.randint(2, max(3, h // 2)), r.randint(2, max(3, w // 2))
        rs = np.random.default_rng(r.randrange(1 << 30))
        if shape == "bitmap":
            mask = rs.random((bh, bw)) < 0.6
            mask[0, 0] = True
            return bitmap(cls, xy(r, w, h, out), b64_sdk_bitmap(mask), gtype=shape)
        alpha = (rs.random((bh, bw)) * 300).clip(0, 255).astype(np.uint8)
        alpha[0, 0] = 200
        return bitmap(cls, xy(r, w, h, out), b64_sdk_alpha(alpha), gtype=shape)
    if shape == "line":
        return line(cls, [xy(r, w, h, out) for _ in range(r.randint(2, 5))], gtype=shape)
    if shape == "point":
        return point(cls, *xy(r, w, h, out))
    if shape == "graph":
        nodes = {}
        out = out if r.random() < 0.3 else 0  # a node outside drops the whole graph at load
        for key in POSE_TEMPLATE_JSON["nodes"]:
            nodes[key] = (*xy(r, w, h, out), *(["disabled"] if r.random() < 0.15 else []))
        return graph(cls, nodes)
    if shape == "cuboid_2d":
        x, y = r.randint(0, w // 2), r.randint(0, h // 2)
        a, b, d = r.randint(2, w // 2), r.randint(2, h // 2), r.randint(1, 4)
        f1 = [[x, y + d], [x + a, y + d], [x + a, y + b + d], [x, y + b + d]]
        f2 = [[x + d, y], [x + a + d, y], [x + a + d, y + b], [x + d, y + b]]
        return cuboid(cls, f1, f2)
    if shape == "multipolygon":
        return multipoly(cls, [([xy(r, w, h, out) for _ in range(4)], []) for _ in range(2)])
    if shape == "oriented_bbox":
        x, y = r.randint(0, w // 2), r.randint(0, h // 2)
        return obb(cls, [x, y], [x + r.randint(2, w // 2), y + r.randint(2, h // 2)],
                   round(r.uniform(-1.5, 1.5), 4))
    raise ValueError(shape)


def random_objects(r: random.Random, w: int, h: int, n: int, *, out: int) -> list[dict]:
    objs = []
    for _ in range(n):
        title, shape, _ = r.choice(USED_CLASSES)
        if shape == "any":
            shape = r.choice(ANY_SHAPES)
        objs.append(random_object(r, w, h, shape, title, out=out))
    return objs


# --------------------------------------------------------------------------- labels and annotations


def to_labels(objs: list[dict], meta: sly.ProjectMeta, r: random.Random) -> list[sly.Label]:
    """SDK Label objects of the object JSONs, with tags, statuses, ids, logins, binding keys."""
    labels = []
    for k, o in enumerate(objs):
        label = sly.Label.from_json(o, meta)
        g = label.geometry
        extra = {}
        if r.random() < 0.5:
            g.sly_id, g.labeler_login = 100000 + k, r.choice(["alice", "bob.ü"])
            g.created_at = g.updated_at = STAMP
        if r.random() < 0.3:
            extra["tags"] = [sly.Tag(meta.get_tag_meta("score"), round(r.uniform(0, 1), 3)),
                             sly.Tag(meta.get_tag_meta("difficult"))]
        if r.random() < 0.2:
            extra["binding_key"] = f"group-{r.randint(1, 3)}"
        if r.random() < 0.1:
            extra["smart_tool_input"] = {"crop": [[0, 0], [5, 5]], "positive": [[2, 2]],
                                         "negative": [], "visible": True}
        extra["status"] = r.choice(list(LabelingStatus))
        labels.append(label.clone(**extra) if extra else label)
    return labels


def image_tags(meta: sly.ProjectMeta, r: random.Random) -> list[sly.Tag]:
    pick = r.random()
    if pick < 0.5:
        return []
    return [sly.Tag(meta.get_tag_meta("weather"), r.choice(["sun", "rain"])),
            sly.Tag(meta.get_tag_meta("note"), "naïve  note")]


def server_json(h: int, w: int, objs: list[dict], meta: sly.ProjectMeta,
                r: random.Random, *, floats: bool, harsh: bool = False) -> dict:
    """What a download stores for an item: the SDK's JSON of each UNCROPPED label plus the
    fields the server adds, and image tags with ids."""
    objects = []
    for k, label in enumerate(to_labels(objs, meta, r)):
        o = label.to_json()
        o.update({"id": 500000 + k, "classId": label.obj_class.sly_id, "priority": k + 1,
                  "labelerLogin": "carol", "createdAt": STAMP, "updatedAt": STAMP})
        if r.random() < 0.3:
            o["instance"] = f"inst-{r.randint(1, 9)}"
        if floats and "points" in o and isinstance(o["points"], dict):
            o["points"]["exterior"] = [[x + 0.5, y + 0.25] for x, y in o["points"]["exterior"]]
        if harsh:
            jitter(o, r)
        objects.append(o)
    tags = [dict(t.to_json(), id=700 + i, tagId=800 + i, labelerLogin="carol",
                 createdAt=STAMP, updatedAt=STAMP)
            for i, t in enumerate(image_tags(meta, r))]
    return {"description": "", "size": {"height": h, "width": w}, "tags": tags,
            "objects": objects, "customBigData": {}}


def jitter(o: dict, r: random.Random) -> None:
    """Stress runs only: random fractions on every point, ring, node and vertex location."""
    def move(pts):
        return [[x + round(r.uniform(-1, 1), 3), y + round(r.uniform(-1, 1), 3)] for x, y in pts]

    pts = o.get("points")
    if isinstance(pts, dict):
        pts["exterior"] = move(pts["exterior"])
        pts["interior"] = [move(ring) for ring in pts["interior"]]
    for part in o.get("parts", []):
        part["exterior"] = move(part["exterior"])
        part["interior"] = [move(ring) for ring in part["interior"]]
    for node in (*o.get("nodes", {}).values(), *o.get("vertices", {}).values()):
        node["loc"] = move([node["loc"]])[0]


def img_info(name: str, h: int, w: int, k: int) -> dict:
    return {"id": 310000 + k, "name": name, "link": None, "hash": f"h{k:04d}=", "mime": "image/png",
            "ext": name.rsplit(".", 1)[-1].lower(), "size": 1000 + k, "width": w, "height": h,
            "labels_count": 0, "dataset_id": 77, "created_at": STAMP, "updated_at": STAMP,
            "meta": {}, "path_original": f"/h5un6l2bnaz1vj8a9qgms4-public/images/original/{k}.png",
            "full_storage_url": None, "tags": []}


# --------------------------------------------------------------------------- the project

NFC = unicodedata.normalize("NFC", "café.png")
NFD = unicodedata.normalize("NFD", "café.png")
ODD_NAMES = ["img with space.png", NFC, NFD, "Case.png", "case.png", "a.b.c.jpeg", "UPPER.PNG",
             "percent%41.png", "hash#1.jpg", "dup.png", "dup.jpg", "emoji 🐱.png",
             "  leading spaces.png", "ünïcödé ñame.jpg"]
CLASS_OF_SHAPE = {"rectangle": "box", "point": "pin", "line": "lane"}  # the 300-object image
DATASETS = {
    # dataset path: (how items are added, number of random items)
    "train": ("sdk", 40),
    "train/datasets/nested ds": ("sdk", 12),
    "train/datasets/nested ds/datasets/leaf": ("server", 8),
    "web export": ("server", 30),
    "copied files": ("file", 14),
}


def write_project(root: Path, *, seed: int = SEED, scale: int = 1, harsh: bool = False) -> None:
    """The project; `seed`, `scale` (items per dataset x scale) and `harsh` (labels up to 20 px
    outside, random fractions on every coordinate of server items) only for stress runs."""
    r = random.Random(seed)
    meta = build_meta()
    if root.exists():
        shutil.rmtree(root)
    project = sly.Project(str(root), sly.OpenMode.CREATE)
    project.set_meta(meta)
    staging = Path(tempfile.mkdtemp())
    counter = 0
    for ds_path, (how, n) in DATASETS.items():
        ds = project.create_dataset(ds_path.rsplit("/", 1)[-1], ds_path)
        names = [f"{ds_path.rsplit('/', 1)[-1][:4]}_{i:03d}.png" for i in range(n * scale)]
        if ds_path == "web export":
            names[: len(ODD_NAMES)] = ODD_NAMES
        for i, name in enumerate(names):
            counter += 1
            h, w = r.randint(6, 40), r.randint(6, 48)
            kind = "rgb" if i % 7 else r.choice(["gray", "rgba", "rgb"])
            if name.lower().endswith((".jpg", ".jpeg")) and kind == "rgba":
                kind = "rgb"
            img = image(h, w, kind)
            special = i % 10
            if i == 3 and ds_path == "train":  # > 255 objects: boxes, points, lines
                h, w = 30, 40
                img = image(h, w, "rgb")
                shapes = [r.choice(list(CLASS_OF_SHAPE)) for _ in range(300)]
                objs = [random_object(r, w, h, s, CLASS_OF_SHAPE[s], out=0) for s in shapes]
            elif special == 5:  # no objects
                objs = []
            elif special == 6:  # the same class many times
                objs = [random_object(r, w, h, "polygon", "person", out=2) for _ in range(15)]
            else:
                objs = random_objects(r, w, h, r.randint(1, 8),
                                      out=20 if harsh else
                                      (6 if how != "sdk" or i % 3 == 0 else 0))
            if how == "sdk":
                if special == 5 and i % 20 == 5:
                    ann = None  # SDK writes an empty annotation
                else:
                    ann = sly.Annotation((h, w), to_labels(objs, meta, r),
                                         img_tags=image_tags(meta, r))
                ds.add_item_np(name, img, ann=ann)
                continue
            ann_json = server_json(h, w, objs, meta, r, floats=(i % 4 == 1), harsh=harsh)
            if how == "server":
                ds.add_item_np(name, img, ann=ann_json, img_info=img_info(name, h, w, counter))
                continue
            src = staging / f"{counter}{Path(name).suffix}"
            assert sly.image.write(str(src), img)
            ann_path = staging / f"{counter}.json"
            ann_path.write_text(json.dumps(ann_json, indent=4, ensure_ascii=False))
            ds.add_item_file(name, str(src), ann=str(ann_path))
    shutil.rmtree(staging)


def check_with_sdk(root: Path) -> None:
    """Open the written project with the SDK and load every item (raises on any problem)."""
    project = sly.Project(str(root), sly.OpenMode.READ)
    items = objs = labels = 0
    for _ds, _name, _img, ann, raw in iter_items(project, with_raw=True):
        items += 1
        objs += len(raw["objects"])
        labels += len(ann.labels)
    print(f"{root}: {len(project.datasets)} datasets, {items} items, {objs} objects -> "
          f"{labels} labels after the SDK's load")


# --------------------------------------------------------------------------- goldens


def stack(tiles: list[np.ndarray]) -> np.ndarray:
    """Tiles top to bottom, left-aligned, zero padded on the right."""
    width = max(t.shape[1] for t in tiles)
    rows = []
    for t in tiles:
        pad = [(0, 0), (0, width - t.shape[1])] + [(0, 0)] * (t.ndim - 2)
        rows.append(np.pad(t, pad))
    return np.concatenate(rows, axis=0)


def gray(rgb: np.ndarray) -> np.ndarray:
    """The app's conversion: RGB -> PIL mode L (exact for [i, i, i])."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


def write_goldens(repo: Path) -> None:
    out = repo / GOLDEN
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    settings = load_settings(repo / CONFIG)
    dtl_settings = load_settings(repo / DTL_CONFIG)
    with tempfile.TemporaryDirectory() as tmp:  # the SDK must never write into the fixture
        src = stage(repo / FIXTURE, repo / RENAMES, Path(tmp) / "project")
        project = sly.Project(str(src), sly.OpenMode.READ)
        colors = machine_colors(project)
        write_json(out / "obj_class_to_machine_color.json", colors)
        per_ds: dict[str, dict] = {}
        for ds_rel, name, img_path, ann in iter_items(project):
            d = per_ds.setdefault(ds_rel, {"rows": [], "machine": [], "semantic": [],
                                           "human": [], "instances": [], "dtl_machine": [],
                                           "dtl_human": [], "top": 0, "itop": 0})
            m = app_item_masks(ann, img_path, settings, colors)
            h, w = ann.img_size
            insts = [n for n, _ in m["instances"]]
            d["rows"].append([name, h, w, d["top"], d["itop"] if insts else -1, insts])
            d["top"] += h
            d["itop"] += h * len(insts)
            d["machine"].append(gray(m["machine"]))
            d["semantic"].append(m["semantic"][:, :, ::-1])
            d["human"].append(m["human"][:, :, ::-1])
            d["instances"].extend(gray(a) for _, a in m["instances"])
            dtl = dtl_item_masks(ann, img_path, dtl_settings)
            d["dtl_machine"].append(dtl["machine"][:, :, ::-1])
            d["dtl_human"].append(dtl["human"][:, :, ::-1])
    index = {}
    for k, (ds_rel, d) in enumerate(sorted(per_ds.items())):
        index[ds_rel] = {"file": f"d{k}", "items": d["rows"]}
        for kind in ("machine", "semantic", "human", "instances", "dtl_machine", "dtl_human"):
            if d[kind]:
                assert cv2.imwrite(str(out / f"d{k}.{kind}.png"), stack(d[kind]))
    write_json(out / "index.json", index)
    recompress_pngs(out)
    write_json(out / "ORACLE.json", {
        "generator": "tests/oracles/run_supervisely_oracle.sh --toolfiles --goldens",
        "supervisely": sly_version(), "opencv": cv2.__version__, "numpy": np.__version__,
        "pillow": PIL.__version__, "python": platform.python_version(), "seed": SEED,
        "configs": [CONFIG, DTL_CONFIG], "fixture_trees": [FIXTURE, RENAMES, CONFIG, DTL_CONFIG],
        "fixture_sha256": fixture_sha256(repo, (FIXTURE, RENAMES, CONFIG, DTL_CONFIG)),
    })
    print(f"goldens: {len(per_ds)} datasets, "
          f"{sum(len(d['rows']) for d in per_ds.values())} items in {out}")


def sly_version() -> str:
    from importlib.metadata import version

    return version("supervisely")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", nargs="?", default="write", choices=["write", "goldens"])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    ap.add_argument("--seed", type=int, default=SEED, help="stress runs only (not committed)")
    ap.add_argument("--scale", type=int, default=1, help="stress runs only (not committed)")
    ap.add_argument("--harsh", action="store_true", help="stress runs only (not committed)")
    args = ap.parse_args()
    if sly_version() != SDK_VERSION:
        sys.exit(f"needs supervisely=={SDK_VERSION}, found {sly_version()}")
    repo = args.repo.resolve()
    if args.step == "write":
        write_project(repo / FIXTURE, seed=args.seed, scale=args.scale,
                      harsh=args.harsh)
        check_with_sdk(repo / FIXTURE)
        renamed = make_portable(repo / FIXTURE, repo / RENAMES)
        print(f"{len(renamed)} items stored under portable names ({RENAMES})")
    else:
        write_goldens(repo)


if __name__ == "__main__":
    main()
