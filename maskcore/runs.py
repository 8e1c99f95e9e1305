"""Column-major runs: coco-rule masks composed without drawing a window per shape.

pycocotools (the rule CVAT's and COCO's masks follow) already describes a polygon as runs down
the columns of the full frame (its RLE). Decoding that RLE into a window, copying it into the
index map and counting pixels touched every pixel of every shape's bounding box several times
(~5 frames' worth on a dense 1080p image); here a label's footprint stays a list of runs and
the composition is computed on runs:

- `Runs(starts, ends)`: half-open ranges of column-major positions `x * height + y` (sorted,
  disjoint) - the pixels a label paints, clipped to the image. `.window(...)` cuts them into
  a bbox window: the stamps of polygons (`_coco.window`, for writers that need stamps) are
  these same pixels.
- `polygon_runs(parts, width, height)`: pycocotools' own full-frame RLE of a polygon (one or
  more float parts, unioned) - `frPyObjects` on the full frame, as datumaro calls it. Polygons
  of one part are traced here, `rleFrPoly`'s algorithm vectorized over an item's polygons and
  straight to runs (`_traced_runs`, equal to pycocotools run for run); others go through
  `frPyObjects` and `merge`, their compressed counts decoded here (the format of
  `rleToString`).
- `stamp_runs(stamp, height)`: the runs of any rendered stamp (ellipses, bitmaps, ...).
- `render_runs(item, classes, max_pixels)`: every label's runs (or None), in annotation order:
  what `rasterize.render` gives under the coco rule, as runs; the same windows are charged to
  `max_pixels` (`limits.max_shape_pixels`) before anything is drawn.
- `paint(runs, values, height, width, dtype)`: the index map where each pixel holds the value
  of the LAST footprint covering it (0 where none), as painting them in turn would, plus the
  pixel count of every value. The winner of each elementary segment between run boundaries is
  found with an offline range-max over a sparse table (O(R log R) for R runs), then the
  column-major frame is written once with `np.repeat` and transposed once.

Cost: O(runs) numpy work per item, and two passes over the
frame per item, whatever the shapes' areas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from . import _coco
from .model import Bitmap, ClassTable, CocoPolygon, Item, Rectangle
from .rasterize import Stamp, WindowBudget, label_stamp


@dataclass(frozen=True, eq=False)
class Runs:
    """Half-open column-major ranges [starts[i], ends[i]) of the pixels a label paints."""

    starts: np.ndarray
    ends: np.ndarray

    @property
    def pixel_count(self) -> int:
        return int((self.ends - self.starts).sum())

    def window(self, left: int, top: int, width: int, height: int, frame_height: int
               ) -> np.ndarray:
        """The (height, width) uint8 0/1 mask of these runs in the window at (left, top) of
        a frame `frame_height` tall. A run may cross from one column into the next: it is cut
        into one piece per column first."""
        fh = frame_height
        first, last = self.starts // fh, (self.ends - 1) // fh
        n = last - first + 1  # columns each run touches
        col = np.repeat(first, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        top_row = np.where(col == np.repeat(first, n), np.repeat(self.starts, n) - col * fh, 0)
        end_row = np.where(col == np.repeat(last, n), np.repeat(self.ends, n) - col * fh, fh)
        x = col - left
        y0, y1 = np.clip(top_row - top, 0, height), np.clip(end_row - top, 0, height)
        keep = (x >= 0) & (x < width) & (y1 > y0)  # pieces of a column are disjoint
        toggles = np.zeros((width, height + 1), np.int8)
        toggles[x[keep], y0[keep]] += 1
        toggles[x[keep], y1[keep]] -= 1
        columns = np.cumsum(toggles[:, :-1], axis=1, dtype=np.int8)
        return cv2.transpose(columns.view(np.uint8))


def _segmented_cumsum(x: np.ndarray, heads: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sums of `x` restarting at each segment (first index `heads`, `sizes` long;
    no empty segment)."""
    total = np.cumsum(x)
    return total - np.repeat(total[heads] - x[heads], sizes)


