"""The OpenCV pixel rule (Supervisely SDK): one drawing function per geometry.

Every function draws one geometry into a small `canvas` whose pixel (0, 0) is image pixel
(ox, oy), with the same OpenCV primitives and arguments the SDK uses (reference B.8), so the
pixels equal the SDK's full-frame drawing:

- polygon: `fillPoly(exterior, 1)` then `fillPoly(interiors, 0)` on a scratch mask; holes cut,
  boundary pixels included; multipolygon: each part the same way;
- rectangle: inclusive corners; oriented box: rotated corners about the integer centre,
  truncated, `fillPoly`;
- polyline: `polylines(isClosed=False, thickness)`; point: filled circle of radius
  `round(thickness / 2)`; graph: template edges with `line(thickness)` then enabled nodes as
  points (edges only when a template is given); cuboid: five faces filled;
- bitmap: slice assignment; alpha mask: covered where alpha > 0.

`value` is the integer written for covered pixels; a template graph writes one value per part,
given by `part_value(k)`. Integer translation keeps OpenCV's rasterization identical, and the
canvas always extends past the geometry by its stroke, so nothing is clipped that the full
frame would not clip too.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .model import (
    AlphaMask,
    Bitmap,
    Cuboid2d,
    Geometry,
    Graph,
    MultiPolygon,
    Node,
    OrientedBBox,
    Point,
    Polygon,
    Polyline,
    Rectangle,
    point_bounds,
)


def point_radius(thickness: int) -> int:
    """The SDK's point radius: Python's round(t / 2) (half to even: t=1 -> 0, t=3 -> 2)."""
    return round(thickness / 2)


CHEAP_STEPS = 1 << 22  # points x window rows below which a shape's drawing cost is not summed


def draw_steps(g: Geometry, thickness: int, rows: int, cols: int) -> int:
    """What OpenCV walks to draw a polygon or a polyline in a window of `rows` x `cols`,
    beyond its pixels, to be charged with the window: `fillPoly` visits every edge on every
    row it spans (a 40,000-point polygon zigzagging down an 8000-row image: 320 M steps,
    ~5 CPU-s, and a million points are allowed), `polylines` every pixel of every segment
    times the stroke. 0 for shapes whose points x rows cannot matter."""
    if isinstance(g, Polygon | MultiPolygon):
        rings = [r for p in (g.parts if isinstance(g, MultiPolygon) else (g,))
                 for r in (p.exterior, *p.interiors)]
        if sum(len(r) for r in rings) * rows <= CHEAP_STEPS:
            return 0
        return sum(int(np.minimum(np.abs(np.diff(r[:, 1], append=r[:1, 1])), rows).sum())
                   + len(r) for r in rings)
    if isinstance(g, Polyline):
        pts = g.points
        if len(pts) * max(rows, cols) * max(thickness, 1) <= CHEAP_STEPS:
            return 0
        d = np.abs(np.diff(pts, axis=0)).max(axis=1) if len(pts) > 1 else np.zeros(0)
        return int((np.minimum(d, rows + cols).sum() + len(pts)) * max(thickness, 1))
    return 0


def obb_corners(g: OrientedBBox) -> np.ndarray:
    """Corners TL, TR, BR, BL rotated by `angle` about the integer centre, floored (SDK)."""
    cx, cy = (g.left + g.right) // 2, (g.top + g.bottom) // 2
    c, s = np.cos(g.angle), np.sin(g.angle)
    out = []
    for x, y in ((g.left, g.top), (g.right, g.top), (g.right, g.bottom), (g.left, g.bottom)):
        tx, ty = x - cx, y - cy
        out.append((int(np.floor(tx * c - ty * s + cx)), int(np.floor(tx * s + ty * c + cy))))
    return np.array(out, dtype=np.int64)


# Face quads of a cuboid, by vertex name: front face, then top, right, bottom, left.
CUBOID_FACES = (
    ("face1-topleft", "face1-topright", "face1-bottomright", "face1-bottomleft"),
    ("face1-topleft", "face2-topleft", "face2-topright", "face1-topright"),
    ("face1-topright", "face2-topright", "face2-bottomright", "face1-bottomright"),
    ("face1-bottomleft", "face1-bottomright", "face2-bottomright", "face2-bottomleft"),
    ("face1-topleft", "face1-bottomleft", "face2-bottomleft", "face2-topleft"),
)


def extent(g: Geometry, thickness: int) -> tuple[int, int, int, int] | None:
    """Inclusive (left, top, right, bottom) of every pixel the geometry may touch."""
    if isinstance(g, Rectangle):
        return g.left, g.top, g.right, g.bottom
    if isinstance(g, Bitmap):
        return g.left, g.top, g.left + g.mask.shape[1] - 1, g.top + g.mask.shape[0] - 1
    if isinstance(g, AlphaMask):
        return g.left, g.top, g.left + g.alpha.shape[1] - 1, g.top + g.alpha.shape[0] - 1
    margin = 1
    if isinstance(g, Polygon):
        pts = g.exterior
    elif isinstance(g, MultiPolygon):
        pts = np.vstack([p.exterior for p in g.parts])
    elif isinstance(g, OrientedBBox):
        pts = obb_corners(g)
    elif isinstance(g, Polyline):
        pts, margin = g.points, thickness + 2
    elif isinstance(g, Point):
        pts, margin = np.array([[g.x, g.y]]), point_radius(thickness) + 2
    elif isinstance(g, Graph | Cuboid2d):
        nodes = g.nodes if isinstance(g, Graph) else g.vertices
        pts = np.array([(n.x, n.y) for n in nodes], dtype=np.int64)
        margin = thickness + point_radius(thickness) + 2
    else:
        return None
    left, top, right, bottom = point_bounds(pts)
    return left - margin, top - margin, right + margin, bottom + margin


def _window(shape: tuple[int, ...], x: int, y: int, w: int, h: int
            ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices of a w x h block placed at canvas (x, y): (canvas part, block part), clipped."""
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, shape[1]), min(y + h, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return ((slice(y0, y1), slice(x0, x1)),
            (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)))


