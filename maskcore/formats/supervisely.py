"""Supervisely project format: constants shared by reader and writer, and the pure parsers.

`parse_meta(bytes) -> ClassTable` and `parse_annotation(bytes, classes, ...) -> Item` turn a
project's `meta.json` and one `ann/<image>.json` into the model, with the Supervisely SDK's
load rules (reference/supervisely.md B.3-B.6):

- coordinates are `[x, y]`; floats are floored (SDK >= 6.73.160);
- geometry is chosen by the class's `shape` in meta, or by the object's `geometryType` for
  classes of shape `any`; a mismatch is an error, as in the SDK;
- bitmaps are `base64(zlib(PNG))` (or plain base64 PNG); RGBA -> alpha > 0, gray -> != 0;
  the mask is cut to its tight bounding box;
- labels whose bounding box is not inside the image are cropped to it (`crop.py`), exactly as
  `Annotation.__init__` does; oriented boxes are never cropped.

Unlike the SDK, a bad object fails its item with a message naming the object, never a whole
dataset, and tags are ignored rather than validated (they do not affect masks).
Listing a project folder is I/O and lives in `jobs/`; the layout rules it needs are here.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from .. import crop
from ..errors import InputError, ItemError, expected, shown
from ..limits import (
    DEFAULT_LIMITS,
    Budget,
    Limits,
    SizeReader,
    check_annotation_bytes,
    check_coordinate,
    check_image_size,
    inflate,
    load_json,
    png_header_size,
)
from ..model import (
    AlphaMask,
    Bitmap,
    ClassInfo,
    ClassTable,
    Cuboid2d,
    Geometry,
    Graph,
    Item,
    Label,
    MultiPolygon,
    Node,
    OrientedBBox,
    Point,
    Polygon,
    Polyline,
    Rectangle,
    valid_unicode,
)

# ---------------------------------------------------------------------------- layout constants
NAME = "supervisely"
ANN_FORMAT = "supervisely.json"  # an item's bytes: a Supervisely annotation JSON (ann/*.json)
RULE = "opencv"  # the pixel rule of items read from Supervisely projects (SPEC 2.5)
EXIF = True  # sly.image.read: cv2.imread IMREAD_COLOR applies EXIF orientation
META_FILE = "meta.json"
IMG_DIR = "img"
ANN_DIR = "ann"
NESTED_DIR = "datasets"
RESERVED_DIRS = frozenset({"img", "ann", "img_info", "meta", "seg", "blob", "datasets"})
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".mpo", ".bmp", ".png", ".webp", ".tiff", ".tif", ".nrrd", ".jfif"}
)
MACHINE_COLOR_FILE = "obj_class_to_machine_color.json"
SEMANTIC_COLOR_FILE = "obj_class_to_semantic_color.json"

SHAPES = frozenset(
    {
        "polygon",
        "rectangle",
        "bitmap",
        "alpha_mask",
        "line",
        "point",
        "graph",
        "cuboid_2d",
        "multipolygon",
        "oriented_bbox",
        "any",
    }
)
CUBOID_VERTICES = (
    "face1-topleft",
    "face1-topright",
    "face1-bottomright",
    "face1-bottomleft",
    "face2-topleft",
    "face2-topright",
    "face2-bottomright",
    "face2-bottomleft",
)


# ---------------------------------------------------------------------------- meta.json
def hex_to_rgb(value: object, where: str) -> tuple[int, int, int]:
    if not isinstance(value, str) or len(value) != 7 or not value.startswith("#"):
        raise InputError(f"{where}: " + expected("a colour like '#1A2B3C'", value))
    try:
        return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
    except ValueError:
        raise InputError(f"{where}: " + expected("a colour like '#1A2B3C'", value)) from None


def _template_colors(config: Any, where: str) -> dict[str, Any]:
    """Graph templates store hex colours; the SDK turns them into RGB lists on load."""
    if not isinstance(config, dict):
        return {}
    out: dict[str, Any] = dict(config)
    nodes = config.get("nodes")
    if isinstance(nodes, dict):
        out["nodes"] = {
            k: ({**v, "color": hex_to_rgb(v["color"], f"{where}.nodes.{k}")}
                if isinstance(v, dict) and "color" in v else v)
            for k, v in nodes.items()
        }
    edges = config.get("edges")
    if isinstance(edges, list):
        out["edges"] = [
            ({**e, "color": hex_to_rgb(e["color"], f"{where}.edges[{i}]")}
             if isinstance(e, dict) and "color" in e else e)
            for i, e in enumerate(edges)
        ]
    return out


def parse_meta(data: bytes) -> ClassTable:
    """meta.json -> ClassTable in file order (the order that gives machine indices); bounded
    like an annotation (size and node count, `limits.check_annotation_bytes`)."""
    try:
        check_annotation_bytes(data, DEFAULT_LIMITS, META_FILE, b"[{")
    except ItemError as e:
        raise InputError(str(e)) from None
    try:
        meta = json.loads(data)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise InputError(f"{META_FILE}: " + expected("valid JSON", str(e))) from None
    except RecursionError:
        raise InputError(f"{META_FILE}: " + expected("JSON of a sane nesting depth",
                                                     "deeper than the recursion limit")) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("classes", []), list):
        raise InputError(f"{META_FILE}: " + expected("an object with a 'classes' list", meta))
    classes = []
    seen: set[str] = set()
    for i, c in enumerate(meta.get("classes", [])):
        where = f"{META_FILE} classes[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("title"), str) or not c["title"]:
            raise InputError(f"{where}: " + expected("an object with a non-empty 'title'", c))
        title = c["title"]
        if not valid_unicode(title):
            raise InputError(f"{where}: " + expected("a class 'title' in valid Unicode",
                                                     ascii(title)))
        if title in seen:
            raise InputError(f"{where}: " + expected("unique class titles", title))
        seen.add(title)
        shape = c.get("shape", "any")
        if shape not in SHAPES:
            shape = "any"  # the SDK maps unknown shapes to AnyGeometry (never drawn)
        color = hex_to_rgb(c.get("color", "#000000"), f"{where}.color")
        config = c.get("geometry_config") or {}
        if shape == "graph":
            config = _template_colors(config, f"{where}.geometry_config")
        classes.append(ClassInfo(title, color, shape, config if isinstance(config, dict) else {}))
    return ClassTable(tuple(classes))


# ---------------------------------------------------------------------------- annotation
def _xy(v: object, limits: Limits, where: str) -> tuple[int, int]:
    if not isinstance(v, list | tuple) or len(v) != 2:
        raise ItemError(expected("a point [x, y]", v), where=where)
    x = check_coordinate(v[0], limits, where)
    y = check_coordinate(v[1], limits, where)
    return int(np.floor(x)), int(np.floor(y))


def _points(v: object, budget: Budget, where: str, minimum: int) -> np.ndarray:
    limits = budget.limits
    if not isinstance(v, list):
        raise ItemError(expected("a list of [x, y] points", v), where=where)
    if len(v) < minimum:
        raise ItemError(expected(f"at least {minimum} points", f"{len(v)} points"), where=where)
    budget.points(len(v), "a shape", where)  # before numpy converts them
    if len(v) <= _SMALL_RING and (small := _small_ring(v, limits.max_coordinate)) is not None:
        return small
    try:  # fast path: one numpy conversion for the whole ring, numbers only ('1' is text:
        arr = np.asarray(v)  # the SDK's math.floor refuses it, float64 would parse it)
    except (TypeError, ValueError, OverflowError):
        arr = None
    # one reduction: NaN and infinities fail the comparison too (then the slow path names them)
    if (arr is not None and arr.dtype.kind in "iuf" and arr.ndim == 2 and arr.shape[1] == 2
            and arr.size and np.abs(arr).max() <= limits.max_coordinate):
        return np.floor(arr).astype(np.int64)
    # slow path, point by point, for a message that names what is wrong
    return np.array([_xy(p, limits, where) for p in v], dtype=np.int64).reshape(-1, 2)


_SMALL_RING = 64  # rings of at most this many points may take `_small_ring`
_FLOAT_EXACT = float(2**53)  # |int| up to this: float64 holds it exactly, as numpy's path converts


def _small_ring(v: list[Any], max_coordinate: float) -> np.ndarray | None:
    """`_points`' result for a small ring of plain [x, y] pairs of ints and floats, each finite
    and within +-max_coordinate (and +-2**53): floored in Python, one numpy call instead of
    six (tiny items: two shapes each). The same int64 array as the numpy path gives (floor
    of float64 values, exact there); None for anything else (bools, text, NaN, nesting, ...),
    which takes that path, messages and all."""
    bound = min(max_coordinate, _FLOAT_EXACT)
    out = []
    for p in v:
        if type(p) is not list or len(p) != 2:
            return None
        x, y = p
        tx, ty = type(x), type(y)
        if not ((tx is int or tx is float) and (ty is int or ty is float)
                and -bound <= x <= bound and -bound <= y <= bound):  # NaN fails too
            return None
        out.append((x if tx is int else math.floor(x), y if ty is int else math.floor(y)))
    if not out:
        return None
    return np.array(out, dtype=np.int64)


def _pad_polygon(ring: np.ndarray) -> np.ndarray:
    """The SDK pads a polygon of 1-2 points by repeating its last point."""
    while len(ring) < 3:
        ring = np.vstack([ring, ring[-1:]])
    return ring


def _polygon_from(points: object, budget: Budget, where: str) -> Polygon:
    if not isinstance(points, dict):
        raise ItemError(expected("'points' with 'exterior' and 'interior'", points), where=where)
    ext = _pad_polygon(_points(points.get("exterior"), budget, where + " exterior", 1))
    interior = points.get("interior", [])
    if not isinstance(interior, list):
        raise ItemError(expected("'interior' as a list of rings", interior), where=where)
    holes = _plain_rings(interior, budget) if len(interior) >= MANY_RINGS else None
    if holes is None:
        holes = tuple(
            _pad_polygon(_points(r, budget, f"{where} interior[{k}]", 1))
            for k, r in enumerate(interior)
        )
    return Polygon(ext, holes)


MANY_RINGS = 64  # holes of one polygon from which one numpy pass over all of them pays


def _plain_rings(rings: list[Any], budget: Budget) -> tuple[np.ndarray, ...] | None:
    """Many rings (a polygon's holes) read as `_points`' fast path reads one, in one numpy
    pass: [x, y] numbers (no bools), within max_coordinate, each ring of 1 to max_shape_points
    points and all within max_points (charged as ring by ring), floored, a ring of 1-2 points
    padded by repeating its last point (`_pad_polygon`). 100 000 one-point holes cost ~3 s
    one by one. None when a ring needs `_points`, which names what is wrong."""
    limits = budget.limits
    if set(map(type, rings)) != {list}:
        return None
    sizes = np.fromiter(map(len, rings), np.int64, len(rings))
    if sizes.min() < 1 or sizes.max() > limits.max_shape_points:
        return None
    total = int(sizes.sum())
    if budget.point_total + total > limits.max_points:
        return None
    points = list(itertools.chain.from_iterable(rings))
    if set(map(type, points)) != {list} or set(map(len, points)) != {2} or \
            not set(map(type, itertools.chain.from_iterable(points))) <= {int, float}:
        return None
    try:
        arr = np.asarray(points, dtype=np.float64)
    except OverflowError:
        return None
    if not float(np.abs(arr).max()) <= limits.max_coordinate:  # NaN fails too
        return None
    budget.point_total += total
    flat = np.floor(arr).astype(np.int64)
    padded = np.maximum(sizes, 3)
    ring = np.repeat(np.arange(len(sizes)), padded)
    step = np.arange(int(padded.sum())) - np.repeat(np.cumsum(padded) - padded, padded)
    starts = np.cumsum(sizes) - sizes
    flat = flat[starts[ring] + np.minimum(step, sizes[ring] - 1)]
    return tuple(np.split(flat, np.cumsum(padded)[:-1]))


def _decode_png_b64(data: object, budget: Budget, where: str) -> tuple[bytes, bool]:
    """base64 text -> (PNG bytes, was_zlib). Checks the PNG header size, and charges the
    decoded raster's bytes to the item's budget, before decoding."""
    limits = budget.limits
    if not isinstance(data, str):
        raise ItemError(expected("base64 text in bitmap.data", data), where=where)
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise ItemError(expected("valid base64 in bitmap.data", data[:40]), where=where) from None
    was_zlib = True
    try:
        png = inflate(raw, limits, "bitmap data")
    except zlib.error:
        png, was_zlib = raw, False
    except ItemError as e:
        raise ItemError(str(e), where=where) from None
    try:
        w, h = png_header_size(png)
    except ItemError as e:
        raise ItemError(str(e), where=where) from None
    if w == 0 or h == 0 or w * h > limits.max_image_pixels or max(w, h) > limits.max_image_side:
        raise ItemError(
            expected(f"a bitmap of at most {limits.max_image_pixels} pixels",
                     f"{w}x{h} (PNG header)"),
            where=where,
        )
    budget.pixels(w * h * _png_pixel_bytes(png), "a bitmap", where)
    return png, was_zlib


def _png_pixel_bytes(png: bytes) -> int:
    """Bytes per pixel of a PNG once decoded (from IHDR bit depth and colour type)."""
    depth, color_type = png[24], png[25]
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 4)
    return channels * (2 if depth == 16 else 1)


def _imdecode(png: bytes, flags: int, where: str) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(png, np.uint8), flags)
    if arr is None:
        raise ItemError("Expected a decodable PNG in bitmap.data. Got corrupt data instead.",
                        where=where)
    return arr


def _bitmap_from(obj: dict[str, Any], budget: Budget, where: str, alpha: bool
                 ) -> Geometry | None:
    bm = obj.get("bitmap")
    if not isinstance(bm, dict):
        raise ItemError(expected("a 'bitmap' object with 'origin' and 'data'", bm), where=where)
    left, top = _xy(bm.get("origin"), budget.limits, where + " origin")
    png, was_zlib = _decode_png_b64(bm.get("data"), budget, where)
    if alpha:
        arr = _imdecode(png, cv2.IMREAD_GRAYSCALE, where)
        values = arr if arr.ndim == 2 else arr[:, :, 0]
        covered = values > 0
    else:
        arr = _imdecode(png, cv2.IMREAD_UNCHANGED, where)
        if was_zlib:
            if arr.ndim == 3 and arr.shape[2] >= 4:
                covered = arr[:, :, 3] > 0
            elif arr.ndim == 2:
                covered = arr != 0
            else:
                raise ItemError(
                    expected("a 1-channel or RGBA bitmap PNG", f"{arr.shape[2]} channels"),
                    where=where,
                )
        else:  # plain base64 PNG: any channel non-zero (SDK rule)
            covered = arr != 0 if arr.ndim == 2 else np.any(arr != 0, axis=2)
    if not covered.any():
        raise ItemError("Expected a bitmap with at least one pixel set. Got an empty one instead.",
                        where=where)
    rows = np.flatnonzero(covered.any(axis=1))
    cols = np.flatnonzero(covered.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if alpha:
        return AlphaMask(left + int(c0), top + int(r0), np.ascontiguousarray(values[r0:r1, c0:c1]))
    return Bitmap(left + int(c0), top + int(r0), np.ascontiguousarray(covered[r0:r1, c0:c1]))


def _nodes_from(v: object, budget: Budget, where: str) -> tuple[Node, ...]:
    limits = budget.limits
    if not isinstance(v, dict) or not v:
        raise ItemError(expected("a non-empty mapping of nodes {id: {'loc': [x, y]}}", v),
                        where=where)
    budget.points(len(v), "a graph", where)
    nodes = []
    for name, n in v.items():
        if not isinstance(n, dict):
            raise ItemError(expected("a node {'loc': [x, y]}", n),
                            where=f"{where} node {shown(name)}")
        x, y = _xy(n.get("loc"), limits, f"{where} node {shown(name)}")
        nodes.append(Node(str(name), x, y, bool(n.get("disabled", False))))
    return tuple(nodes)


def parse_geometry(shape: str, obj: dict[str, Any], budget: Budget, where: str
                   ) -> Geometry | None:
    """One object's geometry by shape name; None for shapes that draw nothing (`any`).
    Points and raster sizes are charged to the item's `budget` before they are built."""
    limits = budget.limits
    points = obj.get("points")
    if shape == "polygon":
        return _polygon_from(points, budget, where)
    if shape == "rectangle":
        if not isinstance(points, dict):
            raise ItemError(expected("'points' with 2 exterior corners", points), where=where)
        pts = _points(points.get("exterior"), budget, where, 2)
        if len(pts) != 2:
            raise ItemError(expected("exactly 2 corner points", f"{len(pts)} points"), where=where)
        (x0, y0), (x1, y1) = pts.tolist()
        return Rectangle(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if shape == "oriented_bbox":
        # SDK 6.74: "points": [[x1, y1], [x2, y2]] (a plain list); the exterior form is
        # accepted too
        corners = points.get("exterior") if isinstance(points, dict) else points
        pts = _points(corners, budget, where, 2)
        if len(pts) != 2:
            raise ItemError(expected("exactly 2 corner points", f"{len(pts)} points"), where=where)
        (x0, y0), (x1, y1) = pts.tolist()
        angle = check_coordinate(obj.get("angle", 0.0), limits, where + " angle")
        return OrientedBBox(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), angle)
    if shape in ("bitmap", "alpha_mask"):
        return _bitmap_from(obj, budget, where, alpha=shape == "alpha_mask")
    if shape == "line":
        if not isinstance(points, dict):
            raise ItemError(expected("'points' with an exterior polyline", points), where=where)
        return Polyline(_points(points.get("exterior"), budget, where, 2))
    if shape == "point":
        if not isinstance(points, dict):
            raise ItemError(expected("'points' with one exterior point", points), where=where)
        pts = _points(points.get("exterior"), budget, where, 1)
        if len(pts) != 1:
            raise ItemError(expected("exactly 1 point", f"{len(pts)} points"), where=where)
        return Point(int(pts[0, 0]), int(pts[0, 1]))
    if shape == "graph":
        return Graph(_nodes_from(obj.get("nodes"), budget, where))
    if shape == "cuboid_2d":
        nodes = _nodes_from(obj.get("vertices"), budget, where)
        names = {n.name for n in nodes}
        missing = [v for v in CUBOID_VERTICES if v not in names]
        if missing:
            raise ItemError(expected("the 8 cuboid vertices", f"missing {missing}"), where=where)
        return Cuboid2d(nodes)
    if shape == "multipolygon":
        parts = obj.get("parts")
        if not isinstance(parts, list) or not parts:
            raise ItemError(expected("'parts': a non-empty list of polygons", parts), where=where)
        return MultiPolygon(
            tuple(_polygon_from(p, budget, f"{where} part {k}") for k, p in enumerate(parts))
        )
    return None  # 'any' and unknown shapes draw nothing (SDK AnyGeometry)


def parse_annotation(
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
    """One `ann/<image>.json` -> Item (labels in annotation order, cropped as the SDK does).

    `size` {height, width} is required, as by the SDK (`Annotation.from_json` indexes both
    keys): an annotation without it, or with only one of them, fails; `image_size` is never
    called (the reader protocol passes it to every reader)."""
    del image_size
    ann = load_json(data, limits, "annotation JSON")
    if not isinstance(ann, dict):
        raise ItemError(expected("an annotation object", ann))
    size = ann.get("size")
    if not isinstance(size, dict):
        raise ItemError(expected("'size': {'height': H, 'width': W} (the Supervisely SDK "
                                 "requires it)", size))
    width, height = size.get("width"), size.get("height")
    check_image_size(width, height, limits)
    assert isinstance(width, int) and isinstance(height, int)
    objects = ann.get("objects", [])
    if not isinstance(objects, list):
        raise ItemError(expected("'objects' as a list", objects))
    if len(objects) > limits.max_objects:
        raise ItemError(expected(f"at most {limits.max_objects} objects", len(objects)))
    name_to_index = classes.positions
    budget = Budget(limits)
    labels: list[Label] = []
    for k, obj in enumerate(objects):
        where = f"objects[{k}]"
        if not isinstance(obj, dict):
            raise ItemError(expected("an object", obj), where=where)
        title = obj.get("classTitle")
        named = title if isinstance(title, str) and len(title) <= 80 else shown(title)
        where = f"objects[{k}] ({named})"
        if not isinstance(title, str) or title not in name_to_index:
            raise ItemError(expected(f"a class declared in {META_FILE}", title), where=where)
        ci = name_to_index[title]
        shape = classes[ci].shape
        if shape == "any":
            shape = obj.get("geometryType") or obj.get("shape") or "any"
            if not isinstance(shape, str) or shape not in SHAPES:
                shape = "any"
        else:
            declared = obj.get("geometryType") or obj.get("shape")
            if declared is not None and declared != shape:
                raise ItemError(expected(f"geometryType '{shape}' (the class shape)", declared),
                                where=where)
        geometry = parse_geometry(shape, obj, budget, where)
        if geometry is None:
            continue
        for g in crop.to_image(geometry, width, height):
            labels.append(Label(ci, g))
    return Item(dataset, name, width, height, tuple(labels), image_key, ann_key)


# ---------------------------------------------------------------------------- project layout
def ann_names_for(image_name: str) -> Sequence[str]:
    """Annotation file names the SDK accepts for an image: 'a.jpg.json', legacy 'a.json'."""
    stem = image_name.rsplit(".", 1)[0] if "." in image_name else image_name
    return (image_name + ".json", stem + ".json")


def dataset_dirs(relative_dirs: Sequence[str]) -> Iterator[str]:
    """Which of the given directories (relative, '/'-separated) are datasets of a project.

    A dataset is a top-level directory, or `<dataset>/datasets/<child>`, that is not reserved.
    """
    for d in sorted(relative_dirs):
        parts = d.split("/")
        if not parts or parts[-1] in RESERVED_DIRS:
            continue
        if len(parts) == 1 or (len(parts) >= 3 and len(parts) % 2 == 1 and all(
            parts[i] == NESTED_DIR for i in range(1, len(parts), 2)
        )):
            yield d


# Reader interface (see formats/__init__.py): every reader module offers these two names.
parse_classes = parse_meta
parse_item = parse_annotation
