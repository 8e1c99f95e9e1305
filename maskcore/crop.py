"""Load-time normalisation of Supervisely geometries to the image (reference/supervisely.md B.6).

`to_image(geometry, width, height) -> list[Geometry]` reproduces what the SDK's
`Annotation.__init__` does to every label: a geometry whose bounding box lies inside the image
is kept as it is; otherwise it is cropped to the image rectangle (0, 0)-(W-1, H-1):

- polygon: shapely `Polygon(exterior, holes).buffer(0) & window`; vertices rounded with Python's
  round (half to even); may split into several polygons (several labels) or vanish;
- multipolygon: each part cropped the same way, all parts kept in one multipolygon;
- polyline: shapely line intersection, consecutive pieces joined, vertices floored;
- rectangle: clamped; bitmap / alpha mask: sliced; point: dropped when outside;
- graph and cuboid: dropped whole when any node is outside;
- oriented box: never cropped (the SDK exempts it).
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import LineString, mapping
from shapely.geometry import Polygon as ShapelyPolygon

from .model import (
    AlphaMask,
    Bitmap,
    Cuboid2d,
    Geometry,
    Graph,
    MultiPolygon,
    OrientedBBox,
    Point,
    Polygon,
    Polyline,
    Rectangle,
    point_bounds,
)


def bbox(g: Geometry) -> tuple[int, int, int, int] | None:
    """The SDK's `to_bbox()` as inclusive (left, top, right, bottom); None if not defined."""
    if isinstance(g, Polygon):
        pts = g.exterior
    elif isinstance(g, MultiPolygon):
        pts = np.vstack([p.exterior for p in g.parts])
    elif isinstance(g, Polyline):
        pts = g.points
    elif isinstance(g, Rectangle | OrientedBBox):
        return g.left, g.top, g.right, g.bottom
    elif isinstance(g, Bitmap):
        return g.left, g.top, g.left + g.mask.shape[1] - 1, g.top + g.mask.shape[0] - 1
    elif isinstance(g, AlphaMask):
        return g.left, g.top, g.left + g.alpha.shape[1] - 1, g.top + g.alpha.shape[0] - 1
    elif isinstance(g, Point):
        return g.x, g.y, g.x, g.y
    elif isinstance(g, Graph):
        pts = np.array([(n.x, n.y) for n in g.nodes], dtype=np.int64)
    elif isinstance(g, Cuboid2d):
        pts = np.array([(n.x, n.y) for n in g.vertices], dtype=np.int64)
    else:
        return None
    return point_bounds(pts)


def _inside(b: tuple[int, int, int, int], width: int, height: int) -> bool:
    left, top, right, bottom = b
    return left >= 0 and top >= 0 and right <= width - 1 and bottom <= height - 1


def _ring_rc(ring: np.ndarray) -> list[tuple[float, float]]:
    return [(float(y), float(x)) for x, y in ring]


def _drop_closing(coords: list | tuple) -> list:
    coords = list(coords)
    if len(coords) > 1 and coords[0] == coords[-1]:
        coords = coords[:-1]
    return coords


def _rounded_xy(ring_rc: list) -> np.ndarray:
    return np.array([(round(c), round(r)) for r, c in ring_rc], dtype=np.int64).reshape(-1, 2)


def _polygons_of(shape: dict) -> list[list]:
    """Polygon rings (row, col) out of a shapely mapping, as the SDK's converter walks it."""
    kind = shape["type"]
    if kind == "Polygon":
        return [[_drop_closing(r) for r in shape["coordinates"]]]
    if kind == "MultiPolygon":
        return [[_drop_closing(r) for r in poly] for poly in shape["coordinates"]]
    if kind == "GeometryCollection":
        out: list[list] = []
        for sub in shape["geometries"]:
            out.extend(_polygons_of(sub))
        return out
    return []


