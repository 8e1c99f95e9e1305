"""Drawing order and composition: ONE policy per pixel rule, ONE class / instance map per item.

Every writer (supervisely machine masks, cvat, clearml, zarr) encodes from the `Composition`
made here, so the same input gives the same class map, the same instance numbers and the same
`class_pixels` in every format, whatever formats a job asks for and in whatever order.

    draw_order(item, stamps, rule) -> list[Instance]      the painting order, one policy a rule
    compose(item, classes, stamps, rule) -> Composition    index map, class table, histogram

Policies (SPEC 2.5, reference/cvat_clearml.md A.6, reference/supervisely.md):
- `coco` (CVAT XML and COCO inputs): CVAT's Segmentation mask export. Every polygon, box,
  ellipse, mask and RLE is a mask, even one that paints nothing (it still takes a number);
  polylines, points, graphs and cuboids are not (`NOT_PAINTED_BY_COCO`). Ungrouped masks come
  first in input order, then groups by ascending id, a group being ONE instance (the union of
  its members) with the class and z_order of its member with the most pixels (the first one
  on a tie: datumaro's `find_group_leader`); then a stable sort by z_order. COCO annotations
  have neither group nor z_order, so their order is the file's.
- `opencv` (Supervisely projects): the export-as-masks app's machine-mask order: labels that
  paint, largest SDK area first (stable sort, `sdk_area`; a z_order, which Supervisely labels
  do not have, would come first); each label is its own instance.

Painting: instance k (from 1) is painted in turn, later on top, with value k, except that an
instance of the background label (`BACKGROUND_CLASS`) paints 0 - it erases what is below and
its number stays unused, as in CVAT. So `index` holds instance numbers and `class_of[k]` the
class index (from 1; 0 background) of instance k: the class map is `class_of[index]`.
Memory: one full-frame index map per item (uint8 up to 255 instances), the class map only when
a writer asks for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .compose import paint_index
from .model import BACKGROUND_CLASS, ClassTable, Item, Label
from .palette import index_dtype
from .rasterize import NOT_PAINTED_BY_COCO, Stamp, sdk_area
from .runs import Runs, paint

Footprint = Stamp | Runs  # a label's pixels: a rendered stamp, or runs (coco rule, runs.py)

NOT_PAINTED_KINDS = {"Polyline": "polyline", "Point": "points", "Graph": "skeleton",
                     "Cuboid2d": "cuboid"}


@dataclass(frozen=True)
class Instance:
    """One instance in painting order: its class (BACKGROUND_CLASS: erases) and the footprints
    (stamps or runs) of its members (none for a mask that paints nothing)."""

    class_index: int
    stamps: tuple[Footprint, ...]


def _is_mask(label: Label) -> bool:
    return not isinstance(label.geometry, NOT_PAINTED_BY_COCO)


def _cvat_order(labels: Sequence[Label], stamps: Sequence[Footprint | None]
                ) -> list[Instance]:
    ungrouped: list[tuple[int, Instance]] = []
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        if not _is_mask(lab):
            continue
        if lab.group:
            groups.setdefault(lab.group, []).append(i)
        else:
            own = (s,) if (s := stamps[i]) is not None else ()
            ungrouped.append((lab.z_order, Instance(lab.class_index, own)))
    merged = []
    for gid in sorted(groups):
        members = groups[gid]
        areas = [s.pixel_count if (s := stamps[i]) is not None else 0 for i in members]
        leader = labels[members[areas.index(max(areas))]]
        merged.append((leader.z_order, Instance(
            leader.class_index, tuple(s for i in members if (s := stamps[i]) is not None))))
    return [inst for _, inst in sorted(ungrouped + merged, key=lambda t: t[0])]


def _app_order(labels: Sequence[Label], stamps: Sequence[Stamp | None]) -> list[Instance]:
    drawn = [s for s in stamps if s is not None]
    drawn.sort(key=lambda s: (labels[s.label].z_order, -sdk_area(labels[s.label].geometry)))
    return [Instance(labels[s.label].class_index, (s,)) for s in drawn]


def draw_order(item: Item, stamps: Sequence[Footprint | None], rule: str) -> list[Instance]:
    """The instances of `item` in painting order under `rule` (see module docstring);
    `stamps` are the kernel's, one per label (runs instead of stamps under the coco rule)."""
    if rule == "coco":
        return _cvat_order(item.labels, stamps)
    if rule == "opencv":
        if any(isinstance(s, Runs) for s in stamps):
            raise TypeError("Expected stamps under the opencv rule. Got runs instead.")
        return _app_order(item.labels, stamps)  # type: ignore[arg-type]
    raise ValueError(f"Expected rule 'coco' or 'opencv'. Got {rule!r} instead.")


