"""COCO instances reader: categories -> classes, one image record + its annotations -> Item.

The input is one JSON with `images`, `annotations` and `categories` (SPEC 3). The driver splits
it once (`split_dataset`) into one small JSON per image - its record, its annotations in file
order and the categories they use - so no worker ever receives the whole file; `parse_item`
turns such a per-image JSON into an Item.

Classes are the categories in file order (class index i + 1 for the i-th); COCO has no colours,
so class colours are the Pascal VOC colormap by index, as datumaro gives colourless labels.
A category named `background` (datumaro's exporter writes one) is not a class but the
background (model.ClassTable): its annotations paint background.
Category names must be unique (outputs name classes).

Geometry, under pycocotools' rule (RULE = "coco", SPEC 2.5), so masks equal `COCO.annToMask`:
- `segmentation` as a list of polygons -> one `CocoPolygon` (float parts, unioned); parts of
  fewer than 3 points paint nothing, as in pycocotools; an odd number of coordinates is an error
  (pycocotools would silently drop the last one);
- `segmentation` as RLE (`counts` a list: uncompressed; a string: compressed) -> a `Bitmap` of
  the decoded mask's bounding box. Decoding is ours (numpy, no full frame): the RLE must have
  the image's size and its counts must add up to height x width, so malformed data fails its
  item instead of reaching pycocotools' C decoder;
- no (or an empty) `segmentation`: the `bbox` is painted as pycocotools' `frBbox` does (the
  polygon of its corners); annToMask itself would raise on such an annotation.
`iscrowd` changes nothing here: a crowd region is painted like any other annotation.
Each bad annotation (unknown category id, malformed segmentation, NaN, absurd coordinates)
fails its item with a message naming the annotation.
"""

from __future__ import annotations

import itertools
import json
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, ItemError, expected, shown
from ..limits import DEFAULT_LIMITS, Budget, Limits, SizeReader, item_size, load_json
from ..model import (
    BACKGROUND,
    Bitmap,
    ClassInfo,
    ClassTable,
    CocoPolygon,
    Geometry,
    Item,
    Label,
    valid_unicode,
)
from ..palette import voc_color
from ..paths import check_relative

NAME = "coco"
ANN_FORMAT = "coco.json"  # an item's bytes: its COCO image record and annotations
RULE = "coco"
EXIF = False  # datumaro load_image: cv2 IMREAD_UNCHANGED ignores EXIF orientation
TOP_KEYS = ("images", "annotations", "categories")
INSTANCES_PREFIX = "instances_"
MAX_RLE_GROUP = 12  # characters of one compressed count (60 bits): more is corrupt data


# ---------------------------------------------------------------------------- dataset level
def dataset_name(json_name: str) -> str:
    """The dataset of a COCO file: its stem without 'instances_' ('instances_val2017.json' ->
    'val2017'), as COCO and datumaro name subsets."""
    stem = posixpath.basename(json_name)
    stem = stem[:-5] if stem.lower().endswith(".json") else stem
    rest = stem[len(INSTANCES_PREFIX):] if stem.startswith(INSTANCES_PREFIX) else ""
    return rest or stem or "default"


def _is_id(v: object) -> bool:
    return isinstance(v, int | str) and not isinstance(v, bool)


