"""Safety limits applied while parsing untrusted input, and the checks that enforce them.

The memory budget of one item (SPEC 4, config key `limits`). Every check raises `ItemError`
with a message naming what was too big, so a hostile or broken item fails alone and in bounded
memory: sizes are checked from headers and lengths *before* anything is decoded or allocated,
and integers are checked in Python before they reach numpy or native code.

- `image_header_size(bytes)`: THE function that reads an image's size from its header (PNG by
  its IHDR, every other type through Pillow's lazy `Image.open`, which parses headers only and
  skips junk between JPEG markers as libjpeg does); `check_image_header` adds the size check,
  charging a progressive JPEG (SOF2/6/10/14 frame, read from the header) 1.5x its pixels:
  libjpeg keeps all its DCT coefficients while decoding (100 MP: ~909 MB peak, baseline
  ~624 MB), so one that fits `max_image_pixels` only uncharged fails instead of OOM-killing
  its worker. Bytes whose size cannot be read are refused: nothing reaches a decoder unchecked.
- `item_size(width, height, read_size, limits, absent=...)`: an item's checked size, as its
  annotation declares it or - when the reader's tool counts it absent - from its image's
  header through the `read_size` callable the job passes in (SPEC 3: the image is read only
  then; no callable, or no image, fails the item naming both).
- `Budget`: one item's running totals, charged by readers and the kernel as they go: pixels of
  rasters built (decoded bitmaps, RLE boxes, mask PNGs, rendered stamp windows) and points of
  shapes (per shape and per item).
- `load_json`: bounded bytes, bounded container count, bounded nesting.
- `inflate`: zlib with a hard output cap (no decompression bombs).

`max_item_seconds` bounds time, not memory: the job enforces it (jobs/watchdog.py), the kernel
never reads it. Its default, 300 s, is ~10x the slowest item the memory limits let through
(a 500k-hole polygon, ~23 CPU-s) so that a loaded worker does not stop honest items, while a
hung one costs minutes, not the job.

Defaults fit 100-megapixel images on a 1 GB worker: a JSON annotation of at most 32 MiB holds
at most 2M containers (~180 MB of Python objects), shape windows of at most 250 M pixels
(one byte each), one decoded image of 100 MP (300 MB BGR).
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
import zlib
from collections.abc import Callable
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
    max_annotation_bytes: int = 32 * 1024 * 1024
    max_objects: int = 100_000
    max_shape_pixels: int = 250_000_000  # per item: rasters parsed + stamp windows rendered
    max_shape_points: int = 1_000_000  # per shape
    max_points: int = 2_000_000  # per item
    max_rle_chars: int = 4_000_000  # one RLE's text, refused by length before decoding
    max_nodes: int = 2_000_000  # JSON containers / XML elements of one annotation
    max_depth: int = 64  # XML and YAML nesting (JSON: Python's recursion limit)
    max_object_bytes: int = 512 * 1024 * 1024  # one object read from the input
    # wall seconds of one item, reads and rendering (jobs/tasks.py, jobs/watchdog.py); 0: none
    max_item_seconds: float = 300.0


DEFAULT_LIMITS = Limits()
OPTIONAL_LIMITS = ("max_item_seconds",)  # the limits that 0 turns off (the others are > 0)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NODE_COUNT_FROM = 1 << 20  # below this size an annotation cannot hold enough nodes to matter


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


SizeReader = Callable[[], tuple[int, int]]  # (width, height) from the item's image header


def item_size(width: object, height: object, read_size: SizeReader | None, limits: Limits,
              *, absent: bool) -> tuple[int, int]:
    """The item's checked (width, height): the declared pair, or when `absent` (each reader
    decides as its reference tool does) the image header's, read by `read_size`."""
    if absent:
        if read_size is None:
            raise ItemError("Expected the image size in the annotation or an image file to "
                            "read it from. Got neither instead.")
        width, height = read_size()
    check_image_size(width, height, limits)
    assert isinstance(width, int) and isinstance(height, int)
    return width, height


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


