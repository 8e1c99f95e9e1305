"""Parsing Supervisely meta and annotations: the SDK's load rules, and a clear error naming
the object for every kind of bad input (each fails its item alone, in bounded memory)."""

from __future__ import annotations

import base64
import json
import zlib

import cv2
import numpy as np
import pytest

from maskcore.errors import InputError, ItemError
from maskcore.formats.supervisely import parse_annotation, parse_meta
from maskcore.limits import Limits
from maskcore.model import AlphaMask, Bitmap, Point, Polygon, Rectangle

META = json.dumps({"classes": [
    {"title": "car", "shape": "polygon", "color": "#FF0000"},
    {"title": "box", "shape": "rectangle", "color": "#00FF00"},
    {"title": "blob", "shape": "bitmap", "color": "#0000FF"},
    {"title": "glass", "shape": "alpha_mask", "color": "#00FFFF"},
    {"title": "pin", "shape": "point", "color": "#FFFF00"},
    {"title": "anything", "shape": "any", "color": "#FFFFFF"},
]}).encode()
CLASSES = parse_meta(META)


def ann(*objects, w=100, h=80):
    return json.dumps({"size": {"width": w, "height": h}, "tags": [],
                       "objects": list(objects)}).encode()


def parse(data, **kw):
    return parse_annotation(data, CLASSES, dataset="ds", name="a.jpg", **kw)


def poly_obj(ext, cls="car", interior=()):
    return {"classTitle": cls, "tags": [], "points": {"exterior": ext, "interior": list(interior)}}


def png_b64(arr, use_zlib=True):
    data = cv2.imencode(".png", arr)[1].tobytes()
    return base64.b64encode(zlib.compress(data) if use_zlib else data).decode()


def test_meta_order_is_file_order():
    assert CLASSES.names() == ["car", "box", "blob", "glass", "pin", "anything"]


def test_float_coordinates_are_floored():
    item = parse(ann(poly_obj([[1.9, 2.99], [10.5, 2.0], [10.0, 9.7]])))
    g = item.labels[0].geometry
    assert isinstance(g, Polygon) and g.exterior.tolist() == [[1, 2], [10, 2], [10, 9]]


def test_rectangle_corners_sorted():
    item = parse(ann(poly_obj([[30, 40], [10, 5]], cls="box")))
    assert item.labels[0].geometry == Rectangle(10, 5, 30, 40)


def test_bitmap_rgba_gray_and_plain_base64_are_cut_to_tight_bbox():
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[2:4, 1:5, 3] = 255
    gray = np.zeros((6, 6), np.uint8)
    gray[1, 1] = 7
    items = parse(ann(
        {"classTitle": "blob", "tags": [], "bitmap": {"origin": [10, 20], "data": png_b64(rgba)}},
        {"classTitle": "blob", "tags": [], "bitmap": {"origin": [10, 20], "data": png_b64(gray)}},
        {"classTitle": "blob", "tags": [],
         "bitmap": {"origin": [0, 0], "data": png_b64(rgba, use_zlib=False)}},
    ))
    a, b, c = (lb.geometry for lb in items.labels)
    assert isinstance(a, Bitmap) and (a.left, a.top, a.mask.shape) == (11, 22, (2, 4))
    assert isinstance(b, Bitmap) and (b.left, b.top, b.mask.shape) == (11, 21, (1, 1))
    assert isinstance(c, Bitmap) and (c.left, c.top) == (1, 2)


def test_alpha_mask_keeps_values():
    alpha = np.zeros((4, 4), np.uint8)
    alpha[1:3, 1:3] = 128
    item = parse(ann({"classTitle": "glass", "tags": [],
                      "bitmap": {"origin": [5, 5], "data": png_b64(alpha)}}))
    g = item.labels[0].geometry
    assert isinstance(g, AlphaMask) and (g.alpha == 128).all() and (g.left, g.top) == (6, 6)


def test_any_class_uses_object_geometry_type():
    obj = {"classTitle": "anything", "geometryType": "point", "tags": [],
           "points": {"exterior": [[3, 4]], "interior": []}}
    assert parse(ann(obj)).labels[0].geometry == Point(3, 4)


def test_polygon_crossing_the_border_is_cropped_like_the_sdk():
    item = parse(ann(poly_obj([[-10, -10], [50, -10], [50, 50], [-10, 50]]), w=40, h=30))
    g = item.labels[0].geometry
    assert isinstance(g, Polygon)
    assert sorted(map(tuple, g.exterior.tolist())) == [(0, 0), (0, 29), (39, 0), (39, 29)]


