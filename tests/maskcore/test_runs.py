"""Coco-rule composition on runs (maskcore/runs.py): every step against pycocotools on the full
frame (what datumaro, hence CVAT, does) and against painting stamps in turn."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from maskcore import runs
from maskcore.formats import cvat
from maskcore.model import Bitmap, ClassInfo, ClassTable, CocoPolygon, Item, Label, Rectangle
from maskcore.order import compose
from maskcore.rasterize import Stamp, render

W, H = 64, 48
CLASSES = ClassTable((ClassInfo("person", (255, 0, 0)), ClassInfo("car", (0, 255, 0))),
                     background=(0, 0, 0))


def frame_of(r: runs.Runs | None, height: int = H, width: int = W) -> np.ndarray:
    flat = np.zeros(height * width, np.uint8)
    if r is not None:
        for s, e in zip(r.starts.tolist(), r.ends.tolist(), strict=True):
            flat[s:e] = 1
    return flat.reshape(width, height).T


def full_frame(parts, height: int = H, width: int = W) -> np.ndarray:
    rles = coco_mask.frPyObjects([list(map(float, p)) for p in parts], height, width)
    return coco_mask.decode(coco_mask.merge(rles) if len(rles) > 1 else rles[0])


def test_decoded_counts_are_pycocotools_runs_for_many_masks_at_once():
    rng = np.random.default_rng(1)
    masks = [np.zeros((H, W), np.uint8), np.ones((H, W), np.uint8)]
    for p in (0.02, 0.5, 0.98):  # long and short runs, negative deltas in the counts string
        masks.append((rng.uniform(size=(H, W)) < p).astype(np.uint8))
    edge = np.zeros((H, W), np.uint8)
    edge[:, -1] = edge[0, :] = edge[-1, 5] = 1  # runs at the first and last pixel
    masks.append(edge)
    big = np.zeros((1080, 1920), np.uint8)
    big[1000:, 1900:] = 1  # counts of millions: numbers of several 5-bit groups
    found = runs.rle_runs([coco_mask.encode(np.asfortranarray(m)) for m in masks])
    assert found[0] is None
    for m, r in zip(masks[1:], found[1:], strict=True):
        assert np.array_equal(frame_of(r), m)
    (r,) = runs.rle_runs([coco_mask.encode(np.asfortranarray(big))])
    assert np.array_equal(frame_of(r, 1080, 1920), big)


@pytest.mark.parametrize("seed", range(6))
def test_polygon_runs_equal_pycocotools_full_frame(seed):
    """Float polygons crossing every border, repeated vertices, two-part polygons."""
    rng = np.random.default_rng(seed)
    polygons = []
    for k in range(40):
        n = int(rng.integers(3, 12))
        pts = rng.uniform(-20, 80, (n, 2)).round(2)
        if k % 5 == 0:
            pts[1] = pts[0]  # a repeated vertex
        parts = [pts.ravel()]
        if k % 7 == 0:
            parts.append(rng.uniform(0, 50, (4, 2)).round(2).ravel())
        polygons.append(parts)
    found = runs.polygon_runs(polygons, W, H)
    for parts, r in zip(polygons, found, strict=True):
        full = full_frame(parts)
        assert np.array_equal(frame_of(r), full)
        if r is not None:  # cut into windows: the whole frame, and one inside it
            assert np.array_equal(r.window(0, 0, W, H, H), full)
            assert np.array_equal(r.window(5, 7, 20, 30, H), full[7:37, 5:25])


@pytest.mark.parametrize("seed", range(4))
def test_traced_polygons_are_pycocotools_rle_exactly(seed):
    """`_traced_runs` (rleFrPoly without the C loop) against pycocotools polygon by polygon:
    vertices on the 5x grid's column boundaries (x.1, x.5, integers), repeated vertices
    (degenerate edges), near-vertical and near-horizontal edges, negative coordinates where
    C's truncation differs from floor, odd-length arrays, frames of one pixel."""
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        side = max(h, w)
        polygons = []
        for k in range(24):
            m = int(rng.integers(3, 12))
            kind = k % 6
            if kind == 0:
                pts = rng.uniform(-30, side + 30, (m, 2))
            elif kind == 1:
                pts = rng.integers(-5, side + 5, (m, 2)).astype(float)
            elif kind == 2:
                pts = rng.integers(-50, 5 * side + 50, (m, 2)) / 5 + \
                    rng.choice([0, 0.1, -0.1, 0.02, 0.5], (m, 2))
            elif kind == 3:  # steep edges: x moves a fraction of a pixel
                pts = rng.uniform(0, side, (m, 2))
                pts[1::2, 0] = pts[0::2, 0][:m // 2] + rng.uniform(-0.3, 0.3, m // 2)
            elif kind == 4:
                pts = rng.uniform(-3, 10, (m, 2)).round(1)
                pts[2] = pts[1]
            else:
                pts = rng.uniform(-0.2, 1.2, (m, 2)) * [w, h]
            flat = pts.round(int(rng.integers(0, 4))).ravel()
            polygons.append(np.append(flat, 3.3) if k % 11 == 0 else flat)
        traced = runs._traced_runs(polygons, w, h)
        assert traced is not None
        for flat, r in zip(polygons, traced, strict=True):
            expected = coco_mask.decode(coco_mask.frPyObjects([flat], h, w)[0])
            assert np.array_equal(frame_of(r, h, w), expected), (h, w, flat.tolist())


def test_traced_polygons_beyond_c_ints_go_to_pycocotools():
    far = np.array([0.0, 0.0, 5e8, 0.0, 0.0, 30.0])
    assert runs._traced_runs([far], W, H) is None
    (r,) = runs.polygon_runs([[far]], W, H)
    assert np.array_equal(frame_of(r), full_frame([far]))


def test_full_frame_rounding_not_a_shifted_window():
    """pycocotools rounds `x + s * t + .5` in doubles: shifting a polygon into its window moves
    the rounding; this one (from a dense benchmark image) lost a pixel at (1018, 854) in a
    window, and CVAT's full-frame masks have it off."""
    pts = [1078.82, 854.27, 1078.8, 854.62, 1067.19, 882.52, 1024.21, 868.85, 1016.38, 858.11,
           1024.74, 843.86, 1036.1, 828.65, 1036.2, 822.52, 1038.29, 824.94, 1048.18, 819.66,
           1051.27, 808.87, 1055.22, 808.99, 1068.99, 830.96]
    (r,) = runs.polygon_runs([[np.array(pts)]], 1920, 1080)
    full = full_frame([pts], 1080, 1920)
    assert np.array_equal(frame_of(r, 1080, 1920), full) and full[854, 1018] == 0


def test_stamp_runs_cover_exactly_the_stamp():
    rng = np.random.default_rng(3)
    parts = (rng.uniform(size=(7, 9)) < 0.5).astype(np.uint8)
    parts[:, 0] = parts[-1, :] = 1  # runs touching the stamp's edges (and the image's)
    s = Stamp(0, W - 9, H - 7, parts)
    expected = np.zeros((H, W), np.uint8)
    expected[s.window] = parts
    assert np.array_equal(frame_of(runs.stamp_runs(s, H)), expected)
    assert runs.stamp_runs(Stamp(0, 0, 0, np.zeros((3, 3), np.uint8)), H) is None


def test_paint_last_wins_and_counts_match_sequential_painting():
    rng = np.random.default_rng(5)
    masks = [(rng.uniform(size=(H, W)) < p).astype(np.uint8) for p in (0.3, 0.1, 0.6, 0.05)]
    masks.append(np.ones((H, W), np.uint8))  # a full frame under everything later
    masks = masks[-1:] + masks[:-1]
    values = [1, 2, 0, 3, 4]  # 0: an eraser (a background instance)
    found = runs.rle_runs([coco_mask.encode(np.asfortranarray(m)) for m in masks])
    index, counts = runs.paint(found, values, H, W, np.uint8)
    expected = np.zeros((H, W), np.uint8)
    for m, v in zip(masks, values, strict=True):
        expected[m > 0] = v
    assert index.flags.c_contiguous and np.array_equal(index, expected)
    assert counts.tolist() == np.bincount(expected.ravel(), minlength=5).tolist()
    empty, counts = runs.paint([], [], H, W, np.uint16)
    assert empty.dtype == np.uint16 and not empty.any() and counts.tolist() == [H * W]


@pytest.mark.parametrize("n", [255, 256, 300])
def test_paint_many_footprints_last_wins(n):
    """Priorities are kept in the narrowest dtype: 255 footprints still fit uint8, 256 and more
    take uint16; overlapping random boxes against painting them in turn."""
    rng = np.random.default_rng(n)
    masks, values = [], []
    for k in range(n):
        m = np.zeros((H, W), np.uint8)
        x, y = rng.integers(0, W - 4), rng.integers(0, H - 4)
        m[y:y + rng.integers(1, 30), x:x + rng.integers(1, 40)] = 1
        masks.append(m)
        values.append(0 if k % 17 == 5 else k + 1)  # some erasers
    found = runs.rle_runs([coco_mask.encode(np.asfortranarray(m)) for m in masks])
    index, counts = runs.paint(found, values, H, W, np.uint16)
    expected = np.zeros((H, W), np.uint16)
    for m, v in zip(masks, values, strict=True):
        expected[m > 0] = v
    assert np.array_equal(index, expected)
    assert counts.tolist() == np.bincount(expected.ravel(), minlength=n + 1).tolist()


def _reference_stamps(item: Item) -> list[Stamp | None]:
    """The kernel's stamps, except polygons and boxes drawn by pycocotools on the full frame."""
    stamps = render(item, CLASSES, rule="coco")
    for i, lab in enumerate(item.labels):
        g = lab.geometry
        if isinstance(g, CocoPolygon | Rectangle):
            parts = [p for p in (g.parts if isinstance(g, CocoPolygon) else
                                 [[g.left, g.top, g.right, g.top, g.right, g.bottom, g.left,
                                   g.bottom]]) if len(p) >= 6]
            full = full_frame(parts, item.height, item.width) if parts else None
            stamps[i] = Stamp(i, 0, 0, full) if full is not None and full.any() else None
    return stamps


def test_cvat_item_composed_on_runs_equals_painting_full_frames():
    """Shapes crossing every border, rotated boxes at the edges, an RLE mask flush with the
    bottom-right corner, an ellipse past the top, groups, z_order and the background label."""
    mask = np.zeros((6, 8), bool)
    mask[1:, 2:] = True
    mask[0, 0] = True
    rle = ",".join(map(str, np.diff(np.flatnonzero(np.diff(
        np.concatenate(([0], mask.ravel().astype(int), [2])))))))  # runs from a 0-run
    body = (
        '<polygon label="person" points="-5.5,-3.25;30.1,2.2;12.9,60.7" z_order="1"/>'
        '<box label="car" xtl="50.2" ytl="30.7" xbr="70.3" ybr="60.1" rotation="33.3"/>'
        '<box label="car" xtl="-4" ytl="10.5" xbr="8.25" ybr="20" rotation="-80"/>'
        f'<mask label="person" rle="{rle}" left="{W - 8}" top="{H - 6}" width="8" height="6"'
        ' z_order="2"/>'
        '<ellipse label="car" cx="20" cy="1.5" rx="9.5" ry="6" rotation="15"/>'
        '<polygon label="car" points="10,10;40,12;30,40" group_id="4"/>'
        '<box label="person" xtl="25" ytl="5" xbr="45" ybr="15" group_id="4"/>'
        '<polygon label="background" points="15,15;35,18;22,30" z_order="1"/>'
        '<polygon label="person" points="200,200;210,200;205,210"/>'  # outside: a number only
        '<box label="person" xtl="0" ytl="0" xbr="64" ybr="48" z_order="-1"/>'
    )
    classes = cvat.parse_task_classes(
        b'<annotations><meta><task><labels><label><name>background</name></label>'
        b'<label><name>person</name><color>#ff0000</color></label>'
        b'<label><name>car</name><color>#00ff00</color></label></labels></task></meta>'
        b'</annotations>')
    item = cvat.parse_item(
        f'<image id="0" name="x.jpg" width="{W}" height="{H}">{body}</image>'.encode(),
        classes, dataset="default", name="x.jpg")
    got = compose(item, classes, runs.render_runs(item, classes), "coco")
    want = compose(item, classes, _reference_stamps(item), "coco")
    assert np.array_equal(got.index, want.index) and got.index.dtype == want.index.dtype
    assert (got.class_pixels, got.top, got.instances, got.present) == \
        (want.class_pixels, want.top, want.instances, want.present)
    assert got.index[H - 1, W - 1] != 0 and got.index[H - 6, W - 8] != 0  # the corner mask


def test_bitmaps_crossing_every_border_compose_as_their_stamps():
    rng = np.random.default_rng(9)
    labels = []
    for k, (left, top) in enumerate([(-5, -4), (W - 6, H - 3), (-3, H - 8), (20, 10),
                                     (W + 2, 0), (10, -30)]):
        mask = rng.uniform(size=(12, 15)) < 0.6
        labels.append(Label(k % 2, Bitmap(left, top, mask), z_order=k % 3))
    labels.append(Label(1, Bitmap(3, 3, np.zeros((4, 4), bool))))  # paints nothing
    item = Item("d", "x.jpg", W, H, tuple(labels))
    got = compose(item, CLASSES, runs.render_runs(item, CLASSES), "coco")
    want = compose(item, CLASSES, render(item, CLASSES, rule="coco"), "coco")
    assert np.array_equal(got.index, want.index)
    assert (got.class_pixels, got.top, got.instances) == \
        (want.class_pixels, want.top, want.instances)


def test_stamps_of_polygons_are_the_full_frame_rle_cut_to_their_window():
    """Writers that take stamps (instance masks) see the same pixels as the composition: the
    window-rounding polygon, and a polygon covering whole columns (runs crossing columns)."""
    pts = [1078.82, 854.27, 1078.8, 854.62, 1067.19, 882.52, 1024.21, 868.85, 1016.38, 858.11,
           1024.74, 843.86, 1036.1, 828.65, 1036.2, 822.52, 1038.29, 824.94, 1048.18, 819.66,
           1051.27, 808.87, 1055.22, 808.99, 1068.99, 830.96]
    tall = [-3.0, -5.0, 20.5, -5.0, 20.5, 60.0, -3.0, 60.0]
    for poly, (w, h) in ((pts, (1920, 1080)), (tall, (W, H))):
        item = Item("d", "x.jpg", w, h, (Label(0, CocoPolygon((np.array(poly),))),))
        (stamp,) = render(item, CLASSES, rule="coco")
        got = np.zeros((h, w), np.uint8)
        got[stamp.window] = stamp.parts
        assert np.array_equal(got, full_frame([poly], h, w))
