"""Hostile inputs against the kernel and the readers: each is built here, byte by byte, and must
fail its item alone (ItemError naming what was too big), fast and in bounded memory - never a
decode of unknown size, a numpy overflow, a native crash or a quadratic parse (SPEC 4).

The memory claims are checked in a subprocess whose address space is capped (RLIMIT_AS) at
1.5 GB: the hostile inputs that used to allocate gigabytes must fail there with their reason.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from maskcore import rasterize, runs
from maskcore.encode import decode_image, png_bilevel
from maskcore.errors import InputError, ItemError, expected, shown
from maskcore.formats import coco, cvat, supervisely
from maskcore.limits import DEFAULT_LIMITS, Budget, Limits, image_header_size, load_json
from maskcore.model import (
    ClassInfo,
    ClassTable,
    CocoPolygon,
    Item,
    Label,
    Polygon,
    Polyline,
    Rectangle,
)

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- image bytes
def jpeg_header(width: int, height: int, junk: bytes = b"") -> bytes:
    """A JPEG whose frame header (SOF0) declares width x height, followed by a few hundred
    bytes of scan: about 700 bytes that libjpeg would decode at the declared size. `junk`
    goes between two markers, where libjpeg skips it (with a warning)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + \
        b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    dht = b"".join(b"\xff\xc4" + struct.pack(">H", 20) + bytes([tc]) + bytes([1] + [0] * 15)
                   + b"\x00" for tc in (0x00, 0x10))
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x00\x03\x00\x00\x3f\x00"
    return b"\xff\xd8" + app0 + junk + dqt + sof + dht + sos + b"\x00" * 500 + b"\xff\xd9"


def bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP declaring width x height, with no pixel data at all (54 bytes)."""
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame are width x height, one LZW code of data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose first IFD says width x height, 8-bit gray, one strip."""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
            (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height),
            (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in tags)
    return b"II*\x00" + struct.pack("<I", 24) + b"\x00" * 16 + ifd + b"\x00\x00\x00\x00"