def _crop_polygon(p: Polygon, width: int, height: int) -> list[Polygon]:
    window = ShapelyPolygon([(0, 0), (0, width - 1), (height - 1, width - 1), (height - 1, 0)])
    try:
        shp = ShapelyPolygon(_ring_rc(p.exterior), holes=[_ring_rc(h) for h in p.interiors])
        result = mapping(shp.buffer(0).intersection(window))
    except Exception:  # the SDK logs and drops a polygon shapely cannot handle
        return []
    out = []
    for rings in _polygons_of(result):
        if not rings or len(rings[0]) < 3:
            continue
        holes = tuple(_rounded_xy(h) for h in rings[1:] if len(h) > 2)
        out.append(Polygon(_rounded_xy(rings[0]), holes))
    return out


def _crop_polyline(line: Polyline, width: int, height: int) -> list[Polyline]:
    window = ShapelyPolygon([(0, 0), (0, width - 1), (height - 1, width - 1), (height - 1, 0)])
    result = mapping(LineString(_ring_rc(line.points)).intersection(window))
    kind = result["type"]
    if kind == "LineString":
        pieces = [list(result["coordinates"])]
    elif kind == "MultiLineString":
        pieces = [list(c) for c in result["coordinates"]]
    elif kind == "GeometryCollection":
        pieces = [list(g["coordinates"]) for g in result["geometries"]
                  if g["type"] == "LineString"]
    else:
        pieces = []
    joined: list[list] = []
    for piece in pieces:
        if not piece:
            continue
        if joined and joined[-1][-1] == piece[0]:
            joined[-1] = joined[-1] + piece[1:]
        else:
            joined.append(piece)
    return [
        Polyline(np.array([(math.floor(c), math.floor(r)) for r, c in piece], dtype=np.int64))
        for piece in joined
        if len(piece) >= 2
    ]


def _crop_raster(g: Bitmap | AlphaMask, width: int, height: int) -> list[Geometry]:
    data = g.mask if isinstance(g, Bitmap) else g.alpha
    left, top = max(g.left, 0), max(g.top, 0)
    right = min(g.left + data.shape[1] - 1, width - 1)
    bottom = min(g.top + data.shape[0] - 1, height - 1)
    if right < left or bottom < top:
        return []
    cut = data[top - g.top: bottom - g.top + 1, left - g.left: right - g.left + 1]
    covered = cut if isinstance(g, Bitmap) else cut > 0
    if not covered.any():
        return []
    rows = np.flatnonzero(covered.any(axis=1))
    cols = np.flatnonzero(covered.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    tight = np.ascontiguousarray(cut[r0:r1, c0:c1])
    if isinstance(g, Bitmap):
        return [Bitmap(left + c0, top + r0, tight)]
    return [AlphaMask(left + c0, top + r0, tight)]


def to_image(g: Geometry, width: int, height: int) -> list[Geometry]:
    """The geometry as the SDK holds it after loading into an image of this size."""
    if isinstance(g, OrientedBBox):
        return [g]
    b = bbox(g)
    if b is None or _inside(b, width, height):
        return [g]
    if isinstance(g, Polygon):
        return list(_crop_polygon(g, width, height))
    if isinstance(g, MultiPolygon):
        parts = [q for p in g.parts for q in _crop_polygon(p, width, height)]
        return [MultiPolygon(tuple(parts))] if parts else []
    if isinstance(g, Polyline):
        return list(_crop_polyline(g, width, height))
    if isinstance(g, Rectangle):
        left, top = max(g.left, 0), max(g.top, 0)
        right, bottom = min(g.right, width - 1), min(g.bottom, height - 1)
        return [Rectangle(left, top, right, bottom)] if left <= right and top <= bottom else []
    if isinstance(g, Bitmap | AlphaMask):
        return _crop_raster(g, width, height)
    # Point, Graph, Cuboid2d: fully inside was handled above, so any node is outside: dropped.
    return []
