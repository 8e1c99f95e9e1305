"""Encoders, compositing arithmetic, output-path safety, and the purity of maskcore."""

from __future__ import annotations

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from maskcore import compose, encode, paths
from maskcore.errors import ItemError
from maskcore.rasterize import Stamp


def test_bilevel_png_decodes_to_the_frame_in_cv2_and_pillow():
    f = np.zeros((37, 29), np.uint8)
    f[5:20, 3:27] = 255
    data = encode.png_bilevel(f, (5, 20))
    assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) == f).all()
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("L")) == f).all()


def test_sixteen_bit_png_round_trips():
    m = np.arange(600, dtype=np.uint16).reshape(20, 30)
    back = cv2.imdecode(np.frombuffer(encode.png(m), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and (back == m).all()


def test_alpha_blend_matches_the_sdk_float_formula():
    """canvas*(1-a) + a*colour in float64, a = alpha/255, truncated, only where alpha > 0."""
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    alpha[0, 0] = 0
    s = Stamp(0, 0, 0, (alpha > 0).astype(np.uint8), alpha=alpha)
    got = compose.paint_colors(canvas.copy(), [s], [(10, 200, 77)])
    a = alpha / 255.0
    want = canvas.copy()
    for ch, c in enumerate((77, 200, 10)):  # BGR
        plane = want[:, :, ch]
        plane[alpha > 0] = (plane * (1 - a) + a * np.where(alpha > 0, c, 0))[alpha > 0]
    assert (got == want).all() and got[0, 0].tolist() == canvas[0, 0].tolist()


def test_cumulative_blend_is_floor_of_half_sum_per_label():
    img = np.full((4, 4, 3), 101, np.uint8)
    s = Stamp(0, 1, 1, np.ones((2, 2), np.uint8))
    out = compose.blend_cumulative(img.copy(), [s, s], [(0, 0, 0), (255, 255, 255)])
    assert out[1, 1].tolist() == [(50 + 255) // 2] * 3 and out[0, 0].tolist() == [101] * 3


def _blend_reference(canvas, stamps, colors):
    """The app's overlay written the plain way: paint a copy, average in uint16."""
    for s, c in zip(stamps, colors, strict=True):
        region = canvas[s.window]
        painted = region.copy()
        compose.paint_colors(painted, [Stamp(s.label, 0, 0, s.parts, s.colors, s.alpha)], [c])
        region[...] = (region.astype(np.uint16) + painted) >> 1
    return canvas


def test_cumulative_blend_equals_paint_then_average_on_windows_of_a_view():
    """The one-colour fast path (OpenCV bit arithmetic on windows) against the plain formula:
    windows touching every border, 1-pixel and empty ones, overlapping labels, a multi-colour
    template and an alpha mask (general path), on the right half of a side-by-side canvas."""
    rng = np.random.default_rng(7)
    h, w = 23, 31
    stamps = [Stamp(0, 0, 0, (rng.random((h, w)) > 0.5).astype(np.uint8)),
              Stamp(1, w - 1, 0, np.ones((h, 1), np.uint8)),
              Stamp(2, 5, h - 1, np.ones((1, 7), np.uint8)),
              Stamp(3, 3, 4, np.zeros((0, 0), np.uint8)),
              Stamp(4, 10, 10, (rng.random((9, 12)) > 0.3).astype(np.uint8)),
              Stamp(5, 2, 2, rng.integers(0, 3, (6, 6)).astype(np.uint8),
                    colors=((1, 2, 3), None)),
              Stamp(6, 4, 3, np.ones((5, 5), np.uint8),
                    alpha=rng.integers(0, 256, (5, 5)).astype(np.uint8)),
              Stamp(7, 9, 9, np.ones((1, 1), np.uint8))]  # cv2 returned (4, 1) float64
    colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in stamps]
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    both = np.concatenate([image, image], axis=1)
    compose.blend_cumulative(both[:, w:], stamps, colors)
    want = _blend_reference(image.copy(), stamps, colors)
    assert (both[:, :w] == image).all() and (both[:, w:] == want).all()


def test_photo_png_decodes_to_the_image_across_bands(monkeypatch):
    """png_photo deflates bands of rows into one stream: a band size that does not divide
    the height still decodes to exactly the image (cv2 and Pillow)."""
    monkeypatch.setattr(encode, "_BAND_BYTES", 5 * 13 * 3)  # 5 rows a band
    img = np.random.default_rng(3).integers(0, 256, (17, 13, 3)).astype(np.uint8)
    data = encode.png_photo(img)
    assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) == img).all()
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1] == img).all()
    # parts side by side (a 1-pixel column as a broadcast view among them): no hstack copy
    green = np.broadcast_to(np.array((0, 255, 0), np.uint8), (17, 1, 3))
    data = encode.png_photo(img, green, img[:, ::-1])
    want = np.hstack([img, green, img[:, ::-1]])
    assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) == want).all()
    with pytest.raises(ValueError, match="one height"):
        encode.png_photo(img, img[1:])


def test_flat_blend_keeps_image_where_fg_is_black():
    img = np.full((2, 2, 3), 9, np.uint8)
    fg = np.zeros_like(img)
    fg[0, 0] = (1, 1, 1)
    out = compose.blend_flat(img, fg)
    assert out[0, 0].tolist() == [5, 5, 5] and out[1, 1].tolist() == [9, 9, 9]


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../../b", "a\\b", "c:/x", "a//b", ""])
def test_keys_never_escape_the_root(bad):
    with pytest.raises(ItemError):
        paths.check_relative(bad)


def test_untrusted_names_become_single_components():
    assert paths.component("a/b") == "a_b" and paths.component("..") == "_.."
    assert paths.join("supervisely", "ds", "masks", paths.component("../../etc")) == \
        "supervisely/ds/masks/.._.._etc"


def test_maskcore_never_imports_dask_or_fsspec():
    code = ("import sys, maskcore, maskcore.formats, maskcore.compose, maskcore.encode, "
            "maskcore.manifest, maskcore.crop; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed', 'fsspec', 's3fs', 'jobs')]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_paletted_pngs_decode_to_the_rgb_images_in_cv2_and_pillow():
    """Two palettes over one index map (class and instance colours) share their pixel data and
    each decodes to exactly palette[index]."""
    rng = np.random.default_rng(5)
    index = rng.integers(0, 7, (33, 47), dtype=np.uint8)
    pals = [rng.integers(0, 256, (7, 3), dtype=np.uint8), rng.integers(0, 256, (256, 3),
                                                                        dtype=np.uint8)]
    for data, pal in zip(encode.png_palettes(index, pals), pals, strict=True):
        rgb = pal[index]
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert (bgr[:, :, ::-1] == rgb).all()
        assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == rgb).all()
