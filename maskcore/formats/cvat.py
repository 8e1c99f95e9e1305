"""CVAT inputs: "CVAT for images 1.1" XML tasks and "Segmentation Mask 1.1" archives.

Constants shared by the reader, the `cvat` writer (`cvat_masks.py`) and the listing
(`jobs/listing_cvat.py`), and the pure parsers (bytes in, model out). One reader name, `cvat`,
covers both CVAT formats; `parse_item` tells them apart by the bytes it is given:

- `<image ...>` element bytes (the listing cuts them out of annotations.xml, one per item):
  shapes in CVAT's own order (reference/cvat_clearml.md A.5, A.6): labels are returned sorted by
  z_order (stable, as CVAT's `group_by_frame`), then rotated boxes last within their z_order
  (CVAT's `RotatedBoxesToPolygons` appends the polygons it makes). Geometries:
  polygon -> CocoPolygon (float points rounded to 2 decimals in float64, as CVAT's datumaro
  stores them); box -> CocoPolygon of its corners computed with datumaro's float arithmetic
  (`Bbox(x, y, x1 - x, y1 - y).as_polygon()`), rotated about its centre as CVAT does;
  ellipse -> Ellipse with CVAT's points `[cx, cy, cx + rx, cy - ry]` turned back into radii;
  mask (`rle`, `left`, `top`, `width`, `height`; row-major runs starting with a 0-run) ->
  Bitmap; polyline -> Polyline and points -> Point (floored; the coco rule does not paint
  them, as CVAT's mask export). Cuboids, skeletons and tags paint nothing in CVAT's mask
  export and are skipped.
- a Segmentation Mask item: the SegmentationClass PNG alone, or `base.pack_parts([class PNG,
  SegmentationObject PNG])`; classes come from `parse_labelmap` (datumaro's importer rules,
  A.4, A.9) as a `LabelMapClasses`. 1-channel PNGs hold labelmap line indices, 3-channel ones
  colours (alpha ignored; palette PNGs decode to colours, as in datumaro). With an object PNG:
  one Bitmap per instance id in ascending order (an instance spanning several classes takes the
  largest labelmap index, as datumaro), and an empty placeholder for every unused id below the
  largest, so that exporting again numbers the instances exactly as they were. Without one: one
  Bitmap per class present. Unlike datumaro, the background label is never an annotation, a
  16-bit PNG is an error (datumaro wraps it to 8 bits) and an instance lying on background only
  is an error.

Hostile input (SPEC 4, `limits.py`): the listing is bounded in depth, token size and elements
per image; an item's element count, points and raster pixels are charged before they are
built; mask RLE runs are checked as Python ints before numpy; ellipse radii must be >= 0;
mask PNGs are read in bands into 1-2-byte index maps.

Class index i (from 0) is the i-th CVAT label (skeleton sub-labels, which CVAT lists with a
`<parent>`, are skipped: they paint nothing) or the i-th labelmap line that is not background.
A label named `background` is not a class (CVAT's and datumaro's rule; datumaro's exporters
write one without a colour): the ClassTable records its colour (black when it has none) and its
shapes get BACKGROUND_CLASS, painting background. Labels without a colour get the VOC colour of
their labelmap line (background first), as datumaro generates them. Tags, cuboids, skeletons,
attributes and occluded flags are counted per item (`Item.not_painted`).
"""

from __future__ import annotations

import math
import operator
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import IO, Any

import cv2
import numpy as np

from ..errors import InputError, ItemError, expected, shown
from ..limits import (
    DEFAULT_LIMITS,
    Budget,
    Limits,
    SizeReader,
    check_annotation_bytes,
    check_coordinate,
    check_image_size,
    item_size,
    png_header_size,
)
from ..model import (
    RGB,
    Bitmap,
    ClassInfo,
    ClassTable,
    CocoPolygon,
    Ellipse,
    Geometry,
    Item,
    Label,
    Point,
    Polyline,
)
from ..palette import voc_color
from .base import PACK_MAGIC, unpack_parts

NAME = "cvat"
ANN_FORMAT = "cvat"  # an item's bytes: its CVAT <image> element or mask pair
RULE = "coco"  # pycocotools for polygons and boxes; ellipses by OpenCV (SPEC 2.5)
EXIF = False  # datumaro load_image: cv2 IMREAD_UNCHANGED ignores EXIF orientation

# CVAT for images 1.1 task layout
ANNOTATIONS_FILE = "annotations.xml"
IMAGES_DIR = "images"

# Segmentation Mask 1.1 layout (datumaro voc_segmentation)
LABELMAP_FILE = "labelmap.txt"
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
SEGM_LIST_DIR = "ImageSets/Segmentation"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
VOC_IMAGES_DIR = "JPEGImages"
MASK_EXT = ".png"
DEFAULT_SUBSET = "default"
BACKGROUND = "background"
VOID_COLOR: RGB = (224, 224, 192)  # VOC index 255

# datumaro's default labelmap when an archive has none: VOC classes, then `ignored`
VOC_LABELS = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
              "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
              "sheep", "sofa", "train", "tvmonitor")


