"""Fast PNG encoders, settings chosen from reference/perf.md.

Every encoder writes its own PNG container around one IDAT deflated by ISA-L (python-isal) at
level 1: 8-12x faster than zlib level 1 (what cv2's default PNG uses) on masks, for files up to
~1.7x larger (reference/perf.md; benchmarks/bench_png.py). The pixels decode identically.

- `png(array)`: 2-D uint8/uint16 (grayscale, 8 or 16 bit) or (H, W, 3) uint8 BGR (stored RGB),
  rows unfiltered (masks are runs of a few values).
- `png_palette(index, palette)`: an 8-bit paletted PNG of a class or instance index map;
  decoders expand it to exactly the RGB image, so it stands in for an RGB colour mask at a
  fraction of the cost.
- `png_bilevel(frame)`: a 1-bit grayscale PNG of a 0/255 (or 0/1) frame, decoded as 0/255 by
  every reader. Instance masks are mostly empty rows, so only the rows that hold the object are
  bit-packed; the rest is a constant row, deflated at memory speed.
- `png_photo(*images)`: an RGB PNG of photographic content, images side by side (the human
  masks: an image beside its overlay, never copied side by side): rows SUB-filtered with
  numpy, ~5x faster than cv2's default and smaller files.
- `decode_image`: image decode with OpenCV (IMREAD_COLOR: alpha dropped, 16-bit reduced to
  8-bit), EXIF orientation applied as the Supervisely SDK's `sly.image.read` does, or ignored
  (`exif=False`) as datumaro's `load_image` (IMREAD_UNCHANGED) does; only after the size read
  from the header passed the limits (never a decode of unknown size).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
from isal import isal_zlib

from .errors import ItemError, expected
from .limits import Limits, check_image_header, image_header_size


def png(array: np.ndarray) -> bytes:
    """PNG of a mask: 2-D uint8/uint16 (grayscale, 8 or 16 bit) or (H, W, 3) uint8 BGR (saved
    as RGB). Rows unfiltered, deflated by ISA-L at level 1: masks are runs of few values, and
    this is ~8x faster than cv2's default (zlib Z_RLE) for files ~1.5x larger."""
    if array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
        depth, color_type = array.dtype.itemsize * 8, 0
        rows = array.astype(">u2", copy=False) if array.dtype == np.uint16 else array
    elif array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        depth, color_type = 8, 2
        rows = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"png takes 2-D uint8/uint16 or (H, W, 3) uint8. Got {array.shape} "
                         f"{array.dtype}.")
    height, width = array.shape[:2]
    raw = np.empty((height, rows.nbytes // height + 1), np.uint8)
    raw[:, 0] = 0  # filter type None
    raw[:, 1:] = rows.reshape(height, -1).view(np.uint8)
    return _png(width, height, depth, color_type, isal_zlib.compress(raw, 1))


def png_photo(*images: np.ndarray) -> bytes:
    """RGB PNG of (H, W, 3) uint8 BGR images placed side by side (one image, or the human
    mask's image beside its overlay, with no side-by-side copy): SUB filter on every row,
    ISA-L deflate level 1. Converted, filtered and deflated in bands of rows (one stream), so
    no full-size temporary beyond the compressed bytes is made."""
    if not images:
        raise ValueError("png_photo takes at least one image. Got none.")
    height = images[0].shape[0]
    for im in images:
        if im.ndim != 3 or im.shape[0] != height or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"png_photo takes (H, W, 3) uint8 images of one height. Got "
                             f"{im.shape} {im.dtype}.")
    width = sum(im.shape[1] for im in images)
    band = max(1, min(height, _BAND_BYTES // max(1, width * 3)))
    rgb = np.empty((band, width, 3), np.uint8)
    raw = np.empty((band, width * 3 + 1), np.uint8)
    raw[:, 0] = 1  # filter type SUB: each byte minus the byte of the pixel to its left
    deflate = isal_zlib.compressobj(1)
    chunks = []
    for r0 in range(0, height, band):
        n = min(band, height - r0)
        x = 0
        for im in images:
            w = im.shape[1]
            if n * w <= _SMALL_SWAP:  # (the same bytes: BGR2RGB only swaps channels)
                rgb[:n, x:x + w] = im[r0:r0 + n, :, ::-1]
            else:
                rgb[:n, x:x + w] = cv2.cvtColor(np.ascontiguousarray(im[r0:r0 + n]),
                                                cv2.COLOR_BGR2RGB)
            x += w
        flat = rgb[:n].reshape(n, width * 3)
        raw[:n, 1:4] = flat[:, :3]
        np.subtract(flat[:, 3:], flat[:, :-3], out=raw[:n, 4:])
        chunks.append(deflate.compress(raw[:n]))
    chunks.append(deflate.flush())
    return _png(width, height, 8, 2, chunks)


_BAND_BYTES = 1 << 20  # rows per png_photo band: ~1 MB of pixels (cache-friendly, measured)
_SMALL_SWAP = 4096  # pixels up to which a numpy slice swaps channels (OpenCV's call costs more)


def _png(width: int, height: int, depth: int, color_type: int, idat: bytes | list[bytes],
         plte: bytes | None = None) -> bytes:
    """A PNG file from its deflated pixel stream, whole or in pieces (IHDR, optional PLTE, one
    IDAT, IEND), joined once (the IDAT is copied once)."""
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", *_chunk(b"IHDR", header)]
    if plte is not None:
        parts += _chunk(b"PLTE", plte)
    parts += [*_chunk(b"IDAT", idat), *_chunk(b"IEND", b"")]
    return b"".join(parts)


def _chunk(kind: bytes, data: bytes | list[bytes]) -> list[bytes]:
    pieces = [data] if isinstance(data, bytes) else data
    crc = isal_zlib.crc32(kind)  # ISA-L's CRC-32: zlib's, ~5x faster
    for piece in pieces:
        crc = isal_zlib.crc32(piece, crc)
    size = sum(len(p) for p in pieces)
    return [struct.pack(">I", size), kind, *pieces, struct.pack(">I", crc)]


def png_bilevel(frame: np.ndarray, rows: tuple[int, int] | None = None) -> bytes:
    """1-bit PNG of a 2-D frame (non-zero = white). `rows` = (first, stop) bounds the rows that
    may be non-zero (the caller knows them); other rows are written as zeros."""
    height, width = frame.shape
    row_bytes = (width + 7) // 8
    raw = np.zeros((height, 1 + row_bytes), np.uint8)  # filter byte 0 (None) on every row
    r0, r1 = rows if rows is not None else (0, height)
    if r1 > r0:
        raw[r0:r1, 1:] = np.packbits(frame[r0:r1] != 0, axis=1)
    return _png(width, height, 1, 0, isal_zlib.compress(raw, 1))


def png_palette(index: np.ndarray, palette_rgb: np.ndarray) -> bytes:
    """An 8-bit paletted PNG of a uint8 index map: decodes (cv2, Pillow .convert("RGB"),
    datumaro) to exactly the RGB image `palette_rgb[index]`, at a fraction of the cost of
    encoding that RGB image (one byte per pixel)."""
    return png_palettes(index, [palette_rgb])[0]


def png_palettes(index: np.ndarray, palettes: list[np.ndarray]) -> list[bytes]:
    """One paletted PNG per palette, all of the same index map: the pixel data is deflated
    once and shared (a class mask and an instance mask of one image differ only in colours)."""
    height, width = index.shape
    raw = np.empty((height, width + 1), np.uint8)
    raw[:, 0] = 0  # filter type None
    raw[:, 1:] = index
    idat = isal_zlib.compress(raw, 1)
    out = []
    for palette_rgb in palettes:
        pal = np.zeros((256, 3), np.uint8)
        pal[:len(palette_rgb)] = palette_rgb[:256]
        out.append(_png(width, height, 8, 3, idat, pal.tobytes()))
    return out


def decode_image(data: bytes, limits: Limits, *, name: str = "image", exif: bool = True
                 ) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 BGR, turned by its EXIF orientation when `exif` (OpenCV's
    IMREAD_COLOR, as `sly.image.read`), else as stored (IMREAD_IGNORE_ORIENTATION: the pixels
    datumaro's IMREAD_UNCHANGED gives, reduced to BGR). The size is read from the header and
    checked (`limits.check_image_header`) before OpenCV allocates anything; bytes whose size
    cannot be read are refused, and the decoded size must be the header's (EXIF rotation
    aside)."""
    w, h = check_image_header(data, limits, what=name)
    flags = cv2.IMREAD_COLOR if exif else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
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
