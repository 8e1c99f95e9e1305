"""What every writer gets and gives: the per-item context and the output blobs.

`ItemContext` is made once per item by the task. It renders stamps lazily, once per
(rule, thickness, templated) - so several formats share one rendering - and decodes the image
lazily, only if some output needs pixels. Writers return `Blob`s (key relative to the output
root, bytes) and never touch storage; `jobs/tasks.py` writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..encode import decode_image
from ..errors import ItemError
from ..limits import DEFAULT_LIMITS, Limits
from ..model import ClassTable, Item
from ..rasterize import Stamp, render

PACK_MAGIC = b"MJPARTS1"


def pack_parts(parts: list[bytes]) -> bytes:
    """Several input files of one item as one bytes (readers take one): magic, count, sizes."""
    head = PACK_MAGIC + len(parts).to_bytes(4, "big")
    return b"".join([head, *(len(p).to_bytes(8, "big") for p in parts), *parts])


def unpack_parts(data: bytes) -> list[bytes]:
    if not data.startswith(PACK_MAGIC) or len(data) < 12:
        raise ItemError("Expected packed item files. Got other bytes instead.")
    n = int.from_bytes(data[8:12], "big")
    sizes = [int.from_bytes(data[12 + 8 * k:20 + 8 * k], "big") for k in range(n)]
    pos, out = 12 + 8 * n, []
    for size in sizes:
        out.append(data[pos:pos + size])
        pos += size
    if pos != len(data):
        raise ItemError("Expected packed item files. Got truncated bytes instead.")
    return out


@dataclass(frozen=True)
class Blob:
    key: str
    data: bytes


@dataclass
class ItemOutput:
    """A writer's result for one item: blobs to write and facts for the manifest."""

    blobs: list[Blob] = field(default_factory=list)
    class_pixels: dict[str, int] | None = None
    instances: int | None = None


@dataclass
class ItemContext:
    item: Item
    classes: ClassTable
    read_image: Callable[[], bytes] | None = None
    ann_bytes: bytes | None = None
    limits: Limits = DEFAULT_LIMITS
    rule: str = "opencv"
    output_uri: Callable[[str], str] = str  # output key -> its final URL (for frame lists)
    input_uri: Callable[[str], str] = str  # input key -> its URL (image sources)
    _stamps: dict[tuple[str, int, bool], list[Stamp | None]] = field(default_factory=dict)
    _image: np.ndarray | None = None
    _image_bytes: bytes | None = None

    def stamps(self, *, thickness: int = 2, templated: bool = False, rule: str | None = None
               ) -> list[Stamp | None]:
        """Stamps of every label, rendered once per (rule, thickness, templated); the rule
        defaults to the one of the tool the annotations came from (SPEC 2.5)."""
        rule = rule or self.rule
        if rule == "coco":
            thickness, templated = 1, False  # no strokes or templates under pycocotools' rule
        key = (rule, thickness, templated)
        if key not in self._stamps:
            self._stamps[key] = render(self.item, self.classes, rule=rule, thickness=thickness,
                                       templated=templated,
                                       max_pixels=self.limits.max_shape_pixels)
        return self._stamps[key]

    def image_bytes(self) -> bytes:
        if self._image_bytes is None:
            if self.read_image is None or self.item.image_key is None:
                raise ItemError("Expected an image file for this item. Got none instead.")
            self._image_bytes = self.read_image()
        return self._image_bytes

    def image(self) -> np.ndarray:
        """The decoded image (BGR), which must have the annotation's size."""
        if self._image is None:
            img = decode_image(self.image_bytes(), self.limits, name=f"image {self.item.name}")
            h, w = img.shape[:2]
            if (w, h) != (self.item.width, self.item.height):
                raise ItemError(
                    f"Expected the image to be {self.item.width}x{self.item.height} as its "
                    f"annotation says. Got {w}x{h} instead."
                )
            self._image = img
        return self._image
