"""The pycocotools pixel rule (COCO `annToMask`, CVAT polygons and boxes) and CVAT's ellipses.

`window(geometry, W, H) -> (left, top, mask) | None` rasterizes a polygon (one or more float
parts, unioned) or a box into a bbox-sized window, pixel-identical to pycocotools on the full
frame because it IS pycocotools' full-frame RLE (runs.py), cut to the window: shifting the
polygon into its window first would change pycocotools' double rounding of `x + s * t + .5`
along steep edges (one pixel in 3 of 40 dense CVAT images).

`ellipse_window(e, W, H)` is CVAT's recipe: `cv2.ellipse` with the centre and radii rounded
half-to-even, the angle in degrees, filled, boundary included.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .model import CocoPolygon, Ellipse, Geometry, Rectangle


def _box_polygon(r: Rectangle) -> np.ndarray:
    """A CVAT/COCO box [x, y, w, h] is rasterized as the polygon of its corners."""
    x0, y0, x1, y1 = float(r.left), float(r.top), float(r.right), float(r.bottom)
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)


Charge = Callable[[int, int], None]  # told (window pixels, trace bytes or draw steps) first


def _free(pixels: int, work: int) -> None:
    pass


def polygon_parts(g: Geometry) -> tuple[np.ndarray, ...]:
    """The float parts (flat x, y, ...) pycocotools rasterizes for a box or a polygon; parts of
    fewer than 3 points are dropped."""
    if isinstance(g, Rectangle):
        return (_box_polygon(g),)
    if isinstance(g, CocoPolygon):
        return tuple(np.asarray(p, dtype=np.float64) for p in g.parts if len(p) >= 6)
    raise TypeError(f"Expected a geometry of the coco rule. Got {type(g).__name__} instead.")


Box = tuple[int, int, int, int]
GRID = 5  # rleFrPoly traces on a grid 5x finer than the pixels

TRACE_BYTES = 128  # numpy bytes per column crossing of runs._traced_runs (measured ~100)
FRPOLY_BYTES = 16  # C bytes per grid step of pycocotools' rleFrPoly (two int arrays, twice)


def trace_bytes(polygons: list[tuple[np.ndarray, ...]], width: int) -> list[int]:
    """Per polygon (its parts): the memory the coco rule takes to trace it, from its vertices,
    to be charged before it is traced. It grows with the edges' lengths, not with the window
    or the points (8,000 points zigzagging across a 2000-pixel image took 1.7 GB). One part is
    traced per crossing of a pixel column inside the image (`runs._traced_runs`, vectorized
    here over the polygons); several go through pycocotools, which walks every edge on its 5x
    grid, inside the image or not."""
    out = [0] * len(polygons)
    single = [k for k, parts in enumerate(polygons) if len(parts) == 1]
    if single:
        xs = [polygons[k][0][0:2 * (polygons[k][0].size // 2):2] for k in single]
        sizes = np.array([x.size for x in xs], np.int64)
        x = np.concatenate(xs)
        heads = np.cumsum(sizes) - sizes
        nxt = np.arange(x.size) + 1
        nxt[heads + sizes - 1] = heads
        x1 = x[nxt]
        span = np.clip(np.maximum(x, x1), 0, width) - np.clip(np.minimum(x, x1), 0, width)
        per = TRACE_BYTES * (np.add.reduceat(span, heads) + sizes)
        for k, b in zip(single, per.tolist(), strict=True):
            out[k] = int(b)
    for k, parts in enumerate(polygons):
        if len(parts) > 1:
            steps = 0.0
            for p in parts:
                x, y = p[0:2 * (p.size // 2):2], p[1:2 * (p.size // 2):2]
                step = np.maximum(np.abs(np.roll(x, -1) - x), np.abs(np.roll(y, -1) - y))
                steps += float((GRID * step).sum() + x.size)
            out[k] = int(FRPOLY_BYTES * steps)
    return out


def window_boxes(polygons: list[tuple[np.ndarray, ...]], width: int, height: int
                 ) -> list[Box | None]:
    """Per polygon (its parts): the inclusive (left, top, right, bottom) of the window that
    holds every pixel it may paint, clipped to the image; None if it cannot paint (no parts,
    a coordinate not finite, outside the image). Vectorized over the polygons."""
    out: list[Box | None] = [None] * len(polygons)
    used = [k for k, parts in enumerate(polygons) if parts]
    if not used:
        return out

    def extremes(axis: int) -> tuple[np.ndarray, np.ndarray]:
        values = [p[axis::2] for k in used for p in polygons[k]]
        sizes = [sum((p.size + 1 - axis) // 2 for p in polygons[k]) for k in used]
        heads = np.cumsum([0, *sizes[:-1]])
        flat = np.concatenate(values)
        return np.minimum.reduceat(flat, heads), np.maximum.reduceat(flat, heads)

    parts = [p for k in used for p in polygons[k]]
    if len(parts) == len(used) and not any(p.size & 1 for p in parts):  # one even part each
        xy = np.concatenate(parts).reshape(-1, 2)
        heads = np.cumsum([0, *[p.size // 2 for p in parts[:-1]]])
        lo, hi = np.minimum.reduceat(xy, heads), np.maximum.reduceat(xy, heads)
        (lo_x, lo_y), (hi_x, hi_y) = lo.T, hi.T
    else:
        (lo_x, hi_x), (lo_y, hi_y) = extremes(0), extremes(1)
    finite = np.isfinite(lo_x) & np.isfinite(hi_x) & np.isfinite(lo_y) & np.isfinite(hi_y)
    with np.errstate(invalid="ignore"):
        left = np.maximum(0, np.floor(np.where(finite, lo_x, 0)) - 1).astype(np.int64)
        top = np.maximum(0, np.floor(np.where(finite, lo_y, 0)) - 1).astype(np.int64)
        right = np.minimum(width - 1, np.ceil(np.where(finite, hi_x, 0)) + 1).astype(np.int64)
        bottom = np.minimum(height - 1, np.ceil(np.where(finite, hi_y, 0)) + 1).astype(np.int64)
    ok = finite & (right >= left) & (bottom >= top)
    for k, good, box in zip(used, ok.tolist(),
                            zip(left.tolist(), top.tolist(), right.tolist(), bottom.tolist(),
                                strict=True), strict=True):
        if good:
            out[k] = box
    return out


def window(g: Geometry, width: int, height: int, charge: Charge = _free
           ) -> tuple[int, int, np.ndarray] | None:
    parts = polygon_parts(g)
    box = window_boxes([parts], width, height)[0]
    if box is None:
        return None
    left, top, right, bottom = box
    w, h = right - left + 1, bottom - top + 1
    charge(w * h, trace_bytes([parts], width)[0])
    # pycocotools on the full frame, as datumaro calls it: a polygon shifted into its window
    # would be rounded differently along steep edges (runs.py)
    from .runs import polygon_runs  # runs.py builds on this module

    (found,) = polygon_runs([parts], width, height)
    if found is None:
        return None
    return left, top, found.window(left, top, w, h, height)


def ellipse_window(e: Ellipse, width: int, height: int, charge: Charge = _free
                   ) -> tuple[int, int, np.ndarray] | None:
    cx, cy = round(e.cx), round(e.cy)
    rx, ry = round(e.rx), round(e.ry)
    reach = max(abs(rx), abs(ry)) + 2
    left, top = max(0, cx - reach), max(0, cy - reach)
    right, bottom = min(width - 1, cx + reach), min(height - 1, cy + reach)
    if right < left or bottom < top:
        return None
    charge((bottom - top + 1) * (right - left + 1), 0)
    m = np.zeros((bottom - top + 1, right - left + 1), np.uint8)
    cv2.ellipse(m, (cx - left, cy - top), (rx, ry), e.angle, 0, 360, 1, thickness=-1)
    if not m.any():
        return None
    return left, top, m