# ---------------------------------------------------------------------------- image headers
def png_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR without decoding it; ItemError if it is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ItemError("Expected PNG data. Got bytes that are not a PNG instead.")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def image_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) of image bytes from their header, without decoding pixels.

    PNG: its IHDR (libpng requires it first). Anything else: Pillow's lazy `Image.open`, which
    reads headers only (JPEG: markers up to the frame header, junk between markers skipped as
    libjpeg skips it; BMP, TIFF, WebP, GIF, ...). ItemError when no size can be read."""
    width, height, _ = image_header(data)
    return width, height


def image_header(data: bytes) -> tuple[int, int, bool]:
    """`image_header_size` and whether the image is a progressive JPEG (its frame marker, as
    Pillow's header parse reports it)."""
    if data.startswith(PNG_SIGNATURE):
        return (*png_header_size(data), False)
    header = _pillow_header(data)
    if header is None:
        raise ItemError(expected("a readable image whose header gives its size "
                                 "(JPEG, PNG, BMP, TIFF, WebP, GIF)",
                                 f"{len(data)} bytes that do not decode (no image header)"))
    return header


def _pillow_header(data: bytes) -> tuple[int, int, bool] | None:
    """The size Pillow's format plugins read from the header, as `Image.open` finds it, but
    without its decompression-bomb refusal (whose threshold is Pillow's, not `limits`): the
    size of a huge image is read and reported, the caller refuses it."""
    from PIL import Image

    prefix = data[:16]
    Image.preinit()
    for load_all in (False, True):
        if load_all:
            Image.init()
        for ident in list(Image.ID):
            factory, accept = Image.OPEN[ident]
            try:
                if accept is not None and not accept(prefix):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im = factory(io.BytesIO(data), "")
            except Exception:  # hostile bytes: any plugin may trip on them
                continue
            width, height = im.size
            if isinstance(width, int) and isinstance(height, int):
                progressive = im.format in ("JPEG", "MPO") and bool(im.info.get("progressive"))
                return abs(width), abs(height), progressive
    return None


def check_image_header(data: bytes, limits: Limits, what: str = "image") -> tuple[int, int]:
    """`image_header_size` checked against the limits: the gate before any image decode. A
    progressive JPEG is charged 1.5x its pixels against `max_image_pixels` (module doc)."""
    width, height, progressive = image_header(data)
    check_image_size(width, height, limits, what=what)
    charged = width * height * 3 // 2
    if progressive and charged > limits.max_image_pixels:
        raise ItemError(expected(
            f"{what} of at most {limits.max_image_pixels} pixels (limits.max_image_pixels; a "
            "progressive JPEG counts 1.5x its pixels: libjpeg holds all its coefficients "
            "while decoding)",
            f"a progressive JPEG of {width}x{height} = {width * height} pixels, "
            f"counted as {charged}"))
    return width, height


# ---------------------------------------------------------------------------- one item's budget
def over_total(key: str, limit: int, total: int, unit: str, what: str,
               where: str | None = None) -> ItemError:
    """The error of an item whose running total of `unit` passed `limits.<key>` at `what`."""
    return ItemError(f"Expected shapes of at most {limit} {unit} in total (limits.{key}). "
                     f"Got {total} {unit} by {what} instead.", where=where)


class Budget:
    """One item's running costs, charged before the memory is allocated.

    `pixels(n, what)`: a raster of n pixels is about to be made (a decoded bitmap, an RLE box,
    a stamp window); the item's total must stay within `max_shape_pixels`.
    `points(n, what)`: a shape of n points; at most `max_shape_points` each and `max_points`
    per item."""

    __slots__ = ("limits", "pixel_total", "point_total")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.pixel_total = 0
        self.point_total = 0

    def pixels(self, n: int, what: str, where: str | None = None) -> None:
        self.pixel_total += n
        if self.pixel_total > self.limits.max_shape_pixels:
            raise over_total("max_shape_pixels", self.limits.max_shape_pixels,
                             self.pixel_total, "pixels", what, where)

    def points(self, n: int, what: str = "a shape", where: str | None = None) -> None:
        if n > self.limits.max_shape_points:
            raise ItemError(expected(f"{what} of at most {self.limits.max_shape_points} points "
                                     "(limits.max_shape_points)", f"{n} points"), where=where)
        self.point_total += n
        if self.point_total > self.limits.max_points:
            raise over_total("max_points", self.limits.max_points, self.point_total, "points",
                             what, where)

    def rle_chars(self, n: int, where: str | None = None) -> None:
        """An RLE text of n characters, refused by its length before it is split or decoded."""
        if n > self.limits.max_rle_chars:
            raise ItemError(expected(f"RLE counts of at most {self.limits.max_rle_chars} "
                                     "characters (limits.max_rle_chars)", f"{n} characters"),
                            where=where)


# ---------------------------------------------------------------------------- bounded parsers
def inflate(data: bytes, limits: Limits, what: str = "compressed data") -> bytes:
    """zlib-decompress with a hard output cap (no decompression bombs); zlib.error if not zlib."""
    d = zlib.decompressobj()
    out = d.decompress(data, limits.max_inflated_bytes)
    if d.unconsumed_tail:
        raise ItemError(
            f"Expected {what} that inflates to at most {limits.max_inflated_bytes} "
            "bytes. Got more instead (a decompression bomb?)."
        )
    return out


def check_annotation_bytes(data: bytes, limits: Limits, what: str, opener: bytes) -> None:
    """An annotation's size, and - when it is big enough to matter - its node count (`opener`
    characters, an upper bound of the JSON containers or XML elements it makes), before it is
    parsed: a parse costs up to ~100 bytes of objects per node."""
    if len(data) > limits.max_annotation_bytes:
        raise ItemError(expected(f"{what} of at most {limits.max_annotation_bytes} bytes "
                                 "(limits.max_annotation_bytes)", f"{len(data)} bytes"))
    if len(data) > NODE_COUNT_FROM:
        nodes = sum(data.count(c) for c in (opener[i:i + 1] for i in range(len(opener))))
        if nodes > limits.max_nodes:
            raise ItemError(expected(f"{what} of at most {limits.max_nodes} nodes "
                                     "(limits.max_nodes)", f"up to {nodes} nodes"))


def load_json(data: bytes, limits: Limits, what: str) -> Any:
    """Parse an item's JSON, refusing oversized input first; ItemError names `what`."""
    check_annotation_bytes(data, limits, what, b"[{")
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise ItemError(expected(f"valid {what}", str(e))) from None
    except RecursionError:
        raise ItemError(expected(f"{what} of a sane nesting depth",
                                 "nesting deeper than the parser's recursion limit")) from None
