"""Index maps in drawing order, shared by the writers that store class / instance indices
(clearml, zarr).

Drawing order: z_order ascending, then annotation order; later labels are painted on top (the
CVAT rule; every label of a COCO file or a Supervisely project has z_order 0, so it is simply
annotation order). Only labels that paint at least one pixel take part, so instance k (from 1)
is the k-th label drawn.

`maps(ctx, thickness)` composes them from the item's stamps once per item: the formats of one
pass get the same arrays (read-only by convention, like the stamps). The memo holds the last
item of the calling thread only, through a weak reference, so it never outlives the item.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..compose import paint_index
from ..palette import index_dtype
from ..rasterize import Stamp
from .base import ItemContext


@dataclass
class IndexMaps:
    stamps: list[Stamp]  # the labels that paint, in drawing order
    classes: np.ndarray  # class index (position in the class list + 1), uint8 / uint16
    class_pixels: dict[str, int]  # visible pixels per class present
    present: list[int]  # class indices present, ascending
    _instances: np.ndarray | None = field(default=None, repr=False)

    def instances(self, height: int, width: int) -> np.ndarray:
        """Instance k (from 1) where the k-th drawn label is on top; uint16, uint32 beyond."""
        if self._instances is None:
            dtype = np.uint16 if len(self.stamps) <= 65535 else np.uint32
            self._instances = paint_index(self.stamps, list(range(1, len(self.stamps) + 1)),
                                          height, width, dtype)
        return self._instances


_last = threading.local()


def maps(ctx: ItemContext, thickness: int) -> IndexMaps:
    """The item's index maps (composed once per item and thickness, see module docstring)."""
    memo = getattr(_last, "memo", None)
    if memo is not None and memo[0]() is ctx and memo[1] == thickness:
        return memo[2]
    labels = ctx.item.labels
    stamps = sorted((s for s in ctx.stamps(thickness=thickness) if s is not None),
                    key=lambda s: labels[s.label].z_order)
    classes = paint_index(stamps, [labels[s.label].class_index + 1 for s in stamps],
                          ctx.item.height, ctx.item.width, index_dtype(len(ctx.classes)))
    counts = histogram(classes, len(ctx.classes) + 1)
    present = [int(i) for i in np.flatnonzero(counts[1:]) + 1]
    pixels = {ctx.classes[i - 1].name: int(counts[i]) for i in present}
    result = IndexMaps(stamps, classes, pixels, present)
    _last.memo = (weakref.ref(ctx), thickness, result)
    return result


def histogram(index_map: np.ndarray, n: int) -> np.ndarray:
    """Pixel count of every value 0..n-1 (int64). OpenCV's histogram for uint8 maps, 5x faster
    than np.bincount (no int64 copy of the frame); exact while counts fit a float32."""
    if index_map.dtype == np.uint8 and index_map.size < 2 ** 24 and n <= 256:
        hist = cv2.calcHist([index_map], [0], None, [256], [0, 256]).ravel()
        return hist[:n].astype(np.int64)
    return np.bincount(index_map.ravel(), minlength=n)