def test_point_and_graph_outside_are_dropped():
    pin = {"classTitle": "pin", "tags": [], "points": {"exterior": [[500, 5]], "interior": []}}
    assert parse(ann(pin)).labels == ()


@pytest.mark.parametrize(("data", "needle"), [
    (b"{not json", "valid annotation JSON"),
    (ann(poly_obj([[1, 1], [5, 1], [5, 5]], cls="zebra")), "objects[0] (zebra)"),
    (b'{"size": {"width": 100, "height": 80}, "objects": [{"classTitle": "car", "tags": [],'
     b' "points": {"exterior": [[NaN, 1], [5, 1], [5, 5]], "interior": []}}]}', "finite"),
    (ann(poly_obj([[1e12, 1], [5, 1], [5, 5]])), "coordinate within"),
    (ann(poly_obj("oops")), "list of [x, y] points"),
    # numbers written as text: the SDK's math.floor refuses them (numpy's float64 parsed them)
    (ann(poly_obj([["1", "2"], [5, 1], [5, 5]])), "Expected a number. Got '1' instead"),
    (ann({"classTitle": "box", "tags": [], "points": {"exterior": [["1e2", 1], [5, 5]]}}),
     "Expected a number"),
    (ann(w=0, h=80), "width to be a positive integer"),
    (ann(w=200000, h=200000), "image width <= 65535"),
    (ann({"classTitle": "box", "geometryType": "polygon", "tags": [],
          "points": {"exterior": [[1, 1], [5, 5]], "interior": []}}), "class shape"),
    (ann({"classTitle": "blob", "tags": [], "bitmap": {"origin": [0, 0], "data": "%%%"}}),
     "PNG"),
    (ann({"classTitle": "blob", "tags": [], "bitmap": {"origin": [0, 0],
          "data": base64.b64encode(zlib.compress(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)).decode()}}),
     "PNG"),
])
def test_bad_items_fail_with_a_reason(data, needle):
    with pytest.raises(ItemError) as e:
        parse(data)
    assert needle in str(e.value)


@pytest.mark.parametrize(("data", "needle"), [
    (b'{"tags": [], "objects": []}', "'size': {'height': H, 'width': W} (the Supervisely SDK"),
    (b'{"size": {"height": 80}, "tags": [], "objects": []}', "width to be a positive integer"),
    (b'{"size": {"width": 100}, "tags": [], "objects": []}', "height to be a positive integer"),
    (b'{"size": {"width": 100.0, "height": 80}, "tags": [], "objects": []}', "positive integer"),
])
def test_a_missing_or_partial_size_fails_as_in_the_sdk_never_reading_the_image(data, needle):
    """`Annotation.from_json` indexes size.height and size.width: no image is read for them."""
    def never() -> tuple[int, int]:
        raise AssertionError("the image was read")

    with pytest.raises(ItemError) as e:
        parse(data, image_size=never)
    assert needle in str(e.value)


def test_png_header_claiming_enormous_size_is_refused_before_decoding():
    """A tiny PNG whose IHDR claims 60000x60000 pixels is refused from its header."""
    png = cv2.imencode(".png", np.ones((2, 2), np.uint8))[1].tobytes()
    huge = png[:16] + (60000).to_bytes(4, "big") * 2 + png[24:]
    obj = {"classTitle": "blob", "tags": [],
           "bitmap": {"origin": [0, 0], "data": base64.b64encode(zlib.compress(huge)).decode()}}
    with pytest.raises(ItemError, match="at most"):
        parse(ann(obj))


def test_zlib_bomb_is_refused():
    bomb = base64.b64encode(zlib.compress(b"\x00" * (8 * 1024 * 1024))).decode()
    obj = {"classTitle": "blob", "tags": [], "bitmap": {"origin": [0, 0], "data": bomb}}
    with pytest.raises(ItemError, match="decompression bomb"):
        parse(ann(obj), limits=Limits(max_inflated_bytes=1024 * 1024))


def test_meta_errors_are_input_errors():
    with pytest.raises(InputError, match=r"meta\.json"):
        parse_meta(b"[]")
    with pytest.raises(InputError, match="colour"):
        parse_meta(json.dumps({"classes": [{"title": "x", "color": "red"}]}).encode())