_SMALL_MAP = 1024  # pixels up to which `histogram` takes np.bincount (measured: 2.6 vs 7.9 us)


def histogram(index_map: np.ndarray, n: int) -> np.ndarray:
    """Pixel count of every value 0..n-1 (int64). OpenCV's histogram for uint8 maps, several
    times faster than np.bincount (no int64 copy of the frame); exact while counts fit a
    float32 (below 2**24 pixels), so larger frames take bincount."""
    if index_map.size <= _SMALL_MAP:  # a tiny map: bincount's call costs a third of OpenCV's
        return np.bincount(index_map.ravel(), minlength=n)[:max(n, 1)]
    if index_map.dtype == np.uint8 and index_map.size < 1 << 24 and n <= 256:
        hist = cv2.calcHist([index_map], [0], None, [256], [0, 256]).ravel()
        return hist[:n].astype(np.int64)
    return np.bincount(index_map.ravel(), minlength=n)[:max(n, 1)]


@dataclass
class Composition:
    """An item's masks, composed once and shared by every writer (read-only by convention).

    `index`: instance number per pixel (0: nothing, or erased by a background instance);
    `class_of`: instance number -> class index from 1 (0 for background instances and for 0);
    `top`: the largest number painted (a background instance's number is not painted);
    `class_pixels`: visible pixels per class present; `present`: class indices present,
    ascending; `instances`: the non-background instances; `not_painted`: see `not_painted`.
    """

    order: list[Instance]
    index: np.ndarray
    class_of: np.ndarray
    top: int
    class_pixels: dict[str, int]
    present: list[int]
    instances: int
    n_classes: int
    not_painted: dict[str, int] = field(default_factory=dict)
    _class_map: np.ndarray | None = field(default=None, repr=False)

    def class_map(self) -> np.ndarray:
        """Class index per pixel (uint8, uint16 beyond 255 classes)."""
        if self._class_map is None:
            lut = self.class_of.astype(index_dtype(self.n_classes))
            self._class_map = np.take(lut, self.index)
        return self._class_map

    def instance_map(self, dtype: type) -> np.ndarray:
        """Instance numbers as `dtype` (a copy unless `index` already has it)."""
        return self.index.astype(dtype, copy=False)


def compose(item: Item, classes: ClassTable, stamps: Sequence[Footprint | None], rule: str
            ) -> Composition:
    """Paint the item's instances in `draw_order` into one index map and count its pixels.
    Footprints are either all stamps (`rasterize.render`) or all runs (`runs.render_runs`, the
    coco rule's fast path); both give the same pixels."""
    order = draw_order(item, stamps, rule)
    n = len(order)
    class_of = np.zeros(n + 1, np.int64)
    flat: list[Footprint] = []
    values: list[int] = []
    top = 0
    for k, inst in enumerate(order, start=1):
        value = 0
        if inst.class_index != BACKGROUND_CLASS:
            value = top = k
            class_of[k] = inst.class_index + 1
        flat += inst.stamps
        values += [value] * len(inst.stamps)
    if any(isinstance(f, Runs) for f in flat):
        index, painted = paint(flat, values, item.height, item.width,  # type: ignore[arg-type]
                               index_dtype(n))
        counts = np.zeros(n + 1, np.int64)
        counts[:painted.size] = painted
    else:
        index = paint_index(flat, values, item.height, item.width,  # type: ignore[arg-type]
                            index_dtype(n))
        counts = histogram(index, n + 1)
    per_class = np.bincount(class_of, weights=counts, minlength=len(classes) + 1)
    present = [int(i) for i in np.flatnonzero(per_class[1:]) + 1]
    pixels = {classes[i - 1].name: int(per_class[i]) for i in present}
    instances = sum(1 for inst in order if inst.class_index != BACKGROUND_CLASS)
    return Composition(order, index, class_of, top, pixels, present, instances, len(classes),
                       not_painted(item, rule))


def not_painted(item: Item, rule: str) -> dict[str, int]:
    """What the item holds that no mask shows: the reader's counts (tags, attributes, ...) plus,
    under the coco rule, the labels CVAT's mask export ignores (polylines, points, ...)."""
    counts: Counter[str] = Counter(dict(item.not_painted))
    if rule == "coco":
        for lab in item.labels:
            if not _is_mask(lab):
                counts[NOT_PAINTED_KINDS[type(lab.geometry).__name__]] += 1
    return {k: v for k, v in sorted(counts.items()) if v}