# ---------------------------------------------------------------------------- names
def item_id(name: str) -> str:
    """CVAT's item id: the image name minus its last extension, sub-folders kept
    ('dir/sub/img.with.dots.jpg' -> 'dir/sub/img.with.dots')."""
    head, sep, tail = name.rpartition("/")
    stem, dot, _ext = tail.rpartition(".")
    stem = stem if dot and stem else tail
    return f"{head}{sep}{stem}"


def subset_problem(subset: str) -> str | None:
    """Why `subset` cannot name an ImageSets/Segmentation list, or None if it can.

    datumaro's importer skips list files whose name has '_' (VOC per-class lists look like
    `cat_train.txt`): such a subset would silently vanish on import.
    """
    if not subset or subset in (".", "..") or any(c in subset for c in "/\\\x00\n\r"):
        return expected("a subset name usable as a file name", subset)
    try:
        subset.encode()
    except UnicodeEncodeError:  # a list file's name that is not UTF-8
        return expected("a subset name in UTF-8", ascii(subset))
    if "_" in subset:
        return expected("a subset name without '_' (CVAT's importer skips list files whose "
                        "name has '_')", subset)
    return None


# ---------------------------------------------------------------------------- CVAT XML
def _reject_doctype(head: bytes, where: str) -> None:
    """No DTD: CVAT writes none, and entities are how XML bombs explode."""
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise InputError(f"{where}: " + expected("XML without a DOCTYPE (CVAT writes none)",
                                                 "a DOCTYPE/ENTITY declaration"))


def _hex_color(value: str | None, fallback: RGB) -> RGB:
    if value is None:
        return fallback
    v = value.strip()
    if len(v) == 7 and v[0] == "#":
        try:
            return (int(v[1:3], 16), int(v[3:5], 16), int(v[5:7], 16))
        except ValueError:
            pass
    raise InputError(f"{ANNOTATIONS_FILE}: " + expected("a label colour like '#fa3253'", value))


def classes_from_meta(meta: ET.Element) -> ClassTable:
    """The `<labels>` of a task, job or project meta -> ClassTable in file order."""
    labels = None
    for path in ("task/labels", "project/labels", "job/labels", "labels"):
        labels = meta.find(path)
        if labels is not None:
            break
    if labels is None:
        raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
            "<meta><task|project|job><labels> with the task's labels", "no <labels>"))
    out: list[ClassInfo] = []
    seen: set[str] = set()
    background: RGB | None = None
    for el in labels.findall("label"):
        if (el.findtext("parent") or "").strip():
            continue  # skeleton sub-label: paints nothing
        name = el.findtext("name")
        if not name:
            raise InputError(f"{ANNOTATIONS_FILE}: " + expected("a <name> in every <label>",
                                                                ET.tostring(el)[:80]))
        if name in seen:
            raise InputError(f"{ANNOTATIONS_FILE}: " + expected("unique label names", name))
        seen.add(name)
        color = el.findtext("color") or None  # datumaro writes labels without a colour
        if name == BACKGROUND:
            background = _hex_color(color, (0, 0, 0))
            continue
        out.append(ClassInfo(name, _hex_color(color, voc_color(len(out) + 1))))
    return ClassTable(tuple(out), background)


TOO_BIG_TAG = "maskjob-too-many-elements"  # stands in for an <image> over limits.max_nodes


def iter_task(stream: IO[bytes], limits: Limits = DEFAULT_LIMITS
              ) -> Iterator[ClassTable | tuple[dict[str, str], bytes]]:
    """Stream a CVAT for images 1.1 annotations.xml: yields the ClassTable (from `<meta>`)
    first, then `(image attributes, <image> element bytes)` per image, in file order.

    Memory: one `<image>` element at a time, bounded. Nesting deeper than `limits.max_depth`
    or a single token (one huge attribute) longer than `limits.max_annotation_bytes` stops the
    listing with an InputError, as does a `<meta>` of more than `limits.max_nodes` elements;
    an `<image>` of more than `limits.max_nodes` elements is cut
    as it is read and yielded as a stub that `parse_image_element` fails (that item only).
    Chunks grow while a long token is pending, so the parser (expat rescans a pending token
    on every feed) stays linear in the input size."""
    depth = 0
    root: ET.Element | None = None
    open_: list[ET.Element] = []  # the elements being built, root first
    image_nodes = 0
    classes_sent = False
    head = stream.read(1 << 16)
    while b"<annotations" not in head and len(head) < 1 << 22:  # a DTD must precede the root
        more = stream.read(1 << 16)
        if not more:
            break
        head += more
    root_at = head.find(b"<annotations")
    _reject_doctype(head if root_at < 0 else head[:root_at], ANNOTATIONS_FILE)
    parser = ET.XMLPullParser(events=("start", "end"))
    chunk = head
    size, pending = 1 << 20, 0
    try:
        while chunk:
            parser.feed(chunk)
            pending += len(chunk)
            if pending > limits.max_annotation_bytes:
                raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
                    f"XML tokens of at most {limits.max_annotation_bytes} bytes "
                    "(limits.max_annotation_bytes)", f"{pending} bytes without a complete tag"))
            for event, el in parser.read_events():
                pending = 0
                if event == "start":
                    depth += 1
                    open_.append(el)
                    if depth > limits.max_depth:
                        raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
                            f"XML nested at most {limits.max_depth} deep (limits.max_depth)",
                            f"<{el.tag}> at depth {depth}"))
                    if depth == 1:
                        root = el
                        if el.tag != "annotations":
                            raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
                                "<annotations> at the root (CVAT for images 1.1)", el.tag))
                    elif depth == 2:
                        image_nodes = 0
                        if el.tag == "track":
                            raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
                                "CVAT for images 1.1 (<image> elements)",
                                "<track> elements (CVAT for video 1.1); export the task as "
                                "'CVAT for images 1.1'"))
                    else:
                        image_nodes += 1
                    continue
                depth -= 1
                open_.pop()
                if depth >= 2 and image_nodes > limits.max_nodes:
                    del open_[-1][-1]  # over the cap: drop elements as they end (bounded)
                if depth != 1:
                    continue
                assert root is not None
                if el.tag == "meta":
                    if image_nodes > limits.max_nodes:
                        raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
                            f"a <meta> of at most {limits.max_nodes} elements "
                            "(limits.max_nodes)", f"{image_nodes} elements"))
                    yield classes_from_meta(el)
                    classes_sent = True
                elif el.tag == "image":
                    if not classes_sent:
                        raise InputError(f"{ANNOTATIONS_FILE}: " + expected(
                            "<meta> with the labels before the first <image>", "<image>"))
                    if image_nodes > limits.max_nodes:
                        stub = ET.Element("image", el.attrib)
                        ET.SubElement(stub, TOO_BIG_TAG, count=str(image_nodes))
                        yield dict(el.attrib), ET.tostring(stub)
                    else:
                        yield dict(el.attrib), ET.tostring(el)
                root.remove(el)
            size = min(size * 2, limits.max_annotation_bytes) if pending else 1 << 20
            chunk = stream.read(size)
        parser.close()
    except ET.ParseError as e:
        raise InputError(f"{ANNOTATIONS_FILE}: " + expected("well-formed XML", str(e))) from None
    if not classes_sent:
        raise InputError(f"{ANNOTATIONS_FILE}: " + expected("a <meta> element with labels",
                                                            "none"))


