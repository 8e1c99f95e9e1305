"""THE kernel: every label of an item rendered once, as a bbox-sized stamp.

    render(item, classes, *, rule="opencv", thickness=2, templated=False, max_pixels=None)
        -> list[Stamp | None]

A `Stamp` is the label's footprint in a small window of the image: `parts` is 0 where the label
does not paint and k >= 1 where its part k paints (one part for every geometry but a graph
drawn with its class template, whose edges and nodes carry their own colours); `alpha` holds the
opacity of an alpha mask. Stamps are clipped to the image; a label that paints nothing gives
None. Every output format composes its masks from these stamps (`compose.py`): nothing is drawn
twice, and no full-frame scratch array is made per label.

Pixel rules (SPEC 2.5):
- `opencv`: the Supervisely SDK's (integer pixel centres, boundaries included, floats floored at
  load); see `_opencv.py`. `thickness` is the stroke of lines, points and graph nodes.
  `templated=True` draws graphs as `Label.draw` does with the class template (edges and node
  colours); `False` as `geometry.draw` without config (enabled nodes only).
- `coco`: pycocotools' (polygons and boxes, area-unbiased, pixel centres at +0.5); see `_coco.py`.
  Bitmaps paint as they are under both rules; polylines, points, graphs and cuboids are not
  painted under the coco rule (CVAT's exporter ignores them). Float `CocoPolygon`s and CVAT
  `Ellipse`s always use their own rule, whatever the item's.

`sdk_area(geometry)` is the SDK's `label.area`, which orders the app's machine masks.
`templates_matter(item, classes, rule)`: whether `templated=True` can give other stamps than
`templated=False` (a graph of a class with a template); when not, callers render once.
Memory: a stamp holds at most its window (uint8, or uint16 for templates of > 255 parts).
`max_pixels` bounds the sum of the windows of an item (`limits.max_shape_pixels`): each window
is counted before it is allocated, and the label that would pass the bound fails the item
(ItemError naming it) - a thousand full-frame polygons on a 100 MP image never get drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import _coco, _opencv
from .errors import ItemError
from .model import (
    RGB,
    AlphaMask,
    Bitmap,
    ClassTable,
    CocoPolygon,
    Cuboid2d,
    Ellipse,
    Geometry,
    Graph,
    Item,
    MultiPolygon,
    OrientedBBox,
    Point,
    Polygon,
    Polyline,
    Rectangle,
)

RULES = ("opencv", "coco")
# CVAT's mask export paints no polylines, points, skeletons or cuboids (reference A.5).
NOT_PAINTED_BY_COCO = (Polyline, Point, Graph, Cuboid2d)


@dataclass(frozen=True, eq=False)
class Stamp:
    """One label's footprint: `parts` (h, w) at image (left, top); see module docstring."""

    label: int
    left: int
    top: int
    parts: np.ndarray
    colors: tuple[RGB | None, ...] = (None,)
    alpha: np.ndarray | None = None

    @property
    def window(self) -> tuple[slice, slice]:
        h, w = self.parts.shape
        return slice(self.top, self.top + h), slice(self.left, self.left + w)

    @cached_property  # asked for by every mask of the item (class, instance, human)
    def covered(self) -> np.ndarray:
        return self.parts > 0

    @property
    def pixel_count(self) -> int:
        return int(np.count_nonzero(self.parts))


_SMALL_RING = 64  # points: a plain Python shoelace beats numpy's per-call costs
_EXACT = 1 << 20  # |coordinates| below this keep every shoelace sum of a small ring exact


def _polygon_area(ring: np.ndarray) -> float:
    if len(ring) <= _SMALL_RING and ring.dtype.kind == "i":
        xs, ys = ring.T.tolist()
        if max(max(xs), max(ys), -min(xs), -min(ys)) < _EXACT:
            # exact integers, as numpy's float64 sums are here: the same float
            twice = sum(y * xp - x * yp for x, y, xp, yp in
                        zip(xs, ys, xs[-1:] + xs[:-1], ys[-1:] + ys[:-1], strict=True))
            return 0.5 * abs(twice)
    x = ring[:, 0].astype(np.float64)
    y = ring[:, 1].astype(np.float64)
    return float(0.5 * np.abs(np.dot(y, np.roll(x, 1)) - np.dot(x, np.roll(y, 1))))


def sdk_area(g: Geometry) -> float:
    """The Supervisely SDK's `area` (not a pixel count): shoelace for polygons, inclusive
    width*height for rectangles, set pixels for bitmaps, 0 for lines, points, graphs, cuboids."""
    if isinstance(g, Polygon):
        return _polygon_area(g.exterior) - sum(_polygon_area(h) for h in g.interiors)
    if isinstance(g, MultiPolygon):
        return sum(sdk_area(p) for p in g.parts)
    if isinstance(g, Rectangle | OrientedBBox):
        return float((g.right - g.left + 1) * (g.bottom - g.top + 1))
    if isinstance(g, Bitmap):
        return float(np.count_nonzero(g.mask))
    if isinstance(g, AlphaMask):
        return float(np.count_nonzero(g.alpha))
    if isinstance(g, CocoPolygon):  # other sources: the same shoelace, on float vertices
        return sum(_polygon_area(np.asarray(p, np.float64).reshape(-1, 2)) for p in g.parts
                   if len(p) >= 6)
    return 0.0


