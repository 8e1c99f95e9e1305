"""EXIF-oriented JPEGs: every reader decodes the image as its tool does, and an annotation that
has the size its tool would have stored does not fail its item.

- Supervisely: `sly.image.read` is cv2.imread(IMREAD_COLOR): EXIF orientation applied.
- CVAT XML / Segmentation Mask 1.1 / COCO (datumaro): `load_image` is cv2 IMREAD_UNCHANGED:
  the pixels as stored, EXIF orientation ignored (reference/cvat_clearml.md).
The references are emulated here by their documented decode calls."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from maskcore.encode import decode_image
from maskcore.errors import ItemError
from maskcore.formats import coco, cvat, supervisely, supervisely_masks
from maskcore.formats.base import ItemContext
from maskcore.limits import Limits, check_image_header, image_header
from maskcore.model import ClassInfo, ClassTable, Item, Label, Rectangle
from tests.conftest import exif_jpeg

W, H = 48, 32  # stored size; orientations 5-8 show it as 32x48
CLASSES = ClassTable((ClassInfo("car", (255, 0, 0)),))


def reference(data: bytes, reader: object) -> np.ndarray:
    """The BGR pixels the reader's tool decodes."""
    buf = np.frombuffer(data, np.uint8)
    if reader is supervisely:  # sly.image.read: cv2.imread(path, IMREAD_COLOR) (+ BGR2RGB)
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # datumaro load_image


def context(data: bytes, reader: object, width: int, height: int) -> ItemContext:
    item = Item("d", "a.jpg", width, height, (Label(0, Rectangle(2, 2, 9, 9)),),
                image_key="d/a.jpg")
    return ItemContext(item, CLASSES, lambda: data, rule=reader.RULE, exif=reader.EXIF)


def tool_size(orientation: int, reader: object) -> tuple[int, int]:
    """The size the tool would have stored: the decoded image's (Supervisely's export app sizes
    its human mask canvas from the annotation and places the decoded image beside it)."""
    turned = reader is supervisely and orientation >= 5
    return (H, W) if turned else (W, H)


READERS = [supervisely, cvat, coco]


@pytest.mark.parametrize("reader", READERS, ids=lambda m: m.NAME)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_pixels_equal_the_tools(reader, orientation):
    data = exif_jpeg(orientation)
    ctx = context(data, reader, *tool_size(orientation, reader))
    want = reference(data, reader)
    got = ctx.image()
    assert got.shape == want.shape and (got == want).all()
    if orientation != 1:  # the two tools' pixels differ for every other orientation
        other = reference(data, cvat if reader is supervisely else supervisely)
        assert other.shape != got.shape or (other != got).any()


@pytest.mark.parametrize("reader", READERS, ids=lambda m: m.NAME)
@pytest.mark.parametrize("orientation", range(5, 9))
def test_an_annotation_drawn_on_the_other_orientation_still_decodes(reader, orientation):
    """EXIF 5-8 turn width and height: an annotation with the other orientation's size (a
    Supervisely image uploaded with its stored size; a CVAT task whose frame size is the
    turned one) was drawn on that orientation, which is decoded instead of failing."""
    data = exif_jpeg(orientation)
    w, h = tool_size(orientation, reader)
    got = context(data, reader, h, w).image()
    want = reference(data, cvat if reader is supervisely else supervisely)
    assert got.shape == (w, h, 3) and (got == want).all()


def test_a_size_matching_neither_orientation_still_fails():
    with pytest.raises(ItemError, match="Expected the image to be 40x40"):
        context(exif_jpeg(6), cvat, 40, 40).image()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_supervisely_human_mask_shows_the_sdk_decoded_image(orientation):
    data = exif_jpeg(orientation)
    ctx = context(data, supervisely, *tool_size(orientation, supervisely))
    out = supervisely_masks.write_item(ctx, supervisely_masks.SuperviselyOptions(
        images=False, annotations=False))
    human = next(b for b in out.blobs if "/masks_human/" in b.key)
    png = cv2.imdecode(np.frombuffer(human.data, np.uint8), cv2.IMREAD_COLOR)
    want = reference(data, supervisely)
    h, w = want.shape[:2]
    assert png.shape == (h, 2 * w, 3) and (png[:, :w] == want).all()


def test_without_exif_both_decodes_are_the_same():
    _, buf = cv2.imencode(".jpg", np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3))
    data = buf.tobytes()
    assert (context(data, supervisely, W, H).image() == context(data, coco, W, H).image()).all()
    assert context(data, cvat, W, H).image().shape == (H, W, 3)


# ---------------------------------------------------------------------------- progressive JPEGs
def jpeg(progressive: bool, size: tuple[int, int] = (200, 100)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, "JPEG", progressive=progressive)
    return buf.getvalue()


def test_a_progressive_jpeg_is_charged_half_again_before_decoding():
    """200x100 = 20000 pixels: a baseline JPEG fits 20000, a progressive one counts 30000
    (libjpeg keeps all its coefficients: ~909 MB peak at 100 MP against ~624 MB)."""
    limits = Limits(max_image_pixels=20_000)
    baseline, progressive = jpeg(False), jpeg(True)
    assert progressive[:2] == b"\xff\xd8" and b"\xff\xc2" in progressive  # SOF2
    assert image_header(baseline) == (200, 100, False)
    assert image_header(progressive) == (200, 100, True)
    assert check_image_header(baseline, limits) == (200, 100)
    assert decode_image(baseline, limits).shape == (100, 200, 3)
    with pytest.raises(ItemError, match=r"at most 20000 pixels \(limits\.max_image_pixels; a "
                                        r"progressive JPEG counts 1\.5x.* 200x100 = 20000 "
                                        r"pixels, counted as 30000"):
        decode_image(progressive, limits, name="image a.jpg")
    assert check_image_header(progressive, Limits(max_image_pixels=30_000)) == (200, 100)