def parse_task_classes(data: bytes) -> ClassTable:
    """The ClassTable of a whole annotations.xml (small inputs, tests)."""
    import io

    for first in iter_task(io.BytesIO(data)):
        assert isinstance(first, ClassTable)
        return first
    raise InputError(f"{ANNOTATIONS_FILE}: " + expected("a <meta> element with labels", "none"))


def _number(el: ET.Element, key: str, limits: Limits, where: str, default: float | None = None
            ) -> float:
    raw = el.get(key)
    if raw is None:
        if default is not None:
            return default
        raise ItemError(expected(f"attribute '{key}'", None), where=where)
    try:
        v = float(raw)
    except ValueError:
        raise ItemError(expected(f"a number in '{key}'", raw), where=where) from None
    return check_coordinate(v, limits, f"{where} {key}")


def _int_attr(el: ET.Element, key: str, where: str, default: int = 0) -> int:
    raw = el.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ItemError(expected(f"an integer in '{key}'", raw), where=where) from None


def _plain_points(raw: str, n: int) -> list[float] | None:
    """'x1,y1;...;xn,yn' (n points, exactly one ',' in each) as [x1, y1, ..., xn, yn] in
    C-level passes; None when the separators are not exactly that or a value is not a number.
    n commas, none of the n points without one: each point has exactly one."""
    if raw.count(",") != n:
        return None
    pieces = raw.split(";")
    if not all(map(operator.contains, pieces, repeat(",", n))):
        return None
    try:
        return list(map(float, ",".join(pieces).split(",")))
    except ValueError:
        return None