def decode_counts(strings: Sequence[bytes]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pycocotools' compressed RLE strings (none empty) -> (run lengths of all, int64; index
    of the first run of each string; number of runs of each; whether each run is odd within
    its string - a run of ones), as its `rleFrString`: each number
    is 5-bit groups (least significant first, +48, bit 0x20 = more follow, bit 0x10 of the last
    group = negative) and from the third on a delta to the number two before. One vectorized
    pass over every string of an item."""
    v = np.frombuffer(b"".join(strings), np.uint8).astype(np.int64) - 48
    last = v < 0x20  # the last group of a number; no number spans two strings
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    groups = ends - starts + 1
    x = v[starts] & 0x1F
    for k in range(1, int(groups.max())):
        more = np.flatnonzero(groups > k)
        x[more] |= (v[starts[more] + k] & 0x1F) << (5 * k)
    negative = np.flatnonzero(v[ends] & 0x10)
    x[negative] -= np.left_shift(1, 5 * groups[negative])
    # numbers per string: the `last` flags within each string's characters
    char_bounds = np.cumsum([0] + [len(s) for s in strings])
    sizes = np.diff(np.concatenate(([0], np.cumsum(last)))[char_bounds])
    heads = np.cumsum(sizes) - sizes
    # cnts[m] += cnts[m - 2] for m > 2: running sums along the odd and the even numbers of
    # each string, the first number (m = 0) left out of the even chain
    odd = ((np.arange(x.size) - np.repeat(heads, sizes)) & 1).astype(bool)
    chain = x.copy()
    chain[heads] = 0
    on_odd = np.where(odd, chain, 0)
    on_even = chain - on_odd
    counts = np.where(odd, _segmented_cumsum(on_odd, heads, sizes),
                      _segmented_cumsum(on_even, heads, sizes))
    counts[heads] = x[heads]
    return counts, heads, sizes, odd


def rle_runs(rles: Sequence[dict]) -> list[Runs | None]:
    """pycocotools RLEs (compressed counts) -> the runs of ones of each, None if it paints
    nothing."""
    if not rles:
        return []
    counts, heads, sizes, odd = decode_counts([r["counts"] for r in rles])
    bounds = _segmented_cumsum(counts, heads, sizes)  # end position of every run, per RLE
    ones = np.flatnonzero(odd)  # run m odd is ones: [bounds[m - 1], bounds[m])
    starts, ends = bounds[ones - 1], bounds[ones]
    keep = ends > starts
    owner = np.repeat(np.arange(len(rles)), sizes)[ones][keep]
    starts, ends = starts[keep], ends[keep]
    cuts = np.searchsorted(owner, np.arange(len(rles) + 1))
    return [Runs(starts[cuts[k]:cuts[k + 1]], ends[cuts[k]:cuts[k + 1]])
            if cuts[k + 1] > cuts[k] else None for k in range(len(rles))]


def polygon_runs(polygons: Sequence[Sequence[np.ndarray]], width: int, height: int
                 ) -> list[Runs | None]:
    """Per polygon (float parts, flat x, y, ...; unioned): its runs under pycocotools' rule on
    the full frame, None if it paints nothing. Polygons of one part (CVAT's polygons and boxes)
    are traced here (`_traced_runs`); the others go through one `frPyObjects` call."""
    out: list[Runs | None] = [None] * len(polygons)
    single = [k for k, parts in enumerate(polygons) if len(parts) == 1]
    traced = _traced_runs([polygons[k][0] for k in single], width, height)
    if traced is None:
        single = []
    else:
        for k, r in zip(single, traced, strict=True):
            out[k] = r
    rest = [k for k, parts in enumerate(polygons) if len(parts) != 1] if single else \
        list(range(len(polygons)))
    flat = [p for k in rest for p in polygons[k]]  # float64 arrays of >= 6 values
    rles = coco_mask.frPyObjects(flat, height, width) if flat else []
    merged, j = [], 0
    for k in rest:
        own = rles[j:j + len(polygons[k])]
        j += len(polygons[k])
        merged.append(coco_mask.merge(own) if len(own) > 1 else own[0] if own else None)
    found = iter(rle_runs([m for m in merged if m is not None]))
    for k, m in zip(rest, merged, strict=True):
        out[k] = next(found) if m is not None else None
    return out


_GRID = _coco.GRID


def _traced_runs(polygons: Sequence[np.ndarray], width: int, height: int
                 ) -> list[Runs | None] | None:
    """pycocotools' `rleFrPoly` of each polygon (flat float x, y, ...; a trailing odd value is
    ignored, as there), computed vectorized over all of them and straight to runs (no RLE
    string to encode and decode); None when a value is beyond what it handles in C ints.

    `rleFrPoly` snaps the vertices to a 5x grid (`(int)(5 * v + .5)`, C truncation), walks
    every edge one grid step at a time along its major axis (the minor coordinate is
    `(int)(start + slope * t + .5)`, in that order of double operations, after swapping the
    edge's ends so that it runs forwards), and where two consecutive boundary points change
    grid column from 5i + 2 to 5i + 3 (pixel centre i) toggles the mask at pixel column i from
    row `ceil((min(v) - 2) / 5)` (clipped to [0, h]) down. The toggles, sorted per polygon and
    cancelled in pairs, are the runs. Only those crossings are computed here: on an edge along
    x every grid step is one; on an edge along y (slope below 1) the step of each crossing is
    found from the slope and settled by evaluating the same expression around it. Points
    where two edges meet are the snapped vertex on both (never a crossing at column >= 2: the
    C code's truncation only differs from it below 0), so only steps within edges count."""
    if not polygons:
        return []
    h, w = height, width
    sizes = np.array([p.size // 2 for p in polygons], np.int64)
    xy = np.concatenate([p[:2 * (p.size // 2)] for p in polygons]).reshape(-1, 2)
    snapped = _GRID * xy + 0.5
    if not np.abs(snapped).max() < 1 << 30 or h * w >= 1 << 31:
        return None  # C int arithmetic there: leave it to pycocotools
    grid = snapped.astype(np.int64)  # truncates towards zero, as C's (int)
    heads = np.cumsum(sizes) - sizes
    nxt = np.arange(grid.shape[0]) + 1
    nxt[heads + sizes - 1] = heads
    x0, y0, x1, y1 = grid[:, 0], grid[:, 1], grid[nxt, 0], grid[nxt, 1]
    dx, dy = np.abs(x1 - x0), np.abs(y1 - y0)
    along_x = dx >= dy
    flip = np.where(along_x, x0 > x1, y0 > y1)
    xs, xe = np.where(flip, x1, x0), np.where(flip, x0, x1)
    ys, ye = np.where(flip, y1, y0), np.where(flip, y0, y1)
    owner = np.repeat(np.arange(len(polygons)), sizes)
    last_col = _GRID * (w - 1) + 2  # grid columns 5i + 2 for pixel columns 0 <= i < w

    # edges along x (dx > 0): grid steps t -> t + 1 from column xs + t = 5i + 2
    e = np.flatnonzero(along_x & (dx > 0))
    lo = np.maximum(0, 2 - xs[e])
    first = lo + (2 - xs[e] - lo) % _GRID
    n, k = _steps(first, np.minimum(dx[e] - 1, last_col - xs[e]))
    slope = np.repeat((ye[e] - ys[e]) / dx[e], n)
    start = np.repeat(ys[e].astype(np.float64), n)
    t = np.repeat(first, n) + _GRID * k
    v0 = (start + slope * t + 0.5).astype(np.int64)
    v1 = (start + slope * (t + 1) + 0.5).astype(np.int64)
    col_a = np.repeat((xs[e] + first - 2) // _GRID, n) + k
    row_a, own_a = np.minimum(v0, v1), np.repeat(owner[e], n)

    # edges along y: u(t) = (int)(xs + slope * t + .5) is monotonic and moves by at most one
    # column per step; the crossing of column c is at the first t past it
    e = np.flatnonzero(~along_x)
    slope = (xe[e] - xs[e]) / dy[e]
    u_end = (xs[e] + slope * dy[e] + 0.5).astype(np.int64)
    u_start = (xs[e] + 0.5).astype(np.int64)
    lo = np.maximum(np.minimum(u_start, u_end), 2)
    first = lo + (2 - lo) % _GRID
    n, k = _steps(first, np.minimum(np.maximum(u_start, u_end) - 1, last_col))
    c = np.repeat(first, n) + _GRID * k
    sl, xs_y = np.repeat(slope, n), np.repeat(xs[e].astype(np.float64), n)
    end = np.repeat(dy[e], n)
    rising = sl > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        guess = np.ceil((c + 0.5 - xs_y) / sl).astype(np.int64)
    # the float error of `guess` is far below a step: the crossing is guess - 1, guess or
    # guess + 1 (u(0) is before column c by construction, so guess - 1 = 0 never passes)
    before = np.clip(guess - 1, 0, end)
    u = (xs_y + sl * before + 0.5).astype(np.int64)
    early = np.where(rising, u >= c + 1, u <= c)
    at = np.clip(guess, 0, end)
    u = (xs_y + sl * at + 0.5).astype(np.int64)
    on = np.where(rising, u >= c + 1, u <= c)
    crossing = np.where(early, before, np.where(on, at, at + 1))
    col_b = np.repeat((first - 2) // _GRID, n) + k
    row_b = np.repeat(ys[e], n) + crossing - 1
    own_b = np.repeat(owner[e], n)

    col = np.concatenate((col_a, col_b))
    row = np.concatenate((row_a, row_b))
    own = np.concatenate((own_a, own_b))
    row = np.clip(-((2 - row) // _GRID), 0, h)  # ceil((v - 2) / 5), clipped
    pos = col * h + row
    keep = pos < h * w  # a toggle at the very end changes no pixel
    total = h * w + 1
    keys = np.sort(own[keep] * total + pos[keep], kind="stable")  # edges' runs: merged
    # cancel toggles in pairs: keep a position where its count is odd
    new = np.empty(keys.size + 1, bool)
    new[0], new[-1] = True, True
    np.not_equal(keys[1:], keys[:-1], out=new[1:-1])
    if not new.all():
        bounds = np.flatnonzero(new)
        odd = (np.diff(bounds) & 1).astype(bool)
        keys = keys[bounds[:-1][odd]]
    cuts = np.searchsorted(keys, np.arange(len(polygons) + 1) * total)
    counts = np.diff(cuts)
    pos = keys - np.repeat(np.arange(len(polygons)) * total, counts)
    # an odd number of toggles: the last run ends at the end of the frame
    tails = np.flatnonzero(counts & 1)
    if tails.size:
        pos = np.insert(pos, cuts[tails + 1], h * w)
        counts[tails] += 1
        cuts = np.concatenate(([0], np.cumsum(counts)))
    return [Runs(pos[cuts[k]:cuts[k + 1]:2], pos[cuts[k] + 1:cuts[k + 1]:2])
            if cuts[k + 1] > cuts[k] else None for k in range(len(polygons))]


def _steps(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count per edge, k per step) of the values first + 5k <= last of every edge, the
    steps of all edges in a row."""
    n = np.maximum(0, (last - first) // _GRID + 1)
    return n, np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)


def mask_runs(mask: np.ndarray, left: int, top: int, height: int) -> Runs | None:
    """The runs of a 0/1 (or bool) uint8 `mask` whose pixel (0, 0) is image pixel (left, top),
    in the image's column-major order (the mask lies inside the image)."""
    h, w = mask.shape
    cols = np.zeros((w, h + 2), np.uint8)  # a zero before and after every column: runs
    cols[:, 1:-1] = cv2.transpose(mask.view(np.uint8))  # never cross into the next column
    edges = np.flatnonzero(cols[:, 1:] != cols[:, :-1])
    if edges.size == 0:
        return None
    col, row = np.divmod(edges, h + 1)  # (start, end) pairs within a column
    pos = (col + left) * height + row + top
    return Runs(pos[0::2], pos[1::2])


def stamp_runs(stamp: Stamp, height: int) -> Runs | None:
    """The runs of a stamp's covered pixels (any rule), in the image's column-major order."""
    covered = stamp.parts if stamp.parts.dtype in (np.uint8, np.bool_) and \
        stamp.parts.max(initial=0) <= 1 else (stamp.parts > 0)
    return mask_runs(covered, stamp.left, stamp.top, height)


def bitmap_runs(g: Bitmap, width: int, height: int, charge: WindowBudget) -> Runs | None:
    """A bitmap's runs, clipped to the image; its clipped window is charged (as its stamp's)."""
    h, w = g.mask.shape
    x0, y0 = max(g.left, 0), max(g.top, 0)
    x1, y1 = min(g.left + w, width), min(g.top + h, height)
    if x1 <= x0 or y1 <= y0:
        return None
    charge((y1 - y0) * (x1 - x0), 0)
    part = g.mask[y0 - g.top:y1 - g.top, x0 - g.left:x1 - g.left]
    return mask_runs(np.ascontiguousarray(part), x0, y0, height)


def _ranks(values: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values, sorted; the index of each value among them) of non-negative
    `values` <= `top`. A plain sort of value-and-position keys (several times faster than
    argsort, and than searchsorted with unsorted keys)."""
    shift = max(int(values.size).bit_length(), 1)
    if top.bit_length() + shift > 62:  # keys would not fit int64: the slower way
        order = np.argsort(values)
        keys_sorted, where = values[order], order
    else:
        # stable: a merge sort, fast on the footprints' runs, each already sorted
        keys = np.sort((values << shift) | np.arange(values.size), kind="stable")
        keys_sorted, where = keys >> shift, keys & ((1 << shift) - 1)
    new = np.empty(values.size, bool)
    new[0] = True
    np.not_equal(keys_sorted[1:], keys_sorted[:-1], out=new[1:])
    rank = np.empty(values.size, np.int64)
    rank[where] = np.cumsum(new) - 1
    return keys_sorted[new], rank


def paint(runs: Sequence[Runs], values: Sequence[int], height: int, width: int,
          dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """(index map (height, width) C-order, pixel count per value 0..max(values)): every pixel
    holds the value of the last of `runs` covering it, 0 where none does."""
    n_values = max(values, default=0) + 1
    total = height * width
    starts = np.concatenate([r.starts for r in runs]) if runs else np.zeros(0, np.int64)
    ends = np.concatenate([r.ends for r in runs]) if runs else starts
    if starts.size == 0:
        counts = np.zeros(n_values, np.int64)
        counts[0] = total
        return np.zeros((height, width), dtype), counts
    # later footprints win; in the narrowest dtype that holds every priority
    kind = np.uint8 if len(runs) < 1 << 8 else np.uint16 if len(runs) < 1 << 16 else np.int64
    priority = np.repeat(np.arange(1, len(runs) + 1, dtype=kind),
                         [r.starts.size for r in runs])
    bounds, rank = _ranks(np.concatenate((starts, ends)), total)
    segments = bounds.size - 1
    a, b = rank[:starts.size], rank[starts.size:]
    # range-max of `priority` over segments [a, b): each range is two overlapping blocks of
    # 2**level segments (the largest priority per block by `maximum.at`); blocks are then
    # pushed down level by level to single segments
    level = (np.frexp(b - a)[1] - 1).astype(np.int64)  # floor(log2), exact
    levels = int(level.max()) + 1
    table = np.zeros((levels, segments), kind)
    cells = table.ravel()
    np.maximum.at(cells, level * segments + a, priority)
    np.maximum.at(cells, level * segments + b - (1 << level), priority)
    for lv in range(levels - 1, 0, -1):
        size, half = 1 << lv, 1 << (lv - 1)
        n = segments - size + 1
        np.maximum(table[lv - 1, :n], table[lv, :n], out=table[lv - 1, :n])
        np.maximum(table[lv - 1, half:half + n], table[lv, :n], out=table[lv - 1, half:half + n])
    lut = np.zeros(len(runs) + 1, np.int64)
    lut[1:] = values
    seg_values = lut[table[0]].astype(dtype)
    lengths = np.diff(bounds)
    flat = np.repeat(np.concatenate(([0], seg_values, [0])).astype(dtype),
                     np.concatenate(([bounds[0]], lengths, [total - bounds[-1]])))
    columns = flat.reshape(width, height)
    index = cv2.transpose(columns) if dtype in (np.uint8, np.uint16) else \
        np.ascontiguousarray(columns.T)
    counts = np.bincount(seg_values.astype(np.int64), weights=lengths, minlength=n_values)
    counts = counts.astype(np.int64)
    counts[0] += total - int(lengths.sum())
    return index, counts


def render_runs(item: Item, classes: ClassTable, *, max_pixels: int | None = None
                ) -> list[Runs | None]:
    """Runs (or None: paints nothing) of every label of `item` under the coco rule."""
    polygons = {i: _coco.polygon_parts(lab.geometry) for i, lab in enumerate(item.labels)
                if isinstance(lab.geometry, CocoPolygon | Rectangle)}
    boxes = dict(zip(polygons, _coco.window_boxes(list(polygons.values()), item.width,
                                                  item.height), strict=True))
    costs = dict(zip(polygons, _coco.trace_bytes(list(polygons.values()), item.width),
                     strict=True))
    charge = WindowBudget(max_pixels, "trace bytes")
    out: list[Runs | None] = [None] * len(item.labels)
    drawn: list[int] = []
    for i in range(len(item.labels)):
        charge.label = i
        if i in polygons:
            box = boxes[i]
            if box is not None:
                left, top, right, bottom = box
                charge((right - left + 1) * (bottom - top + 1), costs[i])
                drawn.append(i)
            continue
        g = item.labels[i].geometry
        if isinstance(g, Bitmap):
            out[i] = bitmap_runs(g, item.width, item.height, charge)
            continue
        stamp = label_stamp(i, item, classes, rule="coco", thickness=1, templated=False,
                            charge=charge)
        out[i] = None if stamp is None else stamp_runs(stamp, item.height)
    found = polygon_runs([polygons[i] for i in drawn], item.width, item.height)
    for i, runs in zip(drawn, found, strict=True):
        out[i] = runs
    return out