def _clip(ext: tuple[int, int, int, int], width: int, height: int
          ) -> tuple[int, int, int, int] | None:
    left, top, right, bottom = ext
    left, top = max(left, 0), max(top, 0)
    right, bottom = min(right, width - 1), min(bottom, height - 1)
    if right < left or bottom < top:
        return None
    return left, top, right, bottom


def _part_color(kind: str, spec: object) -> RGB | None:
    color = spec[2] if kind == "edge" else spec[1]  # type: ignore[index]
    return None if color is None else (int(color[0]), int(color[1]), int(color[2]))


def _next_value(k: int) -> int:
    """Part k (from 0) of a template graph paints value k + 1."""
    return k + 1


class WindowBudget:
    """The running cost of an item's stamp windows against `max_pixels`
    (`limits.max_shape_pixels`): each window's pixels plus the `work` (polygon draw steps
    under the opencv rule, trace bytes under the coco rule) drawing into it takes; the error
    names both parts."""

    def __init__(self, max_pixels: int | None, work: str = "draw steps") -> None:
        self.max_pixels = max_pixels
        self.work = work
        self.pixels = self.steps = 0
        self.label = 0

    def __call__(self, pixels: int, work: int) -> None:
        self.pixels += pixels
        self.steps += work
        total = self.pixels + self.steps
        if self.max_pixels is not None and total > self.max_pixels:
            raise ItemError(
                f"Expected shapes of at most {self.max_pixels} window pixels plus "
                f"{self.work} in total (limits.max_shape_pixels). Got {total} "
                f"({self.pixels} window pixels + {self.steps} {self.work}) by label "
                f"#{self.label} instead.")


def _opencv_stamp(index: int, g: Geometry, item: Item, thickness: int,
                  template: dict | None, charge: _coco.Charge) -> Stamp | None:
    ext = _opencv.extent(g, thickness)
    box = _clip(ext, item.width, item.height) if ext is not None else None
    if box is None:
        return None
    left, top, right, bottom = box
    rows, cols = bottom - top + 1, right - left + 1
    charge(rows * cols, _opencv.draw_steps(g, thickness, rows, cols))
    colors: tuple[RGB | None, ...] = (None,)
    part_value = None
    dtype = np.uint8
    if isinstance(g, Graph) and template:
        colors = tuple(_part_color(kind, spec) for kind, spec in _opencv.graph_parts(g, template))
        colors = colors or (None,)
        part_value = _next_value
        if len(colors) > 255:
            dtype = np.uint16
    canvas = np.zeros((bottom - top + 1, right - left + 1), dtype)
    _opencv.draw(canvas, g, 1, thickness=thickness, ox=left, oy=top, template=template,
                 part_value=part_value)
    if not canvas.any():
        return None
    alpha = None
    if isinstance(g, AlphaMask):
        alpha = np.zeros(canvas.shape, np.uint8)
        ys, xs = g.top - top, g.left - left
        h, w = g.alpha.shape
        y0, x0 = max(ys, 0), max(xs, 0)
        y1, x1 = min(ys + h, canvas.shape[0]), min(xs + w, canvas.shape[1])
        alpha[y0:y1, x0:x1] = g.alpha[y0 - ys:y1 - ys, x0 - xs:x1 - xs]
    return Stamp(index, left, top, canvas, colors, alpha)


def _coco_stamp(index: int, g: Geometry, item: Item, charge: _coco.Charge) -> Stamp | None:
    if isinstance(g, Ellipse):
        found = _coco.ellipse_window(g, item.width, item.height, charge)
    else:
        found = _coco.window(g, item.width, item.height, charge)
    if found is None:
        return None
    left, top, mask = found
    return Stamp(index, left, top, mask)


def render(
    item: Item,
    classes: ClassTable,
    *,
    rule: str = "opencv",
    thickness: int = 2,
    templated: bool = False,
    max_pixels: int | None = None,
) -> list[Stamp | None]:
    """One stamp (or None) per label of `item`, in annotation order; ItemError when the
    windows would pass `max_pixels` in total (see module docstring)."""
    if rule not in RULES:
        raise ValueError(f"Expected rule in {RULES}. Got {rule!r} instead.")
    if thickness < 1:
        raise ValueError(f"Expected thickness >= 1. Got {thickness!r} instead.")
    stamps: list[Stamp | None] = []
    charge = WindowBudget(max_pixels, "trace bytes" if rule == "coco" else "draw steps")
    for i in range(len(item.labels)):
        charge.label = i
        stamps.append(label_stamp(i, item, classes, rule=rule, thickness=thickness,
                                  templated=templated, charge=charge))
    return stamps


def templates_matter(item: Item, classes: ClassTable, rule: str) -> bool:
    """Whether `templated=True` can render other stamps than `templated=False`: only graphs
    of a class with a template draw differently (under the opencv rule)."""
    return rule == "opencv" and any(
        isinstance(lab.geometry, Graph) and classes[lab.class_index].geometry_config
        for lab in item.labels)


def label_stamp(i: int, item: Item, classes: ClassTable, *, rule: str, thickness: int,
                templated: bool, charge: _coco.Charge) -> Stamp | None:
    """The stamp of label `i` of `item` (see `render`); its window is told to `charge` first."""
    label = item.labels[i]
    g = label.geometry
    if isinstance(g, CocoPolygon | Ellipse) or (rule == "coco" and isinstance(g, Rectangle)):
        return _coco_stamp(i, g, item, charge)
    if rule == "coco" and isinstance(g, NOT_PAINTED_BY_COCO):
        return None
    template = classes[label.class_index].geometry_config if templated else None
    return _opencv_stamp(i, g, item, thickness, template, charge)