def _points(el: ET.Element, budget: Budget, where: str, minimum: int) -> np.ndarray:
    limits = budget.limits
    raw = el.get("points")
    if raw is None:
        raise ItemError(expected("attribute 'points'", None), where=where)
    n = raw.count(";") + 1
    budget.points(n, f"<{el.tag}>", where)  # counted before splitting
    flat = _plain_points(raw, n)
    if flat is None:  # blank points, or not 'x,y' pairs: the careful parse decides
        try:
            pts = [tuple(float(v) for v in p.split(",")) for p in raw.split(";") if p.strip()]
        except ValueError:
            raise ItemError(expected("points like 'x1,y1;x2,y2'", raw[:60]),
                            where=where) from None
        if any(len(p) != 2 for p in pts):
            raise ItemError(expected("points like 'x1,y1;x2,y2'", raw[:60]), where=where)
        flat = [v for p in pts for v in p]
    if len(flat) < 2 * minimum:
        raise ItemError(expected(f"at least {minimum} points", len(flat) // 2), where=where)
    arr = np.array(flat, dtype=np.float64).reshape(-1, 2)
    if not np.abs(arr).max() <= limits.max_coordinate:  # NaN compares False too
        for v in arr.ravel():  # name the offending value
            check_coordinate(float(v), limits, where)
    return arr


_NUMBER_BYTES = np.zeros(256, bool)
_NUMBER_BYTES[list(b"0123456789.+-eE,;")] = True


def _plain_numbers(text: str, n: int) -> np.ndarray | None:
    """'x1,y1;...;xn,yn' as 2n float64 in one numpy pass, when it is only ASCII digits, signs,
    '.', 'e' and separators alternating ',' ';' ',' around non-empty values; None otherwise.
    On those characters numpy's text parse is Python's `float` (correctly rounded), and every
    value must be read whole: a count that differs sends the text to `_plain_points`."""
    if n < 1 or not text.isascii():
        return None
    chars = np.frombuffer(text.encode("ascii"), np.uint8)
    if not _NUMBER_BYTES[chars].all():
        return None
    seps = np.flatnonzero((chars == ord(",")) | (chars == ord(";")))
    if seps.size != 2 * n - 1 or seps[0] == 0 or seps[-1] == chars.size - 1 or \
            (np.diff(seps) < 2).any() or (chars[seps[0::2]] != ord(",")).any() or \
            (chars[seps[1::2]] != ord(";")).any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns where it stops short of the end
        try:
            values = np.fromstring(text.replace(";", ","), sep=",")
        except (ValueError, DeprecationWarning):
            return None
    return values if values.size == 2 * n else None


def _plain_polygons(shapes: list[ET.Element], limits: Limits) -> list[np.ndarray] | None:
    """The points of every `<polygon>` among `shapes`, in order, parsed in one pass and
    rounded as `_shape` rounds them (flat x, y, ... float64); None unless every one is plain
    'x,y;...' text of numbers within range and the item's point limits hold - then `_points`
    parses each, and its checks decide."""
    raws = [sh.get("points") for sh in shapes if sh.tag == "polygon"]
    if not raws or None in raws:
        return None
    sizes = [raw.count(";") + 1 for raw in raws]  # type: ignore[union-attr]
    if sum(sizes) > limits.max_points or max(sizes) > limits.max_shape_points:
        return None
    joined = ";".join(raws)  # type: ignore[arg-type]
    values = _plain_numbers(joined, sum(sizes))
    if values is None:
        flat = _plain_points(joined, sum(sizes))
        if flat is None:
            return None
        values = np.array(flat, dtype=np.float64)
    if not np.abs(values).max() <= limits.max_coordinate:  # NaN compares False too
        return None
    values = fork_round(values)
    cuts = np.cumsum([0, *sizes]) * 2
    return [values[a:b] for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)]


def fork_round(values: list[float] | np.ndarray) -> np.ndarray:
    """CVAT's datumaro keeps every shape's points as float64 rounded to 2 decimals
    (`np.around(points, 2)`; upstream datumaro 1.13 goes through float32 instead, which moves
    vertices on pycocotools' snap boundaries such as 9.9)."""
    return np.asarray(values, dtype=np.float64).round(2)  # np.around, without its dispatch


def box_polygon(xtl: float, ytl: float, xbr: float, ybr: float, rotation: float) -> np.ndarray:
    """A CVAT box as the float polygon CVAT's mask export rasterizes (A.5), in the same float
    operations: `Bbox(x, y, x1 - x, y1 - y)` stores rounded `[x, y, x + w, y + h]`; unrotated it
    paints `as_polygon()` (x + w recomputed from the stored points, not rounded); rotated,
    `RotatedBoxesToPolygons` turns the stored corners about their centre by `radians(rotation)`
    into a Polygon, whose points are rounded again."""
    x0, y0, x1, y1 = fork_round([xtl, ytl, xtl + (xbr - xtl), ytl + (ybr - ytl)]).tolist()
    if not rotation:
        w, h = x1 - x0, y1 - y0  # Bbox.get_bbox()
        return np.array([x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h], dtype=np.float64)
    angle = math.radians(rotation)
    cx, cy = x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2
    c, s = math.cos(angle), math.sin(angle)
    out = []
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
        out += [cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy)]
    return fork_round(out)


def _plain_runs(raw: str, area: int) -> np.ndarray | None:
    """'n1,n2,...' of ASCII digits adding up to `area`, parsed by numpy in one C pass; None
    otherwise (an empty piece - leading, doubled or trailing ',' - included: `_checked_runs`
    fails it). Every value is checked <= area before the sum, and their count is the number
    of pieces (the text was read to its end): nothing wraps."""
    if not (raw.isascii() and raw.replace(",", "").isdigit()) or ",," in raw or \
            raw.startswith(",") or raw.endswith(","):
        return None
    counts = np.fromstring(raw, dtype=np.int64, sep=",")
    if counts.size != raw.count(",") + 1 or counts.size * max(area, 1) >= 1 << 62 or \
            int(counts.max()) > area or int(counts.sum()) != area:
        return None
    return counts


def _checked_runs(raw: str, area: int, where: str) -> np.ndarray:
    """`rle` runs as Python ints, checked (non-negative, adding up to `area`) before numpy
    sees them: a total that would wrap int64 never reaches `np.repeat`. Each piece between
    commas is read by `int` as CVAT's importer reads it (`map(int, rle.split(','))`): blanks
    around a number pass ("1, 2" - what CVAT writes), blanks inside one ("0 1") fail the item
    (removing them read '01'), and so does an empty piece ("1,,2", ",1", "1,2,", ""), which
    fails CVAT's import of the file."""
    pieces = raw.split(",")
    try:
        runs = list(map(int, pieces))  # one C-level pass
    except ValueError:
        empty = next((n for n, v in enumerate(pieces, 1) if not v.strip()), 0)
        what = "'rle' as comma-separated integers"
        if empty:
            what += f" (piece {empty} of {len(pieces)} is empty; CVAT's importer fails on it)"
        raise ItemError(expected(what, raw[:60]), where=where) from None
    if runs and min(runs) < 0:
        raise ItemError(expected("non-negative run lengths in 'rle'", min(runs)), where=where)
    total = sum(runs)  # exact: Python ints never wrap
    if total != area:
        raise ItemError(expected(f"runs adding up to width x height = {area}", total),
                        where=where)
    return np.array(runs, dtype=np.int64)  # each run <= width x height: fits


