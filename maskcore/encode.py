"""Fast PNG encoders, settings chosen from reference/perf.md.

- `png(array)`: `cv2.imencode` with DEFAULT parameters (level 1 + RLE + SUB inside OpenCV: 3-5x
  faster than Pillow's defaults; setting a compression level explicitly would lose that).
  Accepts 2-D uint8/uint16 (grayscale, 8 or 16 bit) and (H, W, 3) uint8 BGR.
- `png_palette(index, palette)`: an 8-bit paletted PNG of a class or instance index map;
  decoders expand it to exactly the RGB image, so it stands in for an RGB colour mask at a
  fraction of the cost.
- `png_bilevel(frame)`: a 1-bit grayscale PNG of a 0/255 (or 0/1) frame, decoded as 0/255 by
  every reader. Instance masks are mostly empty rows, so only the rows that hold the object are
  bit-packed; the rest is a constant row, and zlib at level 1 eats it at memory speed.
- `decode_image`: image decode with OpenCV, as the Supervisely SDK reads images
  (IMREAD_COLOR: EXIF orientation applied, alpha dropped, 16-bit reduced to 8-bit), only after
  the size read from the header passed the limits (never a decode of unknown size).
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from .errors import ItemError, expected
from .limits import Limits, check_image_header, image_header_size


def png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"cv2.imencode failed for an array of shape {array.shape}")
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bilevel(frame: np.ndarray, rows: tuple[int, int] | None = None) -> bytes:
    """1-bit PNG of a 2-D frame (non-zero = white). `rows` = (first, stop) bounds the rows that
    may be non-zero (the caller knows them); other rows are written as zeros."""
    height, width = frame.shape
    row_bytes = (width + 7) // 8
    raw = np.zeros((height, 1 + row_bytes), np.uint8)  # filter byte 0 (None) on every row
    r0, r1 = rows if rows is not None else (0, height)
    if r1 > r0:
        raw[r0:r1, 1:] = np.packbits(frame[r0:r1] != 0, axis=1)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", header),
        _chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)),
        _chunk(b"IEND", b""),
    ))


def png_palette(index: np.ndarray, palette_rgb: np.ndarray) -> bytes:
    """An 8-bit paletted PNG of a uint8 index map: decodes (cv2, Pillow .convert("RGB"),
    datumaro) to exactly the RGB image `palette_rgb[index]`, at a fraction of the cost of
    encoding that RGB image (one byte per pixel, runs deflated with Z_RLE)."""
    return png_palettes(index, [palette_rgb])[0]


def png_palettes(index: np.ndarray, palettes: list[np.ndarray]) -> list[bytes]:
    """One paletted PNG per palette, all of the same index map: the pixel data is deflated
    once and shared (a class mask and an instance mask of one image differ only in colours)."""
    height, width = index.shape
    raw = np.zeros((height, width + 1), np.uint8)  # filter byte 0 (None) on every row
    raw[:, 1:] = index
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = _chunk(b"IDAT", z.compress(raw.tobytes()) + z.flush())
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
    out = []
    for palette_rgb in palettes:
        pal = np.zeros((256, 3), np.uint8)
        pal[:len(palette_rgb)] = palette_rgb[:256]
        out.append(b"".join((b"\x89PNG\r\n\x1a\n", ihdr, _chunk(b"PLTE", pal.tobytes()),
                             idat, _chunk(b"IEND", b""))))
    return out


def decode_image(data: bytes, limits: Limits, *, name: str = "image") -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 BGR. The size is read from the header and checked
    (`limits.check_image_header`) before OpenCV allocates anything; bytes whose size cannot be
    read are refused, and the decoded size must be the header's (EXIF rotation aside)."""
    w, h = check_image_header(data, limits, what=name)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # OPENCV_IO_MAX_IMAGE_PIXELS (maskcore/__init__.py) and the like
        raise ItemError(expected(f"a decodable {name}",
                                 str(e).strip().splitlines()[-1])) from None
    if img is None:
        raise ItemError(expected(f"a readable {name} (JPEG, PNG, BMP, TIFF or WebP)",
                                 f"{len(data)} bytes that do not decode"))
    if img.shape[:2] not in ((h, w), (w, h)):  # (w, h): EXIF orientation turned it
        raise ItemError(expected(f"{name} decoding to its header's size {w}x{h}",
                                 f"{img.shape[1]}x{img.shape[0]}"))
    return img


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image header, None if unreadable (kept for jobs/listing_cvat;
    new code calls `limits.image_header_size`)."""
    try:
        return image_header_size(data)
    except ItemError:
        return None