def _pts(a: np.ndarray, ox: int, oy: int) -> np.ndarray:
    return (a - (ox, oy)).astype(np.int32).reshape(-1, 1, 2)


def _fill_polygon(canvas: np.ndarray, p: Polygon, value: int, ox: int, oy: int) -> None:
    scratch = np.zeros(canvas.shape, np.uint8)
    cv2.fillPoly(scratch, [_pts(p.exterior, ox, oy)], 1)
    if p.interiors:
        cv2.fillPoly(scratch, [_pts(h, ox, oy) for h in p.interiors], 0)
    canvas[scratch.view(bool)] = value


def _draw_point(canvas: np.ndarray, x: int, y: int, value: int, thickness: int,
                ox: int, oy: int) -> None:
    cv2.circle(canvas, (x - ox, y - oy), point_radius(thickness), value, cv2.FILLED)


def draw(
    canvas: np.ndarray,
    g: Geometry,
    value: int,
    *,
    thickness: int,
    ox: int,
    oy: int,
    template: dict | None = None,
    part_value: Callable[[int], int] | None = None,
) -> None:
    """Draw `g` into `canvas` (image pixel (ox, oy) at canvas (0, 0)); see module docstring."""
    if isinstance(g, Polygon):
        _fill_polygon(canvas, g, value, ox, oy)
    elif isinstance(g, MultiPolygon):
        for p in g.parts:
            _fill_polygon(canvas, p, value, ox, oy)
    elif isinstance(g, Rectangle):
        win = _window(canvas.shape, g.left - ox, g.top - oy, g.right - g.left + 1,
                      g.bottom - g.top + 1)
        if win is not None:
            canvas[win[0]] = value
    elif isinstance(g, OrientedBBox):
        cv2.fillPoly(canvas, [_pts(obb_corners(g), ox, oy)], value)
    elif isinstance(g, Bitmap | AlphaMask):
        covered = g.mask if isinstance(g, Bitmap) else g.alpha > 0
        win = _window(canvas.shape, g.left - ox, g.top - oy, covered.shape[1], covered.shape[0])
        if win is not None:
            canvas[win[0]][covered[win[1]]] = value
    elif isinstance(g, Polyline):
        cv2.polylines(canvas, [_pts(g.points, ox, oy)], False, value, thickness)
    elif isinstance(g, Point):
        _draw_point(canvas, g.x, g.y, value, thickness, ox, oy)
    elif isinstance(g, Graph):
        _draw_graph(canvas, g, value, thickness, ox, oy, template, part_value)
    elif isinstance(g, Cuboid2d):
        at = {n.name: (n.x, n.y) for n in g.vertices}
        for face in CUBOID_FACES:
            quad = np.array([at[v] for v in face], dtype=np.int64)
            cv2.fillPoly(canvas, [_pts(quad, ox, oy)], value)
    else:
        raise TypeError(f"Expected a geometry of the OpenCV rule. Got {type(g).__name__} instead.")


def graph_parts(g: Graph, template: dict | None) -> list[tuple[str, object]]:
    """The drawing parts of a graph in paint order: ('edge', (src, dst, colour)) then
    ('node', (node, colour)); colour None means the label's colour."""
    parts: list[tuple[str, object]] = []
    by_name: dict[str, Node] = {n.name: n for n in g.nodes}
    if template:
        for e in template.get("edges", []) or []:
            if not isinstance(e, dict):
                continue
            src, dst = by_name.get(str(e.get("src"))), by_name.get(str(e.get("dst")))
            if src is not None and dst is not None and not src.disabled and not dst.disabled:
                parts.append(("edge", (src, dst, e.get("color"))))
    node_cfg = (template or {}).get("nodes") or {}
    for n in g.nodes:
        if not n.disabled:
            cfg = node_cfg.get(n.name)
            parts.append(("node", (n, cfg.get("color") if isinstance(cfg, dict) else None)))
    return parts


def _draw_graph(canvas: np.ndarray, g: Graph, value: int, thickness: int, ox: int, oy: int,
                template: dict | None, part_value: Callable[[int], int] | None) -> None:
    for k, (kind, spec) in enumerate(graph_parts(g, template)):
        v = part_value(k) if part_value is not None else value
        if kind == "edge":
            src, dst, _ = spec  # type: ignore[misc]
            cv2.line(canvas, (src.x - ox, src.y - oy), (dst.x - ox, dst.y - oy), v, thickness)
        else:
            node, _ = spec  # type: ignore[misc]
            _draw_point(canvas, node.x, node.y, v, thickness, ox, oy)
