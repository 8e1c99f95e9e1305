"""Safety limits applied while parsing untrusted input, and the checks that enforce them.

Every check raises `ItemError` with a message naming what was too big, so a hostile or broken
item fails alone and in bounded memory: sizes are checked from headers *before* anything is
decoded or allocated.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import ItemError, expected


@dataclass(frozen=True)
class Limits:
    """Upper bounds for one item. Defaults fit 100-megapixel images on a 1 GB worker."""

    max_image_pixels: int = 100_000_000
    max_image_side: int = 65_535
    max_coordinate: float = 1_000_000.0
    max_inflated_bytes: int = 256 * 1024 * 1024
    max_annotation_bytes: int = 512 * 1024 * 1024
    max_objects: int = 100_000


DEFAULT_LIMITS = Limits()

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_image_size(width: object, height: object, limits: Limits, what: str = "image") -> None:
    """Refuse a declared size that is not a pair of positive ints or is absurdly large."""
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ItemError(expected(f"{what} {name} to be a positive integer", v))
        if v > limits.max_image_side:
            raise ItemError(expected(f"{what} {name} <= {limits.max_image_side}", v))
    assert isinstance(width, int) and isinstance(height, int)
    if width * height > limits.max_image_pixels:
        raise ItemError(
            expected(
                f"{what} of at most {limits.max_image_pixels} pixels",
                f"{width}x{height} = {width * height} pixels",
            )
        )


def check_coordinate(v: object, limits: Limits, where: str) -> float:
    """A finite number within +-max_coordinate, returned as float."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ItemError(expected("a number", v), where=where)
    f = float(v)
    if not math.isfinite(f):
        raise ItemError(expected("a finite coordinate", v), where=where)
    if abs(f) > limits.max_coordinate:
        raise ItemError(expected(f"a coordinate within +-{limits.max_coordinate:g}", v),
                        where=where)
    return f


def png_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR without decoding it; ItemError if it is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ItemError("Expected PNG data. Got bytes that are not a PNG instead.")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def inflate(data: bytes, limits: Limits) -> bytes:
    """zlib-decompress with a hard output cap (no decompression bombs); zlib.error if not zlib."""
    d = zlib.decompressobj()
    out = d.decompress(data, limits.max_inflated_bytes)
    if d.unconsumed_tail:
        raise ItemError(
            f"Expected compressed data that inflates to at most {limits.max_inflated_bytes} "
            "bytes. Got more instead (a decompression bomb?)."
        )
    return out


def load_json(data: bytes, limits: Limits, what: str) -> Any:
    """Parse an item's JSON, refusing oversized input first; ItemError names `what`."""
    if len(data) > limits.max_annotation_bytes:
        raise ItemError(expected(f"{what} of at most {limits.max_annotation_bytes} bytes",
                                 f"{len(data)} bytes"))
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ItemError(expected(f"valid {what}", str(e))) from None