def webp_header(width: int, height: int) -> bytes:
    """An extended WebP (VP8X) whose canvas is width x height, with no image chunk."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + \
        (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def png_header(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG whose IHDR says width x height and whose IDAT holds nothing useful."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


HUGE = [
    ("jpeg", jpeg_header(20000, 20000)),
    ("jpeg with junk between markers", jpeg_header(20000, 20000, junk=b"\x00\x13\x37")),
    ("jpeg with fill bytes", jpeg_header(20000, 20000, junk=b"\xff\xff\xff")),
    ("bmp", bmp_header(20000, 20000)),
    ("bmp bottom-up negative", bmp_header(20000, -20000)),
    ("gif", gif_header(65535, 65535)),
    ("tiff", tiff_header(20000, 20000)),
    ("webp", webp_header(16384, 16384)),
    ("png", png_header(20000, 20000)),
]


@pytest.mark.parametrize(("kind", "data"), HUGE, ids=[k for k, _ in HUGE])
def test_a_tiny_file_declaring_a_huge_image_is_refused_before_decoding(kind, data):
    assert len(data) < 1024
    t = time.process_time()
    with pytest.raises(ItemError) as e:
        decode_image(data, DEFAULT_LIMITS, name="image x.jpg")
    assert time.process_time() - t < 10.0
    assert "image x.jpg" in str(e.value) or "sane size" in str(e.value) or \
        "do not decode" in str(e.value)


@pytest.mark.parametrize("kind", ["jpeg", "jpeg with junk between markers", "bmp", "tiff", "gif"])
def test_the_header_size_is_read_for_every_image_type(kind):
    data = dict(HUGE)[kind]
    w, h = image_header_size(data)
    assert w * h >= 20000 * 20000


def test_unidentifiable_bytes_never_reach_the_decoder():
    for data in (b"", b"\xff\xd8", b"GIF89a", b"hello world" * 10, b"\x00" * 64):
        with pytest.raises(ItemError, match="do not decode"):
            decode_image(data, DEFAULT_LIMITS)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp"])
def test_ordinary_images_still_decode(ext):
    img = np.zeros((30, 40, 3), np.uint8)
    img[5:10, 5:20] = (10, 200, 30)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    out = decode_image(buf.tobytes(), DEFAULT_LIMITS)
    assert out.shape == (30, 40, 3)


def test_an_exif_rotated_jpeg_decodes_turned_as_opencv_does():
    im = Image.new("RGB", (40, 30), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    assert image_header_size(buf.getvalue()) == (40, 30)
    assert decode_image(buf.getvalue(), DEFAULT_LIMITS).shape == (40, 30, 3)


# ---------------------------------------------------------------------------- CVAT XML
CVAT_CLASSES = ClassTable((ClassInfo("car", (255, 0, 0)),))


def cvat_item(shapes: str, width: int = 100, height: int = 80, limits: Limits = DEFAULT_LIMITS):
    data = f'<image id="0" name="a.jpg" width="{width}" height="{height}">{shapes}</image>'
    return cvat.parse_item(data.encode(), CVAT_CLASSES, dataset="default", name="a.jpg",
                           limits=limits)


def test_cvat_mask_rle_whose_total_wraps_int64_fails_its_item():
    # 2**63 - 1 twice plus 4 wraps to 2 in int64: numpy summed it to width x height, and
    # np.repeat segfaulted the worker
    runs = f"{2**63 - 1}, {2**63 - 1}, 4"
    with pytest.raises(ItemError, match="adding up to width x height = 2"):
        cvat_item(f'<mask label="car" rle="{runs}" left="0" top="0" width="2" height="1"/>')


@pytest.mark.parametrize(("runs", "needle"), [
    ("-5, 7", "non-negative"),
    ("1, 2, x", "comma-separated integers"),
    ("9" * 5000, "comma-separated integers"),  # past Python's int digit limit
    ("3, 3", "adding up to"),
])
def test_cvat_mask_rle_malformed_runs_fail_the_item(runs, needle):
    with pytest.raises(ItemError, match=needle):
        cvat_item(f'<mask label="car" rle="{runs}" left="0" top="0" width="2" height="1"/>')


def test_cvat_mask_rle_of_thirty_million_characters_is_refused_by_its_length():
    runs = "0, " + "1, 0, " * 5_000_000
    t = time.process_time()
    with pytest.raises(ItemError, match=r"limits\.max_rle_chars"):
        cvat_item(f'<mask label="car" rle="{runs}" left="0" top="0" width="100" height="80"/>',
                  limits=Limits(max_annotation_bytes=64 << 20))
    assert time.process_time() - t < 10.0  # mostly parsing the 30 MB of XML


def test_cvat_ellipse_with_negative_radius_fails_instead_of_an_opencv_assertion():
    with pytest.raises(ItemError, match="radii"):
        cvat_item('<ellipse label="car" cx="10" cy="10" rx="-5" ry="3"/>')


def test_cvat_ellipse_with_huge_radii_is_clipped_to_the_image():
    item = cvat_item('<ellipse label="car" cx="10" cy="10" rx="900000" ry="900000"/>')
    stamps = rasterize.render(item, CVAT_CLASSES, rule="coco")
    assert stamps[0] is not None and stamps[0].parts.shape == (80, 100)


def test_cvat_polygon_points_are_counted_before_they_are_split():
    points = ";".join("1,1" for _ in range(2000))
    with pytest.raises(ItemError, match=r"limits\.max_shape_points"):
        cvat_item(f'<polygon label="car" points="{points}"/>',
                  limits=Limits(max_shape_points=1000))
    polys = "".join(f'<polygon label="car" points="{";".join(["1,1"] * 600)}"/>'
                    for _ in range(4))
    with pytest.raises(ItemError, match=r"limits\.max_points"):
        cvat_item(polys, limits=Limits(max_shape_points=1000, max_points=2000))


def test_cvat_points_shapes_cannot_expand_past_max_objects():
    points = ";".join(f"{i % 90},{i % 70}" for i in range(50))
    with pytest.raises(ItemError, match="at most 20 objects"):
        cvat_item(f'<points label="car" points="{points}"/>', limits=Limits(max_objects=20))


def test_cvat_masks_of_an_item_share_one_pixel_budget():
    one = '<mask label="car" rle="0, 400" left="0" top="0" width="20" height="20"/>'
    assert len(cvat_item(one * 2, limits=Limits(max_shape_pixels=1000)).labels) == 2
    with pytest.raises(ItemError, match=r"limits\.max_shape_pixels"):
        cvat_item(one * 3, limits=Limits(max_shape_pixels=1000))


def cvat_task(images: str, meta_depth: int = 0) -> bytes:
    meta = ("<meta><task><labels><label><name>car</name><color>#ff0000</color></label>"
            "</labels></task></meta>")
    return f"<?xml version='1.0'?><annotations>{meta}{images}</annotations>".encode()


def test_cvat_listing_refuses_deep_nesting():
    deep = "<a>" * 5000 + "</a>" * 5000
    data = cvat_task(f'<image id="0" name="a.jpg" width="4" height="4">{deep}</image>')
    with pytest.raises(InputError, match=r"limits\.max_depth"):
        list(cvat.iter_task(io.BytesIO(data)))


def test_cvat_listing_of_one_huge_attribute_is_linear_and_bounded():
    big = "1," * (24 << 20)  # 48 MB in one attribute, read in chunks of 1 MB at first
    data = cvat_task(f'<image id="0" name="a.jpg" width="4" height="4">'
                     f'<polygon label="car" points="{big}"/></image>')
    t = time.process_time()
    with pytest.raises(InputError, match=r"limits\.max_annotation_bytes"):
        list(cvat.iter_task(io.BytesIO(data), Limits(max_annotation_bytes=32 << 20)))
    assert time.process_time() - t < 10.0  # quadratic rescans took minutes
    # below the cap it is read whole, and the next image still comes
    data = cvat_task('<image id="0" name="a.jpg" width="4" height="4">'
                     f'<polygon label="car" points="{"1,1;" * (3 << 20)}"/></image>'
                     '<image id="1" name="b.jpg" width="4" height="4"/>')
    got = list(cvat.iter_task(io.BytesIO(data)))
    assert [g[0]["name"] for g in got[1:]] == ["a.jpg", "b.jpg"]


def test_cvat_image_of_too_many_elements_fails_alone_in_the_listing():
    many = '<box label="car" xtl="0" ytl="0" xbr="1" ybr="1"/>' * 300
    data = cvat_task(f'<image id="0" name="a.jpg" width="4" height="4">{many}</image>'
                     '<image id="1" name="b.jpg" width="4" height="4">'
                     '<box label="car" xtl="0" ytl="0" xbr="1" ybr="1"/></image>')
    limits = Limits(max_nodes=100)
    got = list(cvat.iter_task(io.BytesIO(data), limits))
    (_, first), (_, second) = got[1], got[2]
    assert len(first) < 200  # the 300 boxes were dropped while reading
    with pytest.raises(ItemError, match=r"limits\.max_nodes"):
        cvat.parse_item(first, got[0], dataset="d", name="a.jpg", limits=limits)
    assert len(cvat.parse_item(second, got[0], dataset="d", name="b.jpg").labels) == 1


# ---------------------------------------------------------------------------- COCO
COCO_CLASSES = ClassTable((ClassInfo("car", (255, 0, 0), "any"),))


def coco_item(segmentation, width: int = 100, height: int = 80,
              limits: Limits = DEFAULT_LIMITS, count: int = 1):
    anns = [{"id": k, "category_id": 1, "segmentation": segmentation} for k in range(count)]
    doc = {"image": {"id": 1, "file_name": "a.png", "width": width, "height": height},
           "annotations": anns, "categories": [[1, "car"]]}
    return coco.parse_item(json.dumps(doc).encode(), COCO_CLASSES, dataset="d", name="a.png",
                           limits=limits)


def test_coco_compressed_rle_of_thirty_million_characters_is_refused_by_length():
    t = time.process_time()
    with pytest.raises(ItemError, match=r"limits\.max_rle_chars"):
        coco_item({"size": [80, 100], "counts": "0" * 30_000_000},
                  limits=Limits(max_annotation_bytes=64 << 20))
    assert time.process_time() - t < 10.0


@pytest.mark.parametrize("counts", [[2**70, 1], [2**62] * 4 + [8000 - 2**64]])
def test_coco_uncompressed_rle_beyond_int64_fails_its_item(counts):
    with pytest.raises(ItemError, match="RLE counts"):
        coco_item({"size": [80, 100], "counts": counts})


def test_coco_polygon_points_are_bounded():
    with pytest.raises(ItemError, match=r"limits\.max_shape_points"):
        coco_item([[1.0, 2.0] * 2000], limits=Limits(max_shape_points=1000))
    with pytest.raises(ItemError, match=r"limits\.max_points"):
        coco_item([[1.0, 2.0] * 800], count=3, limits=Limits(max_shape_points=1000,
                                                             max_points=2000))


def test_coco_rle_boxes_share_the_pixel_budget():
    full = {"size": [80, 100], "counts": [0, 8000]}
    assert len(coco_item(full, count=3).labels) == 3
    with pytest.raises(ItemError, match=r"limits\.max_shape_pixels"):
        coco_item(full, count=3, limits=Limits(max_shape_pixels=20000))


@pytest.mark.parametrize("parts", [
    [[0.0, 0.0, 1999.0, 1.0, 0.0, 2.0] * 1300],  # one part: ~1300 column crossings an edge
    [[1.0, 1.0, 1e6, 1.0, 1.0, 1e6]] * 1000,  # pycocotools walks 5e6 grid steps an edge
])
def test_coco_polygons_long_for_their_points_are_charged_before_they_are_traced(parts):
    """The coco rule's trace grows with the edges' lengths: a few thousand points zigzagging
    across the image took gigabytes (a 1000-part polygon far outside it: minutes in C)."""
    t = time.process_time()
    item = coco_item(parts, width=2000, height=2000)
    with pytest.raises(ItemError, match=r"limits\.max_shape_pixels"):
        runs.render_runs(item, COCO_CLASSES, max_pixels=DEFAULT_LIMITS.max_shape_pixels)
    assert time.process_time() - t < 5.0
    small = coco_item([[0.0, 0.0, 1999.0, 1.0, 0.0, 2.0] * 30], width=2000, height=2000)
    assert runs.render_runs(small, COCO_CLASSES, max_pixels=DEFAULT_LIMITS.max_shape_pixels)


def test_coco_file_nested_too_deep_is_an_input_error_not_a_crash():
    doc = {"images": [], "annotations": [], "categories": []}
    data = json.dumps(doc).encode()[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InputError, match="nesting depth"):
        coco.split_dataset(data)


# ---------------------------------------------------------------------------- Supervisely
SLY_CLASSES = ClassTable((ClassInfo("blob", (0, 255, 0), "bitmap"),
                          ClassInfo("poly", (255, 0, 0), "polygon")))


def sly_item(objects: list, width: int = 100, height: int = 80,
             limits: Limits = DEFAULT_LIMITS, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(
        {"size": {"width": width, "height": height}, "objects": objects}).encode()
    return supervisely.parse_annotation(data, SLY_CLASSES, dataset="ds", name="a.png",
                                        limits=limits)


def bitmap(frame: np.ndarray) -> dict:
    data = base64.b64encode(zlib.compress(png_bilevel(frame))).decode()
    return {"classTitle": "blob", "bitmap": {"origin": [0, 0], "data": data}}


def test_supervisely_bitmaps_share_one_pixel_budget_checked_from_their_headers():
    frame = np.ones((20, 20), np.uint8)
    assert len(sly_item([bitmap(frame)] * 2, limits=Limits(max_shape_pixels=1000)).labels) == 2
    with pytest.raises(ItemError, match=r"limits\.max_shape_pixels"):
        sly_item([bitmap(frame)] * 3, limits=Limits(max_shape_pixels=1000))


def test_supervisely_bitmap_declaring_a_huge_png_is_refused_before_decoding():
    data = base64.b64encode(zlib.compress(png_header(20000, 20000))).decode()
    obj = {"classTitle": "blob", "bitmap": {"origin": [0, 0], "data": data}}
    with pytest.raises(ItemError, match="at most 100000000 pixels"):
        sly_item([obj])


def test_supervisely_points_per_shape_and_per_item_are_bounded():
    ring = [[1, 1], [50, 1], [50, 50]] * 400
    obj = {"classTitle": "poly", "points": {"exterior": ring, "interior": []}}
    with pytest.raises(ItemError, match=r"limits\.max_shape_points"):
        sly_item([obj], limits=Limits(max_shape_points=1000))
    small = {"classTitle": "poly", "points": {"exterior": ring[:900], "interior": []}}
    with pytest.raises(ItemError, match=r"limits\.max_points"):
        sly_item([small] * 3, limits=Limits(max_shape_points=1000, max_points=2000))


def test_json_nested_deeper_than_the_parser_allows_fails_its_item():
    raw = b'{"size": {"width": 4, "height": 4}, "objects": [' + b"[" * 100_000 + \
        b"]" * 100_000 + b"]}"
    with pytest.raises(ItemError, match="nesting depth"):
        sly_item([], raw=raw)


def test_json_with_too_many_containers_is_refused_before_parsing():
    raw = b'{"size": {"width": 4, "height": 4}, "objects": [], "x": [' + \
        b"[]," * 500_000 + b"[]]}"
    with pytest.raises(ItemError, match=r"limits\.max_nodes"):
        sly_item([], raw=raw, limits=Limits(max_nodes=100_000))
    with pytest.raises(ItemError, match=r"limits\.max_annotation_bytes"):
        load_json(raw, Limits(max_annotation_bytes=1000), "annotation JSON")


def test_an_oversized_meta_json_is_an_input_error():
    raw = b'{"classes": [' + b"[]," * 3_000_000 + b"[]]}"
    with pytest.raises(InputError, match=r"meta\.json of at most 2000000 nodes"):
        supervisely.parse_meta(raw)


def test_a_huge_class_title_is_not_copied_into_the_message():
    title = {"x": ["y" * 10_000] * 100, "z": list(range(100_000))}
    with pytest.raises(ItemError) as e:
        sly_item([{"classTitle": title, "points": {"exterior": [[1, 1]]}}])
    assert len(str(e.value)) < 600
    any_shape = ClassTable((ClassInfo("any", (1, 2, 3), "any"),))
    obj = {"classTitle": "any", "geometryType": {"not": "hashable"}}
    data = json.dumps({"size": {"width": 4, "height": 4}, "objects": [obj]}).encode()
    item = supervisely.parse_annotation(data, any_shape, dataset="d", name="a.png")
    assert item.labels == ()  # an unknown geometry type draws nothing, as in the SDK


# ---------------------------------------------------------------------------- kernel, messages
def test_full_frame_shapes_on_a_huge_image_fail_before_any_is_drawn():
    labels = tuple(Label(0, Rectangle(0, 0, 9999, 9999)) for _ in range(1000))
    item = Item("d", "a.png", 10000, 10000, labels)
    t = time.process_time()
    with pytest.raises(ItemError, match=r"limits.max_shape_pixels\). Got 300000000 "
                                        r"\(300000000 window pixels \+ 0 draw steps\) by "
                                        r"label #2"):
        rasterize.render(item, SLY_CLASSES, max_pixels=DEFAULT_LIMITS.max_shape_pixels)
    assert time.process_time() - t < 10.0


ACROSS = np.stack([np.tile([0, 1999], 4000), np.arange(8000) // 4], 1)  # trace bytes
DOWN = ACROSS[:, ::-1].astype(np.int64)  # fillPoly walks every edge on every row: draw steps


@pytest.mark.parametrize(("rule", "geometry", "work"), [
    ("opencv", Polygon(DOWN), "draw steps"),
    ("coco", CocoPolygon((ACROSS.ravel().astype(np.float64),)), "trace bytes"),
])
def test_the_window_budget_names_what_it_charged(rule, geometry, work):
    """A zigzag's window is 2000x2000 = 4000000 pixels; drawing or tracing it costs more, and
    the message says what was charged instead of calling it all pixels."""
    item = Item("d", "a", 2000, 2000, (Label(0, geometry),))
    with pytest.raises(ItemError) as e:
        rasterize.render(item, COCO_CLASSES if rule == "coco" else SLY_CLASSES, rule=rule,
                         max_pixels=4_000_001)
    msg = str(e.value)
    assert f"at most 4000001 window pixels plus {work} in total (limits.max_shape_pixels)" in msg
    assert "(4000000 window pixels + " in msg and f" {work}) by label #0" in msg


def test_budget_messages_name_the_limit():
    b = Budget(Limits(max_shape_pixels=10, max_shape_points=3, max_points=5, max_rle_chars=2))
    b.pixels(10, "a bitmap")
    with pytest.raises(ItemError, match="11 pixels by a bitmap"):
        b.pixels(1, "a bitmap")
    with pytest.raises(ItemError, match=r"limits\.max_rle_chars"):
        b.rle_chars(3)


def test_messages_never_render_a_whole_hostile_value():
    loop: list = []
    loop.append(loop)
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    values = (loop, deep, "x" * 50_000_000, [0] * 50_000_000, dict.fromkeys(range(100_000)),
              b"\x00" * 50_000_000, 10**4000)
    t = time.process_time()
    for value in values:
        assert len(expected("something", value)) < 200
    assert time.process_time() - t < 10.0
    assert shown([1, 2]) == "[1, 2]" and shown("ab") == "'ab'"

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert "Hostile" in shown(Hostile())


# ---------------------------------------------------------------------------- memory, for real
MEMORY_SCRIPT = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (__CAP__, __CAP__))
sys.path.insert(0, __ROOT__)
sys.path.insert(0, __ROOT__ + "/tests/maskcore")
import numpy as np
from test_hostile_inputs import HUGE, COCO_CLASSES, SLY_CLASSES, cvat_item, coco_item, sly_item
from maskcore import rasterize
from maskcore.encode import decode_image
from maskcore.errors import ItemError
from maskcore.limits import DEFAULT_LIMITS, Limits
from maskcore.model import ClassTable, Item, Label, Rectangle, CocoPolygon

def refused(what, fn):
    try:
        fn()
    except ItemError as e:
        print("refused", what, str(e)[:80])
        return
    raise SystemExit(f"not refused: {what}")

for kind, data in HUGE:
    refused(kind, lambda: decode_image(data, DEFAULT_LIMITS))
refused("cvat rle wrap", lambda: cvat_item(
    f'<mask label="car" rle="{2**63 - 1}, {2**63 - 1}, 4" left="0" top="0" width="2" height="1"/>'))
big = Limits(max_annotation_bytes=64 << 20)
refused("cvat 30M rle", lambda: cvat_item(
    '<mask label="car" rle="' + "1, 0, " * 5_000_000 + '" left="0" top="0" width="9" height="9"/>',
    limits=big))
refused("coco 30M rle", lambda: coco_item({"size": [80, 100], "counts": "0" * 30_000_000},
                                           limits=big))
full = CocoPolygon((np.array([0, 0, 9999, 0, 9999, 9999, 0, 9999], np.float64),))
item = Item("d", "a", 10000, 10000, tuple(Label(0, full) for _ in range(50)))
refused("coco full-frame polygons", lambda: rasterize.render(
    item, COCO_CLASSES, rule="coco", max_pixels=DEFAULT_LIMITS.max_shape_pixels))
item = Item("d", "a", 10000, 10000, tuple(Label(1, Rectangle(0, 0, 9999, 9999))
                                          for _ in range(50)))
refused("opencv full-frame rectangles", lambda: rasterize.render(
    item, SLY_CLASSES, max_pixels=DEFAULT_LIMITS.max_shape_pixels))
zigzag = np.stack([np.tile([0, 1999], 4000), np.linspace(0, 1999, 8000)], 1).ravel()
item = Item("d", "a", 2000, 2000, (Label(0, CocoPolygon((zigzag,))),))
refused("coco 8000-point zigzag (1.7 GB traced)", lambda: rasterize.render(
    item, COCO_CLASSES, rule="coco", max_pixels=DEFAULT_LIMITS.max_shape_pixels))
item = Item("d", "a", 2000, 2000, (Label(0, CocoPolygon((zigzag, zigzag[:6]))),))
refused("coco 2-part zigzag (pycocotools)", lambda: rasterize.render(
    item, COCO_CLASSES, rule="coco", max_pixels=DEFAULT_LIMITS.max_shape_pixels))
raw = b'{"size": {"width": 4, "height": 4}, "objects": [], "x": [' + b"[]," * 11_000_000 + b"[]]}"
refused("json of 11M empty lists", lambda: sly_item([], raw=raw))
print("done")
"""