def id_alias(v: object) -> int | None:
    """The integer id an annotation's non-integer `image_id` stands for in pycocotools' and
    datumaro's dict lookups (Python's `True == 1`, `40.0 == 40`): a bool or an integral float
    (pandas writes ids as floats); None for anything else. Such an annotation is joined to
    that image, which then fails by `parse_item`'s rule (never an empty mask marked ok)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def check_encoding(head: bytes, where: str) -> None:
    """A COCO file is UTF-8 (a BOM allowed): Python's json reads UTF-16/32 bytes by their
    BOM or NULs, but pycocotools opens the file as UTF-8 text and fails, and the streaming
    passes refuse it (such a file was loaded whole): an InputError. `head`: the first 4
    bytes at least."""
    encoding = json.detect_encoding(head[:4])
    if encoding not in ("utf-8", "utf-8-sig"):
        raise InputError(f"{where}: " + expected("a JSON file in UTF-8 (pycocotools reads UTF-8)",
                                                 f"{encoding.upper()} text"))


class RepeatedList(InputError):
    """A top-level list (`TOP_KEYS`) given twice in one file."""


def check_top_keys(keys: Any, where: str) -> None:
    """The one rule for a COCO file whose top level repeats 'images', 'annotations' or
    'categories' (JSON allows it): json and pycocotools keep the last list, a streaming
    reader would join both, so whichever reading we chose another tool disagrees - such a
    file is an InputError (RepeatedList) on every path (whole load, msgspec and ijson
    passes). Other repeated keys ("info") are not read and pass."""
    seen: set[str] = set()
    for k in keys:
        if k in TOP_KEYS and k in seen:
            raise RepeatedList(f"{where}: " + expected(
                "each of 'images', 'annotations' and 'categories' once at the top level",
                f"'{k}' twice (tools disagree on which to read)"))
        seen.add(k)


def load_document(data: bytes, where: str) -> dict[str, Any]:
    """A whole COCO instances JSON (InputError when it is not one: not JSON, nested too deep,
    an integer of more digits than Python converts, not the three lists, a list given twice
    - `check_top_keys` -, not UTF-8 - `check_encoding`)."""
    check_encoding(data, where)
    top: list[Any] = []

    def pairs(got: list[tuple[str, Any]]) -> dict[str, Any]:
        top[:] = [got]  # the last object closed is the top level (~8% slower than json's)
        return dict(got)

    try:
        doc = json.loads(data, object_pairs_hook=pairs)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise InputError(f"{where}: " + expected("valid JSON", str(e))) from None
    except RecursionError:
        raise InputError(f"{where}: " + expected("JSON of a sane nesting depth",
                                                 "deeper than the recursion limit")) from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in TOP_KEYS):
        raise InputError(f"{where}: " + expected(
            "a COCO instances object with 'images', 'annotations' and 'categories' lists",
            sorted(doc) if isinstance(doc, dict) else type(doc).__name__))
    check_top_keys((k for k, _ in top[0]), where)
    return doc


def _classes(categories: list[Any], where: str) -> tuple[ClassTable, dict[int, str]]:
    classes, by_id, names = [], {}, set()
    for i, c in enumerate(categories):
        at = f"{where} categories[{i}]"
        if not isinstance(c, dict) or isinstance(c.get("id"), bool) or \
                not isinstance(c.get("id"), int):
            raise InputError(f"{at}: " + expected("a category with an integer 'id'", c))
        name = c.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{at}: " + expected("a non-empty category 'name'", name))
        if not valid_unicode(name):
            raise InputError(f"{at}: " + expected("a category 'name' in valid Unicode",
                                                  ascii(name)))
        if c["id"] in by_id:
            raise InputError(f"{at}: " + expected("unique category ids", c["id"]))
        if name in names:
            raise InputError(f"{at}: " + expected("unique category names", name))
        by_id[c["id"]] = name
        names.add(name)
        if name != BACKGROUND:
            classes.append(ClassInfo(name, voc_color(len(classes) + 1), "any"))
    return ClassTable(tuple(classes), (0, 0, 0) if BACKGROUND in names else None), by_id


def parse_classes(data: bytes) -> ClassTable:
    """The class list of a COCO instances JSON: its categories in file order."""
    return _classes(load_document(data, "COCO JSON")["categories"], "COCO JSON")[0]


@dataclass(frozen=True)
class CocoImage:
    """One image of the file: its name, its per-image JSON (or the reason it cannot be
    exported, known from the file alone)."""

    name: str
    inline: bytes | None
    problem: str | None = None


@dataclass(frozen=True)
class CocoSplit:
    classes: ClassTable
    images: list[CocoImage]
    orphans: int  # annotations whose image_id names no image (reported, never exported)


def _stem(name: str) -> str:
    """The stem outputs are named by: the rule of `Item.stem`."""
    head, dot, _ext = name.rpartition(".")
    return head if dot and head else name


def split_dataset(data: bytes, where: str = "COCO JSON") -> CocoSplit:
    """Split a COCO instances JSON into one small JSON per image (InputError if the file as a
    whole is unusable; per-image problems are recorded on the image and fail it alone)."""
    doc = load_document(data, where)
    classes, by_id = _classes(doc["categories"], where)
    per_image: dict[Any, list[Any]] = {}
    records: list[tuple[int, Any]] = []
    problems: dict[int, str] = {}
    for k, rec in enumerate(doc["images"]):
        if not isinstance(rec, dict) or not _is_id(rec.get("id")):
            problems[k] = expected("an image record with an integer or string 'id'", rec)
        elif rec["id"] in per_image:
            problems[k] = expected("unique image ids", rec["id"])
        else:
            per_image[rec["id"]] = []
        records.append((k, rec))
    orphans = 0
    for ann in doc["annotations"]:
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not _is_id(image_id):
            image_id = id_alias(image_id)
        if image_id is not None and image_id in per_image:
            per_image[image_id].append(ann)
        else:
            orphans += 1
    del doc
    images: list[CocoImage] = []
    names: set[str] = set()
    stems: dict[str, str] = {}  # stem -> the first file_name that has it
    for k, rec in records:
        raw = rec.get("file_name") if isinstance(rec, dict) else None
        name = raw if isinstance(raw, str) and raw else f"images[{k}]"
        if k in problems:
            images.append(CocoImage(name, None, problems[k]))
            continue
        if not isinstance(raw, str) or not raw:
            images.append(CocoImage(name, None, expected("a non-empty 'file_name'", raw)))
            continue
        try:
            check_relative(raw)
        except ItemError:
            images.append(CocoImage(name, None, expected(
                "a file_name relative to the images folder (no '..', not absolute)", raw)))
            continue
        if raw in names:
            images.append(CocoImage(name, None, expected("unique file names", raw)))
            continue
        stem = _stem(raw)
        if stem in stems:
            images.append(CocoImage(name, None, expected(
                "one image per file stem (masks are named <stem>.png)",
                f"{raw} and {stems[stem]}")))
            continue
        names.add(raw)
        stems[stem] = raw
        anns = per_image.pop(rec["id"])  # freed as it goes: the driver holds the JSON once
        used = {a.get("category_id") for a in anns
                if isinstance(a, dict) and _is_id(a.get("category_id"))}
        cats = [[cid, by_id[cid]] for cid in by_id if cid in used]
        try:
            inline = json.dumps({"image": rec, "annotations": anns, "categories": cats},
                                separators=(",", ":"), ensure_ascii=False,
                                allow_nan=True).encode()
        except (RecursionError, ValueError) as e:  # nested too deep for the encoder
            images.append(CocoImage(raw, None, expected("annotations of a sane nesting depth",
                                                        type(e).__name__)))
            continue
        images.append(CocoImage(raw, inline))
    return CocoSplit(classes, images, orphans)


# ---------------------------------------------------------------------------- one image
def _numbers(v: object, limits: Limits, where: str, what: str) -> np.ndarray:
    if isinstance(v, list) and len(v) > 2 * limits.max_shape_points:  # before any conversion
        raise ItemError(expected(f"{what} of at most {limits.max_shape_points} points "
                                 "(limits.max_shape_points)", f"{len(v) // 2} points"),
                        where=where)
    if not isinstance(v, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        raise ItemError(expected(f"{what} as a list of numbers", v), where=where)
    try:
        arr = np.asarray(v, dtype=np.float64)
    except OverflowError:  # an integer beyond float64 (10**400): JSON allows it
        raise ItemError(expected(f"coordinates within +-{limits.max_coordinate:g} in {what}",
                                 "an integer beyond the float range"), where=where) from None
    if not np.all(np.isfinite(arr)):
        raise ItemError(expected(f"finite coordinates in {what}", v), where=where)
    if arr.size and float(np.abs(arr).max()) > limits.max_coordinate:
        raise ItemError(expected(f"coordinates within +-{limits.max_coordinate:g} in {what}",
                                 float(np.abs(arr).max())), where=where)
    return arr


MANY_PARTS = 64  # parts of one polygon list from which one numpy pass over all of them pays


def _polygons(segm: list[Any], budget: Budget, where: str) -> CocoPolygon:
    plain = _plain_parts(segm, budget) if len(segm) >= MANY_PARTS else None
    if plain is not None:
        return CocoPolygon(plain)
    parts = []
    for k, part in enumerate(segm):
        arr = _numbers(part, budget.limits, where, f"segmentation[{k}]")
        budget.points(arr.size // 2, f"segmentation[{k}]", where)
        if arr.size % 2:
            raise ItemError(expected(f"an even number of coordinates in segmentation[{k}]",
                                     arr.size), where=where)
        parts.append(arr)
    return CocoPolygon(tuple(parts))


def _plain_parts(segm: list[Any], budget: Budget) -> tuple[np.ndarray, ...] | None:
    """The parts of a polygon list of many parts checked in one numpy pass - numbers only, even
    lengths, finite, within max_coordinate, each part within max_shape_points and all within
    the item's max_points, charged as the per-part loop charges them - with the parts of fewer
    than 3 points left out (no rasterizer draws them). A million two-point parts cost ~15 s
    one by one. None when a part needs the per-part loop, which names what is wrong."""
    limits = budget.limits
    if set(map(type, segm)) != {list}:
        return None
    sizes = list(map(len, segm))
    if max(sizes) > 2 * limits.max_shape_points or any(n % 2 for n in sizes):
        return None
    points = sum(sizes) // 2
    if budget.point_total + points > limits.max_points:
        return None
    flat = list(itertools.chain.from_iterable(segm))
    if not set(map(type, flat)) <= {int, float}:
        return None
    try:
        arr = np.asarray(flat, dtype=np.float64)
    except OverflowError:
        return None
    if arr.size and not float(np.abs(arr).max()) <= limits.max_coordinate:  # NaN fails too
        return None
    budget.point_total += points
    return tuple(arr[end - n:end] for n, end in zip(sizes, itertools.accumulate(sizes),
                                                    strict=True) if n >= 6)


def _bbox_polygon(bbox: object, limits: Limits, where: str) -> CocoPolygon:
    arr = _numbers(bbox, limits, where, "bbox")
    if arr.size != 4 or arr[2] < 0 or arr[3] < 0:
        raise ItemError(expected("a bbox [x, y, width, height] with width, height >= 0",
                                 bbox), where=where)
    x0, y0, w, h = arr.tolist()
    return CocoPolygon((np.array([x0, y0, x0, y0 + h, x0 + w, y0 + h, x0 + w, y0]),))


def decode_counts(counts: str) -> np.ndarray:
    """COCO's compressed RLE string -> run lengths (int64), ValueError if malformed.

    Each count is a little-endian sequence of 5-bit groups, one character (value + 48) each,
    bit 0x20 meaning 'more follows' and bit 0x10 of the last group the sign; from the fourth
    count on, the value stored is the difference to the count two places before."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("non-ASCII characters") from None
    v = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if v.size == 0:
        return np.zeros(0, np.int64)
    if v.min() < 0 or v.max() > 63:
        raise ValueError("characters outside the RLE alphabet")
    more = (v & 0x20) != 0
    if more[-1]:
        raise ValueError("a truncated count at the end")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > MAX_RLE_GROUP:
        raise ValueError("a count longer than 60 bits")
    pos = np.arange(v.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((v & 0x1F) << (5 * pos), starts)
    negative = (v[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    out = x.copy()
    out[1::2] = np.cumsum(x[1::2])
    out[2::2] = np.cumsum(x[2::2])
    return out


def _rle_counts(segm: dict[str, Any], width: int, height: int, budget: Budget, where: str
                ) -> np.ndarray:
    """The run lengths of an RLE, checked before numpy adds them: the text by its length,
    every run within [0, height x width] (so their int64 sum cannot wrap), the total."""
    size = segm.get("size")
    if size != [height, width]:
        raise ItemError(expected(f"RLE 'size' [{height}, {width}] (the image's [h, w])", size),
                        where=where)
    counts = segm.get("counts")
    if isinstance(counts, str):
        budget.rle_chars(len(counts), where)
        try:
            runs = decode_counts(counts)
        except ValueError as e:
            raise ItemError(expected("valid compressed RLE counts", str(e)), where=where) \
                from None
    elif isinstance(counts, list) and all(
            isinstance(c, int) and not isinstance(c, bool) for c in counts):
        if len(counts) > width * height + 1:
            raise ItemError(expected(f"at most {width * height + 1} RLE counts", len(counts)),
                            where=where)
        if counts and min(counts) < 0:
            raise ItemError(expected("non-negative RLE counts", min(counts)), where=where)
        if counts and max(counts) > width * height:  # before numpy: could overflow int64
            raise ItemError(expected(f"RLE counts of at most {width * height}", max(counts)),
                            where=where)
        runs = np.asarray(counts, dtype=np.int64)
    else:
        raise ItemError(expected("RLE 'counts' as a string or a list of integers",
                                 counts if not isinstance(counts, list) else counts[:8]),
                        where=where)
    if runs.size and int(runs.min()) < 0:
        raise ItemError(expected("non-negative RLE counts", int(runs.min())), where=where)
    if runs.size and int(runs.max()) > width * height:  # then the int64 sum cannot wrap
        raise ItemError(expected(f"RLE counts of at most {width * height}", int(runs.max())),
                        where=where)
    total = int(runs.sum())
    if total != width * height:
        raise ItemError(expected(f"RLE counts adding up to {height}x{width} = "
                                 f"{width * height}", total), where=where)
    return runs


def rle_bitmap(runs: np.ndarray, height: int, budget: Budget | None = None,
               where: str | None = None) -> Bitmap | None:
    """Run lengths (column-major, background first) -> the covered pixels as a Bitmap of their
    bounding box, or None when nothing is covered. Only the columns the mask spans are
    materialized (charged to `budget` first)."""
    ends = np.cumsum(runs)
    fg_start, fg_end = (ends - runs)[1::2], ends[1::2]
    keep = fg_end > fg_start
    fg_start, fg_end = fg_start[keep], fg_end[keep]
    if fg_start.size == 0:
        return None
    joined = fg_start[1:] == fg_end[:-1]  # runs split by an empty background run
    fg_start = fg_start[np.concatenate(([True], ~joined))]
    fg_end = fg_end[np.concatenate((~joined, [True]))]
    c0, c1 = int(fg_start[0]) // height, (int(fg_end[-1]) - 1) // height
    base, n = c0 * height, (c1 - c0 + 1) * height
    if budget is not None:
        budget.pixels(n, "an RLE segmentation", where)
    edges = np.zeros(n + 1, np.int8)
    edges[fg_start - base] = 1
    edges[fg_end - base] = -1
    window = np.cumsum(edges[:-1], dtype=np.int8).view(np.bool_).reshape(c1 - c0 + 1, height).T
    rows = np.flatnonzero(window.any(axis=1))
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    return Bitmap(c0, r0, np.ascontiguousarray(window[r0:r1]))


def _geometry(ann: dict[str, Any], width: int, height: int, budget: Budget, where: str
              ) -> Geometry | None:
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        return rle_bitmap(_rle_counts(segm, width, height, budget, where), height, budget,
                          where)
    if isinstance(segm, list) and segm:
        return _polygons(segm, budget, where)
    if segm is None or segm == []:
        if "bbox" not in ann:
            raise ItemError("Expected a 'segmentation' or a 'bbox'. Got neither instead.",
                            where=where)
        return _bbox_polygon(ann["bbox"], budget.limits, where)
    raise ItemError(expected("a segmentation (polygon list or RLE object)", segm), where=where)


def parse_item(
    data: bytes,
    classes: ClassTable,
    *,
    dataset: str,
    name: str,
    image_key: str | None = None,
    ann_key: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    image_size: SizeReader | None = None,
) -> Item:
    """One per-image JSON from `split_dataset` -> Item (labels in annotation order).

    Size as datumaro reads it: a record whose 'width' or 'height' is missing or falsy (null,
    0, "") takes the size of its image, read by `image_size` from the header; any other value
    must be a positive int (datumaro refuses a non-int such as 640.0 or "640")."""
    doc = load_json(data, limits, "per-image COCO JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("image"), dict) or \
            not isinstance(doc.get("annotations"), list):
        raise ItemError(expected("{'image': {...}, 'annotations': [...]}", doc))
    rec = doc["image"]
    width, height = rec.get("width"), rec.get("height")
    width, height = item_size(width, height, image_size, limits,
                              absent=not (width and height))
    anns = doc["annotations"]
    if len(anns) > limits.max_objects:
        raise ItemError(expected(f"at most {limits.max_objects} annotations", len(anns)))
    index_of = classes.lookup()
    category = {}
    pairs = doc.get("categories")
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and _is_id(pair[0]) and \
                isinstance(pair[1], str) and pair[1] in index_of:
            category[pair[0]] = index_of[pair[1]]
    labels = []
    ignored: Counter[str] = Counter()
    budget = Budget(limits)
    for k, ann in enumerate(anns):
        where = f"annotations[{k}]"
        if not isinstance(ann, dict):
            raise ItemError(expected("an annotation object", ann), where=where)
        if "id" in ann:
            where = f"annotations[{k}] (id {shown(ann['id'])})"
        if not _is_id(ann.get("image_id", 0)):  # joined by `id_alias`
            raise ItemError(expected("an integer or string image_id", ann["image_id"]),
                            where=where)
        cid = ann.get("category_id")
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in category:
            raise ItemError(expected("a category_id declared in 'categories'", cid),
                            where=where)
        g = _geometry(ann, width, height, budget, where)
        if g is not None:
            labels.append(Label(category[cid], g))
        attrs = ann.get("attributes")
        if isinstance(attrs, dict):  # datumaro writes them; no mask shows them
            ignored["occluded"] += attrs.get("occluded") is True
            ignored["attribute"] += sum(1 for a in attrs if a != "occluded")
    return Item(dataset, name, width, height, tuple(labels), image_key, ann_key,
                tuple((kind, n) for kind, n in sorted(ignored.items()) if n))

