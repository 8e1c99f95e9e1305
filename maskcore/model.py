"""The data model shared by readers, the kernel and the writers: plain frozen dataclasses.

Coordinates are image pixels: `x` is the column, `y` the row, (0, 0) the centre of the top-left
pixel. Integer geometries (the OpenCV rule) hold int64 numpy arrays; the pycocotools rule keeps
float coordinates (`CocoPolygon`). A geometry never knows its class: a `Label` pairs the two.

Arrays inside these dataclasses are treated as immutable by convention: nobody writes to them
after a reader made them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------- geometries
@dataclass(frozen=True, eq=False)
class Polygon:
    """A filled ring (`exterior`, (N, 2) int64 x,y) with holes (`interiors`)."""

    exterior: np.ndarray
    interiors: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True, eq=False)
class MultiPolygon:
    parts: tuple[Polygon, ...]


@dataclass(frozen=True)
class Rectangle:
    """Inclusive pixel corners: the rectangle covers columns left..right and rows top..bottom."""

    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class OrientedBBox:
    """A rectangle rotated by `angle` radians about its integer centre (Supervisely rule)."""

    left: int
    top: int
    right: int
    bottom: int
    angle: float


@dataclass(frozen=True, eq=False)
class Bitmap:
    """A boolean mask whose top-left pixel sits at (left, top)."""

    left: int
    top: int
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class AlphaMask:
    """0..255 opacity whose top-left pixel sits at (left, top); covered where alpha > 0."""

    left: int
    top: int
    alpha: np.ndarray


@dataclass(frozen=True, eq=False)
class Polyline:
    points: np.ndarray


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass(frozen=True)
class Node:
    name: str
    x: int
    y: int
    disabled: bool = False


@dataclass(frozen=True)
class Graph:
    """Keypoints: nodes, with edges and colours coming from the class template."""

    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Cuboid2d:
    """Eight named vertices (face1-topleft ... face2-bottomleft); drawn as five filled faces."""

    vertices: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class CocoPolygon:
    """Float polygons (one or more parts, x0,y0,x1,y1,...), rasterized by pycocotools' rule."""

    parts: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class Ellipse:
    """CVAT ellipse: centre, radii, rotation in degrees; rasterized by OpenCV as CVAT does."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float = 0.0


Geometry = (
    Polygon
    | MultiPolygon
    | Rectangle
    | OrientedBBox
    | Bitmap
    | AlphaMask
    | Polyline
    | Point
    | Graph
    | Cuboid2d
    | CocoPolygon
    | Ellipse
)


# --------------------------------------------------------------------------- classes, labels, items
@dataclass(frozen=True)
class ClassInfo:
    """One class of the input, in input order (its index + 1 is its machine value)."""

    name: str
    color: RGB
    shape: str = "any"
    geometry_config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


BACKGROUND = "background"  # the label name that means background (CVAT, datumaro)
BACKGROUND_CLASS = -1  # Label.class_index of a shape drawn with the background label


@dataclass(frozen=True)
class ClassTable:
    """The input's class list; position i (from 0) has class index i + 1, background is 0.

    A label named `background` in a CVAT or COCO input is not a class (CVAT and datumaro treat
    it as the background): readers leave it out of `classes`, record its colour in
    `background` ((0, 0, 0) when it declares none) and give its shapes `BACKGROUND_CLASS`, so
    they paint index 0 (they erase what is below them, as in CVAT's export). `background` is
    None when the input declares no such label.
    """

    classes: tuple[ClassInfo, ...]
    background: RGB | None = None

    def index_of(self, name: str) -> int:
        """Position of class `name`; BACKGROUND_CLASS for a declared background label."""
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i
        if name == BACKGROUND and self.background is not None:
            return BACKGROUND_CLASS
        raise KeyError(name)

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """{name: position} of the classes (a repeated name: its last position), made once per
        table - readers look names up per item (read-only)."""
        return {c.name: i for i, c in enumerate(self.classes)}

    def lookup(self) -> dict[str, int]:
        """{name: class index} of every label, the background label included."""
        out = {c.name: i for i, c in enumerate(self.classes)}
        if self.background is not None:
            out.setdefault(BACKGROUND, BACKGROUND_CLASS)
        return out

    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> ClassInfo:
        if i < 0:
            raise IndexError(f"Expected a class position >= 0. Got {i} instead.")
        return self.classes[i]


@dataclass(frozen=True)
class Label:
    """One object: its class (position in the ClassTable, or BACKGROUND_CLASS), geometry and
    drawing keys."""

    class_index: int
    geometry: Geometry
    z_order: int = 0
    group: int = 0


@dataclass(frozen=True)
class Item:
    """One image with its labels, in annotation order.

    `dataset` is the dataset path ("ds1" or "ds1/datasets/child"), `name` the image file name,
    `image_key` where to read the image bytes (relative to the input root), `ann_key` where the
    annotation came from. `not_painted` counts what the annotation holds but no output paints
    and the reader kept no label for (tags, skeletons, cuboids, attributes, occluded flags:
    CVAT's mask export ignores them); see `order.not_painted` for the whole count.
    """

    dataset: str
    name: str
    width: int
    height: int
    labels: tuple[Label, ...]
    image_key: str | None = None
    ann_key: str | None = None
    not_painted: tuple[tuple[str, int], ...] = ()  # (kind, count) the reader kept no label of

    @property
    def stem(self) -> str:
        return name_stem(self.name)


def valid_unicode(text: str) -> bool:
    """Whether `text` holds no lone surrogate (JSON's "\\ud800", which no UTF-8 text holds):
    a class name must be written into outputs and the manifest, so readers of JSON inputs
    refuse such a name before any work (InputError)."""
    return text.isascii() or text.encode("utf-8", "surrogatepass").decode(
        "utf-8", "replace") == text


def name_stem(name: str) -> str:
    """The image name without its last extension ('a.b.jpg' -> 'a.b'); a dot in a folder
    name is not an extension ('dir.v2/file' -> 'dir.v2/file')."""
    folder, slash, base = name.rpartition("/")
    head, dot, _ext = base.rpartition(".")
    return folder + slash + (head if dot and head else base)


def point_bounds(pts: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (min x, min y, max x, max y) of an (N, 2) array of integer points; a few
    points by Python's min/max, which beat four numpy reductions there."""
    if len(pts) <= 64:
        xs, ys = pts.T.tolist()
        return int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys))
    return int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max())