def rle_mask(el: ET.Element, budget: Budget, where: str) -> Bitmap | None:
    """A CVAT `<mask>`: runs over its width x height box, row-major, starting with a 0-run.
    Plain digits parse in one numpy pass (`_plain_runs`); anything else, and every error,
    goes through `_checked_runs`. Either way no total that would wrap int64 reaches
    `np.repeat`."""
    limits = budget.limits
    left = _int_attr(el, "left", where)
    top = _int_attr(el, "top", where)
    width = _int_attr(el, "width", where, -1)
    height = _int_attr(el, "height", where, -1)
    check_coordinate(left, limits, f"{where} left")
    check_coordinate(top, limits, f"{where} top")
    check_image_size(width, height, limits, what="mask")
    raw = el.get("rle", "")
    budget.rle_chars(len(raw), where)
    counts = _plain_runs(raw, width * height)
    if counts is None:  # anything but plain digits and commas, or not adding up: decided here
        counts = _checked_runs(raw, width * height, where)
    budget.pixels(width * height, "a <mask>", where)
    if not counts[1::2].any():  # runs alternate, zeros first: no run of ones
        return None
    values = np.zeros(counts.size, bool)
    values[1::2] = True
    mask = np.repeat(values, counts).reshape(height, width)
    return Bitmap(left, top, mask)