def test_hostile_inputs_fail_within_a_capped_address_space(tmp_path):
    limit = 1536 * 1024 * 1024
    script = MEMORY_SCRIPT.replace("__CAP__", str(limit)).replace("__ROOT__", repr(str(ROOT)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("refused") == len(HUGE) + 8 and "done" in proc.stdout


# ---------------------------------------------------------------------------- Segmentation Mask
def test_a_huge_mask_png_decodes_in_bands_within_the_memory_cap(tmp_path):
    """A 10000 x 10000 SegmentationClass + SegmentationObject pair compresses to a few hundred
    KB; reading it used to take several GB (int64 copies, full-frame unique and one full-frame
    comparison per instance). It must now fit under 1.5 GB of address space."""
    script = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (__CAP__, __CAP__))
sys.path.insert(0, __ROOT__)
import cv2, numpy as np
from maskcore.formats import cvat
from maskcore.formats.base import pack_parts
from maskcore.palette import voc_color
classes = cvat.parse_labelmap_classes(b"background:0,0,0::\ncar:255,0,0::\nsky:0,0,255::\n")
cls = np.zeros((10000, 10000, 3), np.uint8)
cls[:5000] = (255, 0, 0)[::-1]
cls[5000:] = (0, 0, 255)[::-1]
obj = np.zeros((10000, 10000), np.uint8)
obj[:5000, :5000], obj[:5000, 5000:], obj[5000:] = 1, 2, 3
parts = [cv2.imencode(".png", cls)[1].tobytes(), cv2.imencode(".png", obj)[1].tobytes()]
del cls, obj
item = cvat.parse_item(pack_parts(parts), classes, dataset="d", name="big.png")
print([(l.class_index, l.geometry.mask.shape) for l in item.labels])
"""
    script = script.replace("__CAP__", str(1536 * 1024 * 1024)).replace(
        "__ROOT__", repr(str(ROOT)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == \
        "[(0, (5000, 5000)), (0, (5000, 5000)), (1, (5000, 10000))]"


def test_a_sixteen_bit_mask_png_is_refused_from_its_header_before_decoding():
    """A 10000 x 10000 16-bit RGBA class PNG of zeros is 3.5 MB; OpenCV decoded it (800 MB, a
    1.6 GB peak) before its dtype was refused. The IHDR's bit depth refuses it: here its pixel
    data is not even deflate, so only a refusal that never decodes names the bit depth."""
    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 16, 6, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + \
        struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\x00\x00\x00\x04IDATjunk\x00\x00\x00\x00"
    classes = cvat.parse_labelmap_classes(b"background:0,0,0::\ncar:255,0,0::\n")
    with pytest.raises(ItemError, match=r"8-bit mask PNG\. Got '16-bit samples"):
        cvat.parse_mask_item(data, classes, dataset="d", name="a.png", image_key=None,
                             ann_key=None, limits=DEFAULT_LIMITS)


@pytest.mark.parametrize("shape", ["polygon", "line"])
def test_opencv_shapes_are_charged_for_the_rows_they_span_before_they_are_drawn(shape):
    """fillPoly visits every edge on every row it spans: 80,000 points zigzagging down an
    8000-row image ran for minutes (a million points are allowed); polylines walk every
    segment's pixels. Both are charged with their window before OpenCV is called."""
    n, side = 80_000, 8000
    pts = np.stack([np.linspace(0, side - 1, n), np.tile([0, side - 1], n // 2)], 1)
    geometry = Polygon(pts.astype(np.int64), ()) if shape == "polygon" else \
        Polyline(pts.astype(np.int64))
    item = Item("d", "a", side, side, (Label(0, geometry),))
    t = time.process_time()
    with pytest.raises(ItemError, match=r"limits\.max_shape_pixels"):
        rasterize.render(item, SLY_CLASSES, max_pixels=DEFAULT_LIMITS.max_shape_pixels)
    assert time.process_time() - t < 2.0
    small = Item("d", "a", side, side, (Label(0, Polygon(pts[:200].astype(np.int64), ())),))
    assert rasterize.render(small, SLY_CLASSES, max_pixels=DEFAULT_LIMITS.max_shape_pixels)[0]
