"""The preview decodes input images on the driver only after reading their size from the
header, and reduced: a JPEG through libjpeg's DCT scaling, anything else only when small; a
tiny file declaring a huge image, or an image of another size than its mask, is never decoded."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from jobs import preview
from jobs.storage import Root


def _entry(key: str) -> dict:
    return {"inputs": {"image": {"key": key}}}


def _huge_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")


def test_a_big_jpeg_is_decoded_reduced(tmp_path):
    img = np.full((2400, 3200, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    got = preview._image_of(Root(str(tmp_path)), _entry("a.jpg"), (2400, 3200))
    assert got is not None and got.shape == (300, 400, 3)  # 1/8: DCT scaling


def test_huge_declared_or_mismatched_images_are_not_decoded(tmp_path):
    (tmp_path / "huge.png").write_bytes(_huge_png())
    root = Root(str(tmp_path))
    assert preview._image_of(root, _entry("huge.png"), (30000, 30000)) is None
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((20, 30, 3), np.uint8))
    assert preview._image_of(root, _entry("small.png"), (40, 30)) is None  # not the mask's
    assert preview._image_of(root, _entry("small.png"), (20, 30)).shape == (20, 30, 3)


def test_a_big_png_is_not_decoded_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.setattr(preview, "PREVIEW_DECODE_PIXELS", 1000)
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((40, 50, 3), np.uint8))
    assert preview._image_of(Root(str(tmp_path)), _entry("b.png"), (40, 50)) is None


def test_exif_photos_are_shown_as_the_input_tool_decodes_them(tmp_path):
    """The preview shows an EXIF-rotated photo as the worker decoded it for its masks: turned
    for Supervisely inputs (sly.image.read), as stored for CVAT/COCO (datumaro), and the
    other way when only that one has the mask's size (EXIF 5-8)."""
    from tests.conftest import exif_jpeg

    root = Root(str(tmp_path))
    for orientation in range(1, 9):
        data = exif_jpeg(orientation)
        (tmp_path / f"o{orientation}.jpg").write_bytes(data)
        buf = np.frombuffer(data, np.uint8)
        turned = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        stored = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        for exif, want, other in ((True, turned, stored), (False, stored, turned)):
            got = preview._image_of(root, _entry(f"o{orientation}.jpg"), want.shape[:2], exif)
            assert got is not None and np.array_equal(got, want), (orientation, exif)
            if other.shape != want.shape:  # EXIF 5-8: a mask of the other orientation
                got = preview._image_of(root, _entry(f"o{orientation}.jpg"),
                                        other.shape[:2], exif)
                assert got is not None and np.array_equal(got, other), (orientation, exif)