def _shape(el: ET.Element, budget: Budget, where: str, parsed: np.ndarray | None = None
           ) -> tuple[Geometry | None, bool]:
    """(geometry, is a rotated box) of one shape element; geometry None: skipped kind.
    `parsed`: a polygon's points from `_plain_polygons`."""
    limits = budget.limits
    tag = el.tag
    if tag == "polygon":
        if parsed is None:
            return CocoPolygon((fork_round(_points(el, budget, where, 3).ravel()),)), False
        budget.points(parsed.size // 2, f"<{tag}>", where)
        if parsed.size < 6:
            raise ItemError(expected("at least 3 points", parsed.size // 2), where=where)
        return CocoPolygon((parsed,)), False
    if tag == "box":
        xtl, ytl = _number(el, "xtl", limits, where), _number(el, "ytl", limits, where)
        xbr, ybr = _number(el, "xbr", limits, where), _number(el, "ybr", limits, where)
        rotation = _number(el, "rotation", limits, where, 0.0)
        return CocoPolygon((box_polygon(xtl, ytl, xbr, ybr, rotation),)), bool(rotation)
    if tag == "ellipse":
        cx, cy = _number(el, "cx", limits, where), _number(el, "cy", limits, where)
        rx, ry = _number(el, "rx", limits, where), _number(el, "ry", limits, where)
        rotation = _number(el, "rotation", limits, where, 0.0)
        right, top = cx + rx, cy - ry  # CVAT stores [cx, cy, rightX, topY]
        if not (right - cx >= 0 and cy - top >= 0):  # OpenCV asserts on negative axes
            raise ItemError(expected("ellipse radii rx, ry >= 0", (rx, ry)), where=where)
        return Ellipse(cx, cy, right - cx, cy - top, rotation), False
    if tag == "mask":
        return rle_mask(el, budget, where), False
    if tag == "polyline":
        pts = np.floor(_points(el, budget, where, 2)).astype(np.int64)
        return Polyline(pts), False
    return None, False


def parse_image_element(data: bytes, classes: ClassTable, *, dataset: str, name: str,
                        image_key: str | None, ann_key: str | None, limits: Limits,
                        image_size: SizeReader | None = None) -> Item:
    """One `<image>` element of annotations.xml -> Item (labels in CVAT's paint order).

    Size as datumaro reads it: an element whose 'width' or 'height' is missing or empty takes
    the size of its image, read by `image_size` from the header; any other text must be an
    integer (`int()`'s syntax, as datumaro's; a positive one here)."""
    check_annotation_bytes(data, limits, "an <image> element", b"<")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ItemError(expected("an <image> element without DTD declarations", "a DOCTYPE"))
    try:
        el = ET.fromstring(data)
    except ET.ParseError as e:
        raise ItemError(expected("a well-formed <image> element", str(e))) from None
    if el.tag != "image":
        raise ItemError(expected("an <image> element", el.tag))
    where_img = f"<image name={shown(el.get('name'))}>"
    w_text, h_text = el.get("width"), el.get("height")
    absent = not (w_text and h_text)
    try:
        width, height = (0, 0) if absent else (int(w_text or ""), int(h_text or ""))
    except ValueError:
        raise ItemError(expected("integer 'width' and 'height'", (w_text, h_text)),
                        where=where_img) from None
    width, height = item_size(width, height, image_size, limits, absent=absent)
    shapes = list(el)
    if len(shapes) > limits.max_objects:
        raise ItemError(expected(f"at most {limits.max_objects} shapes", len(shapes)))
    index = classes.lookup()
    budget = Budget(limits)
    found: list[tuple[int, bool, int, Label]] = []
    ignored: Counter[str] = Counter()
    polygons = _plain_polygons(shapes, limits)
    parsed = iter(polygons) if polygons is not None else repeat(None)
    for k, sh in enumerate(shapes):
        label_name = sh.get("label")
        where = f"<{sh.tag}> #{k} ({label_name})"
        if len(sh):  # children: <attribute>s (counted), anything else is not painted
            ignored["attribute"] += sum(c.tag == "attribute" for c in sh)
        if sh.tag in ("tag", "cuboid", "skeleton"):
            ignored[sh.tag] += 1
            continue
        if sh.tag == TOO_BIG_TAG:
            raise ItemError(expected(f"an <image> of at most {limits.max_nodes} elements "
                                     "(limits.max_nodes)", f"{sh.get('count')} elements"))
        ignored["occluded"] += sh.get("occluded") == "1"
        if sh.tag not in ("polygon", "box", "ellipse", "mask", "polyline", "points"):
            raise ItemError(expected("a CVAT shape (box, polygon, polyline, points, ellipse, "
                                     "mask, cuboid, skeleton, tag)", sh.tag), where=where)
        if label_name not in index:
            raise ItemError(expected("a label declared in <meta><labels>", label_name),
                            where=where)
        ci = index[label_name]
        z = _int_attr(sh, "z_order", where)
        group = _int_attr(sh, "group_id", where)
        if sh.tag == "points":
            pts = np.floor(_points(sh, budget, where, 1)).astype(np.int64)
            if len(found) + len(pts) > limits.max_objects:
                raise ItemError(expected(f"at most {limits.max_objects} objects", "more points"),
                                where=where)
            for x, y in pts.tolist():
                found.append((z, False, k, Label(ci, Point(x, y), z, group)))
            continue
        geometry, rotated = _shape(sh, budget, where,
                                   next(parsed) if sh.tag == "polygon" else None)
        if sh.tag == "mask" and geometry is None:
            geometry = CocoPolygon(())  # an empty mask still takes its place (instance number)
        if geometry is not None:
            found.append((z, rotated, k, Label(ci, geometry, z, group)))
    found.sort(key=lambda t: (t[0], t[1], t[2]))
    return Item(dataset, name, width, height, tuple(t[3] for t in found), image_key, ann_key,
                tuple((kind, n) for kind, n in sorted(ignored.items()) if n))


# ---------------------------------------------------------------------------- labelmap.txt
@dataclass(frozen=True)
class LabelMapEntry:
    name: str
    color: RGB | None
    parts: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()


def text_lines(text: str) -> list[str]:
    """The lines of a text file as datumaro reads labelmap.txt and ImageSets lists (`for line
    in open(path, encoding="utf-8")`: universal newlines): split at '\n', '\r\n' and '\r'
    only. `str.splitlines` also splits at \x0b, \x0c, \x1c-\x1e, \x85, U+2028/9, so an id
    'a\x0cb' became two ids; it stays one (and fails alone by the name rules)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_labelmap(data: bytes | None, where: str = LABELMAP_FILE) -> list[LabelMapEntry]:
    """labelmap.txt with datumaro's importer rules (A.4): whole-line '#' comments and blank
    lines skipped, exactly 4 ':'-separated fields, names not stripped, duplicate names refused,
    colour 'r,g,b' (int() of each part, so spaces are tolerated) or empty. None: datumaro's
    default VOC labelmap."""
    if data is None:
        entries = [LabelMapEntry(n, voc_color(i)) for i, n in enumerate(VOC_LABELS)]
        return [*entries, LabelMapEntry("ignored", VOID_COLOR)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{where}: " + expected("UTF-8 text", "undecodable bytes")) from None
    out: list[LabelMapEntry] = []
    seen: set[str] = set()
    for n, raw in enumerate(text_lines(text), start=1):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        fields = line.split(":")
        if len(fields) != 4:
            raise InputError(f"{where} line {n}: " + expected(
                "4 ':'-separated fields (name:r,g,b:parts:actions)", line))
        name = fields[0]
        if name in seen:
            raise InputError(f"{where} line {n}: " + expected("a label defined once", name))
        seen.add(name)
        color = None
        if fields[1]:
            parts = fields[1].split(",")
            try:
                values = tuple(int(p) for p in parts)
            except ValueError:
                values = ()
            if len(values) != 3 or not all(0 <= v <= 255 for v in values):
                raise InputError(f"{where} line {n}: " + expected(
                    f"an 'r,g,b' colour of label {name!r}", fields[1]))
            color = (values[0], values[1], values[2])
        out.append(LabelMapEntry(
            name, color,
            tuple(s.strip() for s in fields[2].split(",")) if fields[2] else (),
            tuple(s.strip() for s in fields[3].split(",")) if fields[3] else ()))
    if not out:
        raise InputError(f"{where}: " + expected("at least one label line", "none"))
    return out


@dataclass(frozen=True)
class LabelMapClasses(ClassTable):
    """Classes of a Segmentation Mask archive (every labelmap line but the background) and
    what decoding its PNGs needs: the background's line, the number of lines, and the inverse
    colormap (colour -> line; the last line wins on a duplicate colour, as in datumaro)."""

    background_line: int | None = None
    lines: int = 0
    colormap: tuple[tuple[RGB, int], ...] = ()

    def line_to_class(self) -> np.ndarray:
        """Array: labelmap line -> class index + 1 (0 for the background line)."""
        lut = np.zeros(max(self.lines, 1), np.int64)
        k = 0
        for line in range(self.lines):
            if line != self.background_line:
                k += 1
                lut[line] = k
        return lut


def labelmap_classes(entries: list[LabelMapEntry]) -> LabelMapClasses:
    """Entries -> classes. Colours: as declared; if no line declares one, the VOC colour of the
    line index (datumaro). Background: the first line coloured (0, 0, 0), else the line named
    'background' (datumaro's exporter rule), else none."""
    has_colors = any(e.color is not None for e in entries)
    colors = [e.color if has_colors else voc_color(i) for i, e in enumerate(entries)]
    bg = next((i for i, c in enumerate(colors) if c == (0, 0, 0)), None)
    if bg is None:
        bg = next((i for i, e in enumerate(entries) if e.name == BACKGROUND), None)
    classes = tuple(ClassInfo(e.name, c if c is not None else voc_color(i), "bitmap")
                    for i, (e, c) in enumerate(zip(entries, colors, strict=True)) if i != bg)
    inverse: dict[RGB, int] = {}
    for i, c in enumerate(colors):
        if c is not None:
            inverse[c] = i
    bg_color = (colors[bg] or (0, 0, 0)) if bg is not None else None
    return LabelMapClasses(classes, background=bg_color,
                           background_line=bg, lines=len(entries),
                           colormap=tuple(inverse.items()))


def parse_labelmap_classes(data: bytes | None) -> LabelMapClasses:
    return labelmap_classes(parse_labelmap(data))


# ---------------------------------------------------------------------------- mask PNGs
_VOC_INSTANCE = {voc_color(i): i for i in range(256)}
BAND_PIXELS = 1 << 22  # pixels handled at a time: temporaries stay a few tens of MB


def _bands(height: int, width: int) -> Iterator[tuple[int, int]]:
    rows = max(1, BAND_PIXELS // max(width, 1))
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def _decode_png(data: bytes, budget: Budget, where: str) -> np.ndarray:
    try:
        w, h = png_header_size(data)
    except ItemError:
        raise ItemError(expected("a PNG", f"{len(data)} bytes that are not one"),
                        where=where) from None
    check_image_size(w, h, budget.limits, what=where)  # like an image: not a shape's cost
    if data[24] == 16:  # IHDR's bit depth, before decoding: 16-bit RGBA is 8 bytes a pixel
        raise ItemError(expected("an 8-bit mask PNG", "16-bit samples (datumaro would wrap "
                                 "them to 8 bits)"), where=where)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ItemError(expected("a decodable PNG", "corrupt data"), where=where)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] not in (3, 4):
        raise ItemError(expected("a 1-, 3- or 4-channel mask PNG", arr.shape[2]), where=where)
    return arr


def _index_dtype(top: int) -> np.dtype:
    return np.dtype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32)


def _unpaint(arr: np.ndarray, colormap: dict[RGB, int], where: str) -> np.ndarray:
    """BGR(A) pixels -> indices through `colormap` (RGB -> index), band by band so that the
    temporaries stay small; an unknown colour is an ItemError naming it."""
    height, width = arr.shape[:2]
    known = {(r << 16) | (g << 8) | b: v for (r, g, b), v in colormap.items()}
    out = np.empty((height, width), _index_dtype(max(known.values(), default=0)))
    for r0, r1 in _bands(height, width):
        band = arr[r0:r1, :, :3]
        keys = (band[:, :, 2].astype(np.uint32) << 16) | \
            (band[:, :, 1].astype(np.uint32) << 8) | band[:, :, 0]
        uniq, inverse = np.unique(keys.ravel(), return_inverse=True)
        lut = np.empty(uniq.size, out.dtype)
        for k, key in enumerate(uniq.tolist()):
            if key not in known:
                rgb = (key >> 16, (key >> 8) & 255, key & 255)
                raise ItemError(expected("colours declared in the labelmap",
                                         f"undeclared colour {rgb}"), where=where)
            lut[k] = known[key]
        out[r0:r1] = lut[inverse].reshape(r1 - r0, width)
    return out


def class_lines(data: bytes, classes: LabelMapClasses, budget: Budget, where: str
                ) -> np.ndarray:
    """A SegmentationClass PNG -> labelmap line per pixel (uint8, or wider for long maps)."""
    arr = _decode_png(data, budget, where)
    if arr.ndim == 2:
        top = int(arr.max()) if arr.size else 0
        if top >= classes.lines:
            raise ItemError(expected(f"indices below {classes.lines} (the labelmap's lines)",
                                     f"index {top}"), where=where)
        return arr
    return _unpaint(arr, dict(classes.colormap), where)


def object_ids(data: bytes, budget: Budget, where: str) -> np.ndarray:
    """A SegmentationObject PNG -> instance id per pixel, uint8 (VOC instance colours, or raw
    ids)."""
    arr = _decode_png(data, budget, where)
    if arr.ndim == 2:
        return arr
    return _unpaint(arr, _VOC_INSTANCE, where)


class _Extents:
    """Where each value of an index map occurs - rows (H, n) and columns (W, n) - found in one
    banded pass, so each object's bitmap is cut from its own bounding box (no full frame per
    object)."""

    def __init__(self, values: np.ndarray, budget: Budget, where: str) -> None:
        height, width = values.shape
        n = int(values.max()) + 1 if values.size else 1
        budget.pixels((height + width) * n, "the extents of the mask's values", where)
        self.values, self.budget, self.where = values, budget, where
        self.rows = np.zeros((height, n), bool)
        self.cols = np.zeros((width, n), bool)
        across = np.arange(width)[None, :]
        for r0, r1 in _bands(height, width):
            band = values[r0:r1]
            self.rows[np.arange(r0, r1)[:, None], band] = True
            self.cols[across, band] = True

    def present(self) -> list[int]:
        return np.flatnonzero(self.cols.any(axis=0)).tolist()

    def bitmap(self, v: int) -> Bitmap:
        rows, cols = np.flatnonzero(self.rows[:, v]), np.flatnonzero(self.cols[:, v])
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        self.budget.pixels((r1 - r0) * (c1 - c0), f"the bitmap of value {v}", self.where)
        return Bitmap(c0, r0, np.ascontiguousarray(self.values[r0:r1, c0:c1] == v))


def _owners(lines: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per instance id (< 256): the largest labelmap line among its pixels, -1 if absent."""
    owner = np.full(256, -1, np.int64)
    for r0, r1 in _bands(*ids.shape):
        combo = np.unique((lines[r0:r1].astype(np.int64) << 8) | ids[r0:r1])
        np.maximum.at(owner, combo & 255, combo >> 8)
    return owner


def parse_mask_item(data: bytes, classes: ClassTable, *, dataset: str, name: str,
                    image_key: str | None, ann_key: str | None, limits: Limits) -> Item:
    """A Segmentation Mask item (class PNG, or pack_parts([class PNG, object PNG])) -> Item.
    Memory: a decoded PNG (1-4 bytes a pixel, within `max_image_pixels` as any image), the
    index maps (1-2 bytes a pixel), banded temporaries, and the objects' bitmaps (charged to
    the item's budget like any shape)."""
    if not isinstance(classes, LabelMapClasses):
        raise ItemError(expected("the classes of a labelmap.txt", type(classes).__name__))
    budget = Budget(limits)
    stem = item_id(name)
    class_where = f"{CLASS_DIR}/{stem}{MASK_EXT}"
    object_where = f"{OBJECT_DIR}/{stem}{MASK_EXT}"
    parts = unpack_parts(data) if data.startswith(PACK_MAGIC) else [data]
    lines = class_lines(parts[0], classes, budget, class_where)
    height, width = lines.shape
    to_class = classes.line_to_class()
    labels: list[Label] = []
    if len(parts) > 1:
        ids = object_ids(parts[1], budget, object_where)
        if ids.shape != lines.shape:
            raise ItemError(expected(f"{object_where} of the class mask's size {width}x{height}",
                                     f"{ids.shape[1]}x{ids.shape[0]}"))
        owner = _owners(lines, ids)  # the last (largest) line wins, as in datumaro
        found = np.flatnonzero(owner[1:] >= 0)
        extents = _Extents(ids, budget, object_where) if found.size else None
        for inst in range(1, int(found[-1]) + 2 if found.size else 1):
            if owner[inst] < 0:
                labels.append(Label(0, CocoPolygon(())))  # keeps the numbering of the ids
                continue
            ci = int(to_class[owner[inst]]) - 1
            if ci < 0:
                raise ItemError(expected(f"instance {inst} of {object_where} on a labelled class",
                                         "only background pixels in " + class_where))
            assert extents is not None
            labels.append(Label(ci, extents.bitmap(inst)))
    else:
        extents = _Extents(lines, budget, class_where)
        for line in extents.present():
            ci = int(to_class[line]) - 1
            if ci >= 0:
                labels.append(Label(ci, extents.bitmap(line)))
    return Item(dataset, name, width, height, tuple(labels), image_key, ann_key)


# ---------------------------------------------------------------------------- reader interface
def parse_classes(data: bytes) -> ClassTable:
    """annotations.xml -> its labels; anything else is taken as a labelmap.txt."""
    if data.lstrip().startswith(b"<"):
        return parse_task_classes(data)
    return parse_labelmap_classes(data)


def parse_item(data: bytes, classes: ClassTable, *, dataset: str, name: str,
               image_key: str | None = None, ann_key: str | None = None,
               limits: Limits = DEFAULT_LIMITS, image_size: SizeReader | None = None) -> Item:
    """One item of either CVAT format, told apart by its bytes (see module docstring);
    `image_size` reads the image's size when an `<image>` lacks it (a mask's PNG has one)."""
    kwargs: dict[str, Any] = dict(dataset=dataset, name=name, image_key=image_key,
                                  ann_key=ann_key, limits=limits)
    if data.lstrip()[:1] == b"<":
        return parse_image_element(data, classes, image_size=image_size, **kwargs)
    return parse_mask_item(data, classes, **kwargs)
