"""Compose full-frame masks from stamps (see rasterize.py): the only place pixels are painted.

All functions paint in the order of the stamps they are given (later on top) and touch only the
stamps' windows. Colour canvases are BGR (OpenCV's order) so they go to the PNG encoder as they
are; `colors` are given as RGB and swapped here.

- `paint_index`: a class or instance index map (uint8/16/32), a value per stamp.
- `paint_colors`: solid colours (a template graph's parts keep their own colours unless
  `flat=True`, which also paints alpha masks as plain coverage); otherwise an alpha mask
  blends exactly as the SDK's AlphaMask.draw:
  `canvas * (1 - a) + a * colour` in float64 with a = alpha / 255, truncated, where alpha > 0.
- `blend_cumulative`: the export-as-masks app's human overlay: per stamp, the covered pixels
  become floor((previous + painted) / 2).
- `blend_flat`: the DTL human overlay: floor((fg + image) / 2) where fg is not black.
- `instance_frame`: one stamp alone on a full frame of zeros, 255 where covered.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .model import RGB
from .rasterize import Stamp


def paint_index(stamps: Sequence[Stamp], values: Sequence[int], height: int, width: int,
                dtype: type = np.uint8) -> np.ndarray:
    canvas = np.zeros((height, width), dtype)
    for s, v in zip(stamps, values, strict=True):
        canvas[s.window][s.covered] = v
    return canvas


def _bgr(c: RGB) -> np.ndarray:
    return np.array((c[2], c[1], c[0]), dtype=np.uint8)


def _paint_one(region: np.ndarray, s: Stamp, color: RGB, flat: bool) -> None:
    """Paint one stamp into `region` (its window of a BGR canvas), in place. `flat` paints
    every covered pixel in `color` (machine masks: alpha counts as coverage, one colour)."""
    if s.alpha is not None and not flat:
        covered = s.alpha > 0
        a = s.alpha / 255.0
        bgr = _bgr(color)
        for ch in range(3):
            plane = region[:, :, ch]
            temp = np.zeros(s.alpha.shape, np.uint8)
            temp[covered] = bgr[ch]
            plane[covered] = (plane * (1 - a) + a * temp)[covered]
        return
    if flat or len(s.colors) == 1:
        region[s.covered] = _bgr(color if flat or s.colors[0] is None else s.colors[0])
        return
    for k, c in enumerate(s.colors, start=1):
        sel = s.parts == k
        if sel.any():
            region[sel] = _bgr(color if c is None else c)


def paint_colors(canvas: np.ndarray, stamps: Sequence[Stamp], colors: Sequence[RGB],
                 *, flat: bool = False) -> np.ndarray:
    """Paint `stamps` onto a BGR `canvas` in place (and return it)."""
    for s, c in zip(stamps, colors, strict=True):
        _paint_one(canvas[s.window], s, c, flat)
    return canvas


def blend_cumulative(canvas: np.ndarray, stamps: Sequence[Stamp], colors: Sequence[RGB]
                     ) -> np.ndarray:
    """The app's overlay, in place: per stamp, covered = (previous + painted) // 2."""
    for s, c in zip(stamps, colors, strict=True):
        region = canvas[s.window]
        if region.size == 0:
            continue
        if s.alpha is None and len(s.colors) == 1 and region.shape[:2] != (1, 1):
            # one colour: floor((a + b) / 2) = (a & b) + ((a ^ b) >> 1) in uint8, by OpenCV on
            # the window (~6x faster than painting a copy and averaging in uint16). A 1x1
            # window is left to numpy: OpenCV's binding reads its 3 values as a vector, the
            # 4-tuple as another, and returns a (4, 1) float64 array
            bgr = _bgr(c if s.colors[0] is None else s.colors[0])
            scalar = (int(bgr[0]), int(bgr[1]), int(bgr[2]), 0)
            half = cv2.bitwise_xor(region, scalar)
            half >>= 1
            half += cv2.bitwise_and(region, scalar)
            cv2.copyTo(half, s.covered.view(np.uint8), region)
            continue
        painted = region.copy()
        _paint_one(painted, s, c, flat=False)
        np.copyto(region, ((region.astype(np.uint16) + painted) >> 1).astype(np.uint8))
    return canvas


def blend_flat(image: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """DTL's overlay: floor((fg + image) / 2) where fg is not (0, 0, 0), image elsewhere."""
    out = ((image.astype(np.uint16) + fg) >> 1).astype(np.uint8)
    black = ~fg.any(axis=2)
    out[black] = image[black]
    return out


def instance_frame(s: Stamp, height: int, width: int, buffer: np.ndarray | None = None
                   ) -> np.ndarray:
    """A full frame, 255 where the stamp is covered. Reuses `buffer` (zeroed after use by
    `clear_instance_frame`) so a partition allocates one frame, not one per object."""
    frame = buffer if buffer is not None else np.zeros((height, width), np.uint8)
    frame[s.window][s.covered] = 255
    return frame


def clear_instance_frame(frame: np.ndarray, s: Stamp) -> None:
    frame[s.window] = 0
