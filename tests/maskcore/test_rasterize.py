"""Golden arrays for the OpenCV pixel rule (reference/supervisely.md B.8), and the promise that
stamps composed on a frame equal OpenCV drawing on the full frame, as the SDK does it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskcore import compose
from maskcore._coco import window_boxes
from maskcore.formats.base import ItemContext
from maskcore.model import (
    AlphaMask,
    Bitmap,
    ClassInfo,
    ClassTable,
    Cuboid2d,
    Graph,
    Item,
    Label,
    MultiPolygon,
    Node,
    OrientedBBox,
    Point,
    Polygon,
    Polyline,
    Rectangle,
)
from maskcore.rasterize import render, sdk_area, templates_matter

CLASSES = ClassTable((ClassInfo("a", (255, 0, 0), "any"),))


def frame(g, w=12, h=12, thickness=1, templated=False, classes=CLASSES):
    item = Item("ds", "x.png", w, h, (Label(0, g),))
    stamps = [s for s in render(item, classes, thickness=thickness, templated=templated) if s]
    return compose.paint_index(stamps, [1] * len(stamps), h, w)


def poly(*pts):
    return np.array(pts, dtype=np.int64)


def test_square_polygon_includes_its_boundary():
    """Square (2,2)-(5,5): rows and columns 2..5 inclusive = 16 px (not the shoelace 9)."""
    m = frame(Polygon(poly((2, 2), (5, 2), (5, 5), (2, 5))))
    assert m.sum() == 16 and m[2:6, 2:6].all()
    assert sdk_area(Polygon(poly((2, 2), (5, 2), (5, 5), (2, 5)))) == 9.0


def test_polygon_hole_clears_its_boundary_pixels():
    """Exterior (1..9)^2 with hole (3..6)^2: 81 - 16 = 65 px, hole boundary cleared."""
    g = Polygon(poly((1, 1), (9, 1), (9, 9), (1, 9)), (poly((3, 3), (6, 3), (6, 6), (3, 6)),))
    m = frame(g)
    assert m.sum() == 65 and not m[3:7, 3:7].any()


def test_triangle_includes_hypotenuse():
    m = frame(Polygon(poly((0, 0), (8, 0), (0, 8))))
    assert all(m[i, 8 - i] for i in range(9))


def test_rectangle_inclusive_corners():
    """Rectangle left=2, top=3, right=5, bottom=6: rows 3..6 x cols 2..5 = 16 px."""
    m = frame(Rectangle(2, 3, 5, 6))
    assert m.sum() == 16 and m[3:7, 2:6].all()


def test_polyline_thickness_one_is_bresenham_with_endpoints():
    m = frame(Polyline(poly((1, 5), (10, 5))), thickness=1)
    assert m.sum() == 10 and m[5, 1:11].all()


@pytest.mark.parametrize(("t", "px"), [(1, 1), (2, 5), (3, 13), (4, 13), (5, 13), (6, 29)])
def test_point_radius_is_round_half_even_of_half_thickness(t, px):
    """Point = filled circle of radius round(t/2): 1, 5, 13, 13, 13, 29 px for t = 1..6."""
    assert frame(Point(10, 10), w=21, h=21, thickness=t).sum() == px


def test_bitmap_and_alpha_mask_place_at_origin():
    mask = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
    m = frame(Bitmap(4, 2, mask))
    assert m[2:5, 4:7].astype(bool).tolist() == mask.tolist() and m.sum() == 8
    a = frame(AlphaMask(1, 1, np.array([[0, 10], [200, 0]], np.uint8)))
    assert a.sum() == 2 and a[1, 2] and a[2, 1]


def test_graph_without_template_draws_enabled_nodes_only():
    g = Graph((Node("a", 2, 2), Node("b", 8, 8), Node("c", 5, 2, disabled=True)))
    m = frame(g, thickness=1)
    assert m.sum() == 2 and m[2, 2] and m[8, 8]


def test_graph_with_template_draws_edges_then_nodes_in_their_colours():
    tmpl = {"nodes": {"a": {"color": [0, 255, 0]}}, "edges": [{"src": "a", "dst": "b",
                                                               "color": [0, 0, 255]}]}
    classes = ClassTable((ClassInfo("g", (255, 0, 0), "graph", tmpl),))
    item = Item("ds", "x.png", 12, 12, (Label(0, Graph((Node("a", 2, 2), Node("b", 8, 2)))),))
    [s] = render(item, classes, thickness=1, templated=True)
    canvas = compose.paint_colors(np.zeros((12, 12, 3), np.uint8), [s], [(255, 0, 0)])
    assert canvas[2, 5].tolist() == [255, 0, 0]  # edge blue (BGR)
    assert canvas[2, 2].tolist() == [0, 255, 0]  # node a green
    assert canvas[2, 8].tolist() == [0, 0, 255]  # node b: the label colour, red (BGR)


def test_templated_stamps_are_rendered_again_only_for_graphs_of_a_templated_class():
    """ItemContext renders `templated=True` stamps once more only when a template can change
    them; otherwise both requests get the same stamps (one rendering per item)."""
    tmpl = {"nodes": {}, "edges": [{"src": "a", "dst": "b", "color": [0, 0, 255]}]}
    classes = ClassTable((ClassInfo("p", (255, 0, 0), "polygon"),
                          ClassInfo("g", (0, 255, 0), "graph", tmpl),
                          ClassInfo("h", (0, 0, 255), "graph")))
    square = Label(0, Polygon(poly((1, 1), (4, 1), (4, 4), (1, 4))))
    graph = Graph((Node("a", 2, 6), Node("b", 8, 6)))
    for labels, matter in (((square,), False), ((square, Label(2, graph)), False),
                           ((square, Label(1, graph)), True)):
        item = Item("ds", "x.png", 12, 12, labels)
        assert templates_matter(item, classes, "opencv") is matter
        assert not templates_matter(item, classes, "coco")
        ctx = ItemContext(item, classes)
        plain, templated = ctx.stamps(templated=False), ctx.stamps(templated=True)
        assert (plain is templated) is not matter
        again = render(item, classes, templated=True)
        assert [s.parts.tolist() for s in templated] == [s.parts.tolist() for s in again]


def test_sdk_area_of_small_rings_equals_numpy_shoelace_bit_for_bit():
    """Small integer rings take a plain Python shoelace: the same float as numpy's float64
    sums (the order of the app's machine masks depends on it), near the bounds too."""
    rng = np.random.default_rng(7)

    def numpy_area(r):
        x, y = r[:, 0].astype(np.float64), r[:, 1].astype(np.float64)
        return float(0.5 * np.abs(np.dot(y, np.roll(x, 1)) - np.dot(x, np.roll(y, 1))))

    for n, span in [(3, 10), (4, 9), (17, 1000), (64, (1 << 20) - 1), (64, 1 << 20),
                    (65, 1 << 30), (200, 50)]:
        for _ in range(50):
            ring = rng.integers(-span, span + 1, (n, 2), dtype=np.int64)
            assert sdk_area(Polygon(ring)) == numpy_area(ring)


def test_cuboid_fills_its_own_five_faces():
    names = ("face1-topleft", "face1-topright", "face1-bottomright", "face1-bottomleft",
             "face2-topleft", "face2-topright", "face2-bottomright", "face2-bottomleft")
    locs = ((2, 4), (6, 4), (6, 8), (2, 8), (4, 2), (8, 2), (8, 6), (4, 6))
    m = frame(Cuboid2d(tuple(Node(n, x, y) for n, (x, y) in zip(names, locs, strict=True))))
    assert m[4:9, 2:7].all() and m[2, 4:9].all() and m[2:7, 8].all()


def test_oriented_bbox_zero_angle_equals_rectangle():
    assert (frame(OrientedBBox(2, 3, 7, 8, 0.0)) == frame(Rectangle(2, 3, 7, 8))).all()


def test_multipolygon_parts_do_not_cut_each_other():
    a = Polygon(poly((1, 1), (5, 1), (5, 5), (1, 5)))
    b = Polygon(poly((4, 4), (9, 4), (9, 9), (4, 9)), (poly((6, 6), (7, 6), (7, 7), (6, 7)),))
    m = frame(MultiPolygon((a, b)))
    assert m[4, 4] and m[1, 1] and not m[6, 6]


def test_stamps_equal_full_frame_opencv_on_random_polygons_and_thick_lines():
    """200 random polygons and thick polylines (many crossing the border): stamp drawing equals
    cv2 drawing on the full frame with the SDK's calls, pixel for pixel."""
    rng = np.random.default_rng(3)
    w, h = 97, 61
    for k in range(200):
        n = int(rng.integers(3, 12))
        pts = np.stack([rng.integers(-20, w + 20, n), rng.integers(-20, h + 20, n)], 1)
        ref = np.zeros((h, w), np.uint8)
        if k % 2:
            t = int(rng.integers(1, 7))
            cv2.polylines(ref, [pts.astype(np.int32)], False, 1, t)
            got = frame(Polyline(pts.astype(np.int64)), w, h, thickness=t)
        else:
            cv2.fillPoly(ref, [pts.astype(np.int32)], 1)
            got = frame(Polygon(pts.astype(np.int64)), w, h)
        assert (got == ref).all(), f"case {k}: {int((got != ref).sum())} px differ"


def test_label_outside_the_image_gives_no_stamp():
    item = Item("ds", "x.png", 10, 10, (Label(0, Rectangle(20, 20, 30, 30)),))
    assert render(item, CLASSES) == [None]


def test_window_boxes_of_many_polygons_at_once():
    """One vectorized pass gives each polygon's own window: +-1 pixel around its float extent,
    clipped; None without parts, with a non-finite coordinate, or outside the image."""
    polygons = [
        (np.array([2.5, 3.2, 10.0, 3.0, 6.1, 9.9]),),
        (),
        (np.array([-5.0, -5.0, 100.0, 4.0, 3.0, 60.0]), np.array([1.0, 1.0, 2.0, 1.0, 2.0, 2.0])),
        (np.array([1.0, 1.0, np.nan, 2.0, 3.0, 3.0]),),
        (np.array([1.0, 1.0, np.inf, 2.0, 3.0, 3.0]),),
        (np.array([50.0, 50.0, 60.0, 50.0, 55.0, 58.0]),),
        (np.array([-9.0, 2.0, -3.0, 2.0, -5.0, 8.0]),),
    ]
    assert window_boxes(polygons, 40, 30) == [
        (1, 2, 11, 11), None, (0, 0, 39, 29), None, None, None, None]
