"""CVAT reader (XML <image> elements), labelmap and Segmentation Mask importer, and the `cvat`
writer's painting rules, on small hand-made inputs (pixels decoded, never bytes compared)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from maskcore.errors import ConfigError, InputError, ItemError
from maskcore.formats import cvat, cvat_masks
from maskcore.formats.base import ItemContext, pack_parts
from maskcore.model import Bitmap, ClassInfo, ClassTable, CocoPolygon, Ellipse, Point, Polyline
from maskcore.palette import voc_color

CLASSES = ClassTable((ClassInfo("person", (255, 0, 0)), ClassInfo("car", (0, 255, 0)),
                      ClassInfo("Zebra", (0, 0, 255))))


def element(body: str, w: int = 32, h: int = 24) -> bytes:
    return f'<image id="0" name="x.jpg" width="{w}" height="{h}">{body}</image>'.encode()


def parse(body: str, classes: ClassTable = CLASSES, **kw) -> cvat.Item:
    return cvat.parse_item(element(body, **kw), classes, dataset="default", name="x.jpg")


def export(item, classes=CLASSES, **opts):
    ctx = ItemContext(item, classes, rule=cvat.RULE)
    options = cvat_masks.CvatOptions.from_mapping(opts, prefix="cvat", defaults={})
    out = cvat_masks.write_item(ctx, options)
    cls, obj = (cv2.imdecode(np.frombuffer(b.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                for b in out.blobs)
    return cls, obj, out


def rgb_at(img, x, y):
    return tuple(int(v) for v in img[y, x])


# ---------------------------------------------------------------------------- XML reader
def test_task_classes_in_order_with_colours_and_sublabels_skipped():
    xml = (b'<?xml version="1.0"?><annotations><version>1.1</version><meta><task><labels>'
           b'<label><name>b</name><color>#0a0B0c</color></label>'
           b'<label><name>a</name><color>#ffffff</color></label>'
           b'<label><name>nose</name><color>#123456</color><parent>skel</parent></label>'
           b'</labels></task></meta></annotations>')
    classes = cvat.parse_classes(xml)
    assert classes.names() == ["b", "a"] and classes[0].color == (10, 11, 12)


def test_task_rejects_doctype_tracks_and_duplicate_labels():
    with pytest.raises(InputError, match="DOCTYPE"):
        cvat.parse_classes(b'<!DOCTYPE x [<!ENTITY a "b">]><annotations/>')
    with pytest.raises(InputError, match="DOCTYPE"):  # not hidden behind a long comment
        cvat.parse_classes(b"<!--" + b"x" * 100_000 + b'--><!DOCTYPE x [<!ENTITY a "b">]>'
                           b"<annotations/>")
    dup = (b"<annotations><meta><task><labels><label><name>a</name></label><label><name>a"
           b"</name></label></labels></task></meta></annotations>")
    with pytest.raises(InputError, match="unique label names"):
        cvat.parse_classes(dup)
    track = (b"<annotations><meta><task><labels><label><name>a</name></label></labels></task>"
             b'</meta><track id="0" label="a"/></annotations>')
    with pytest.raises(InputError, match="CVAT for video"):
        list(cvat.iter_task(io.BytesIO(track)))


def test_shapes_become_geometries_in_cvat_paint_order():
    item = parse('<box label="car" xtl="1" ytl="2" xbr="5" ybr="6" rotation="10" z_order="0"/>'
                 '<polygon label="person" points="1.234,1;9,1;5,8" z_order="1"/>'
                 '<ellipse label="Zebra" cx="10" cy="10" rx="3.5" ry="2" z_order="0"/>'
                 '<polyline label="car" points="1.7,1;5,5"/>'
                 '<points label="car" points="1,1;2.9,3"/>'
                 '<mask label="car" rle="1, 2, 3" left="4" top="5" width="3" height="2"/>'
                 '<tag label="car"/>')
    kinds = [type(lab.geometry).__name__ for lab in item.labels]
    # z 0 in input order, the rotated box last at z 0, then z 1
    assert kinds == ["Ellipse", "Polyline", "Point", "Point", "Bitmap", "CocoPolygon",
                     "CocoPolygon"]
    assert item.labels[-1].class_index == 0 and item.labels[-1].z_order == 1
    assert item.labels[-1].geometry.parts[0].tolist() == [1.23, 1, 9, 1, 5, 8]  # 2 decimals
    e = item.labels[0].geometry
    assert isinstance(e, Ellipse) and (e.cx, e.rx, e.ry) == (10, 3.5, 2)
    assert isinstance(item.labels[1].geometry, Polyline)
    assert isinstance(item.labels[2].geometry, Point) and item.labels[3].geometry.x == 2
    bm = item.labels[4].geometry
    assert isinstance(bm, Bitmap) and (bm.left, bm.top) == (4, 5)
    assert bm.mask.astype(int).tolist() == [[0, 1, 1], [0, 0, 0]]


def test_box_polygon_uses_datumaro_float_arithmetic_and_cvat_rotation():
    p = cvat.box_polygon(0.7, 0.1, 12.3, 9.9, 0.0)
    w = 12.3 - 0.7
    assert p.tolist() == [0.7, 0.1, 0.7 + w, 0.1, 0.7 + w, 0.1 + (9.9 - 0.1), 0.7,
                          0.1 + (9.9 - 0.1)]
    r = cvat.box_polygon(0, 0, 10, 4, 90.0).reshape(-1, 2)
    assert r.tolist() == [[7.0, -3.0], [7.0, 7.0], [3.0, 7.0], [3.0, -3.0]]


def test_box_pixels_equal_pycocotools_on_the_full_frame():
    item = parse('<box label="car" xtl="2.3" ytl="1.7" xbr="20.9" ybr="15.1" rotation="33.3"/>')
    _, obj, _ = export(item)
    poly = cvat.box_polygon(2.3, 1.7, 20.9, 15.1, 33.3).tolist()
    want = coco_mask.decode(coco_mask.frPyObjects([poly], 24, 32)[0]).astype(bool)
    assert ((obj != 0).any(axis=2) == want).all()


def test_ellipse_is_cvat_cv2_recipe_with_round_half_even():
    item = parse('<ellipse label="car" cx="15.5" cy="10" rx="6.5" ry="3" rotation="20"/>')
    _, obj, _ = export(item)
    want = np.zeros((24, 32), np.uint8)
    cv2.ellipse(want, (16, 10), (6, 3), 20.0, 0, 360, 255, thickness=-1)
    assert ((obj != 0).any(axis=2) == (want > 0)).all()


@pytest.mark.parametrize("body, reason", [
    ('<polygon label="dog" points="1,1;2,2;3,1"/>', "dog"),
    ('<polygon label="car" points="1,1;2,2"/>', "at least 3 points"),
    ('<polygon label="car" points="1,1;nan,2;3,3"/>', "finite"),
    ('<polygon label="car" points="1,1;2;3,3"/>', "points like"),
    ('<polygon label="car" points="1,1,2;2,3;3"/>', "points like"),  # commas = points
    ('<polygon label="car" points="1,1;2,x;3,3"/>', "points like"),
    ('<polygon label="car" points="1,1;;3,3"/>', "at least 3 points"),
    ('<mask label="car" rle="1,,x" left="0" top="0" width="2" height="2"/>', "integers"),
    ('<box label="car" xtl="1" ytl="1" xbr="1e9" ybr="3"/>', "coordinate within"),
    ('<mask label="car" rle="1, 2" left="0" top="0" width="2" height="2"/>', "adding up"),
    ('<mask label="car" rle="1, -1, 4" left="0" top="0" width="2" height="2"/>', "non-negative"),
    ('<mask label="car" rle="0 1,3" left="0" top="0" width="2" height="2"/>', "integers"),
    ('<mask label="car" rle="1,2 ,1 0" left="0" top="0" width="1" height="13"/>', "integers"),
    ('<mask label="car" rle="1, ,3" left="0" top="0" width="2" height="2"/>', "integers"),
    ('<cube label="car"/>', "CVAT shape"),
    ('<box label="car" xtl="1" ytl="1" xbr="3" ybr="3" z_order="x"/>', "integer"),
])
def test_bad_shapes_fail_the_item_with_a_reason(body, reason):
    with pytest.raises(ItemError, match=reason):
        parse(body)


@pytest.mark.parametrize("points", [
    "1.5,2.25;10,2;4,9.75", " 1.5, 2.25;10 ,2;4,9.75 ", "1.5,2.25;10,2; ;4,9.75;",
    "1.5,2.25;;10,2;4,9.75", "1.50,2.250;1e1,2;4,9.75",
])
def test_points_spelled_loosely_parse_like_plain_ones(points):
    """The C-level fast path takes plain 'x,y;...' only; blanks and empty points (which the
    careful parse skips) give the same geometry."""
    plain = parse('<polygon label="car" points="1.5,2.25;10,2;4,9.75"/>').labels[0].geometry
    got = parse(f'<polygon label="car" points="{points}"/>').labels[0].geometry
    assert np.array_equal(got.parts[0], plain.parts[0])


POLYGONS = ('<polygon label="car" points="1.5,2.25;10,2;4,9.755"/>'
            '<box label="car" xtl="1" ytl="1" xbr="3" ybr="3"/>'
            '<polygon label="person" points="0.004,0;31.996,0;16,23.5" z_order="1"/>'
            '<polygon label="car" points="-3.125,1;5,-2;7,7;2,8"/>')


@pytest.mark.parametrize("extra", ["", '<polygon label="car" points=" 1, 2;3,4 ;5,6;"/>',
                                   '<polyline label="car" points="1,1;5,5"/>'])
def test_polygons_parsed_in_one_pass_equal_parsed_one_by_one(extra, monkeypatch):
    """An item's plain polygons are parsed together (`_plain_polygons`); one spelled loosely
    sends them all to the careful parse: the same geometries either way."""
    together = parse(POLYGONS + extra)
    monkeypatch.setattr(cvat, "_plain_polygons", lambda shapes, limits: None)
    alone = parse(POLYGONS + extra)
    assert len(together.labels) == len(alone.labels) == 4 + bool(extra)
    for a, b in zip(together.labels, alone.labels, strict=True):
        assert type(a.geometry) is type(b.geometry) and a.z_order == b.z_order
        if isinstance(a.geometry, CocoPolygon):
            assert [p.tolist() for p in a.geometry.parts] == \
                [p.tolist() for p in b.geometry.parts]


def test_plain_numbers_are_python_floats_or_refused():
    """numpy's one-pass parse is taken only where it equals `float` on every value."""
    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.uniform(-3000, 3000, 4000), 10.0 ** rng.uniform(-320, 308, 500)])
    spelled = [repr(v) for v in vals.tolist()] + [f"{v:.2f}" for v in vals.tolist()] + \
        ["1e5", "-0", "+3.5", "5.", ".5", "1E-2", "2.5e-324", "1e400", "0.1000000000000000055"]
    spelled += spelled[-1:] if len(spelled) % 2 else []
    text = ";".join(f"{a},{b}" for a, b in zip(spelled[0::2], spelled[1::2], strict=True))
    got = cvat._plain_numbers(text, len(spelled) // 2)
    assert got is not None and got.tolist() == [float(v) for v in spelled]
    for bad in ("1.5.3,2", "1e,2", "1 ,2", "1,2,3", ",2", "1,", "0x1p3,2", "1_0,2", "inf,2",
                "\u0661,2"):
        assert cvat._plain_numbers(bad, 1) is None, bad


@pytest.mark.parametrize("bad, reason", [
    ("1,1;2,2", "at least 3 points"), ("1,1;nan,2;3,3", "finite"), ("1,1;2,2;3;3", "points like"),
    ("1,1;2,2;1e7,3", "coordinate within"),
])
def test_a_bad_polygon_among_plain_ones_fails_the_item_at_its_shape(bad, reason):
    with pytest.raises(ItemError, match=reason) as got:
        parse(POLYGONS + f'<polygon label="person" points="{bad}"/>')
    assert "#4 (person)" in str(got.value)


@pytest.mark.parametrize("rle", [
    f"{2**63 - 1},{2**63 - 1},6",  # wraps int64 to 4 = 2 x 2 if summed there
    f"{2**64},{2**64},4", "99999999999999999999999,0,4", "0,0,0,4,0,0,0", "5", "1,2",
])
def test_mask_runs_that_do_not_add_up_fail_however_large(rle):
    """Plain digits take numpy's parse: values saturate there, so each is checked against
    the box before the sum - a total that wraps int64 never passes for the box's area."""
    body = f'<mask label="car" rle="{rle}" left="0" top="0" width="2" height="2"/>'
    if sum(map(int, rle.split(","))) == 4:
        assert parse(body).labels[0].geometry.mask.all()
    else:
        with pytest.raises(ItemError, match="adding up"):
            parse(body)


def test_mask_runs_with_blanks_parse_like_plain_ones():
    plain = parse('<mask label="car" rle="1,2,1" left="3" top="4" width="2" height="2"/>')
    for rle in ("1, 2, 1", " 1 ,2,1\t", "+1,2,1", "\u0661,2,1", "01,2,1"):
        got = parse(f'<mask label="car" rle="{rle}" left="3" top="4" width="2" height="2"/>')
        assert np.array_equal(got.labels[0].geometry.mask, plain.labels[0].geometry.mask)


@pytest.mark.parametrize("rle, piece", [
    ("1,,2,1", "piece 2 of 4"), (",1,2,1", "piece 1 of 4"), ("1,2,1,", "piece 4 of 4"),
    ("", "piece 1 of 1"), (",", "piece 1 of 2"), ("1, ,2,1", "piece 2 of 4"),
    ("1,2,1,,", "piece 4 of 5"),
])
def test_mask_runs_with_an_empty_piece_fail_the_item_as_cvat_fails_the_file(rle, piece,
                                                                           monkeypatch):
    """CVAT's importer reads `map(int, rle.split(','))`: an empty piece raises there. The runs
    add up to the box (the pieces were skipped before), and the numpy pass and the careful
    parse give the same error."""
    body = f'<mask label="car" rle="{rle}" left="3" top="4" width="2" height="2"/>'
    with pytest.raises(ItemError, match=f"{piece} is empty; CVAT's importer fails on it"
                       ) as fast:
        parse(body)
    monkeypatch.setattr(cvat, "_plain_runs", lambda raw, area: None)
    with pytest.raises(ItemError) as careful:
        parse(body)
    assert str(careful.value) == str(fast.value)


def test_bad_image_elements_fail_the_item():
    with pytest.raises(ItemError, match="well-formed"):
        cvat.parse_item(b"<image", CLASSES, dataset="d", name="x")
    with pytest.raises(ItemError, match="width"):
        cvat.parse_item(b'<image name="x" width="0" height="3"/>', CLASSES, dataset="d", name="x")


def never() -> tuple[int, int]:
    raise AssertionError("the image was read although the annotation gives the size")


@pytest.mark.parametrize("attrs, needle", [
    ('width="0" height="3"', "positive integer"),  # datumaro: int("0"), a 0 size
    ('width="-4" height="3"', "positive integer"),
    ('width="4.0" height="3"', "integer 'width' and 'height'"),  # datumaro: int() fails
    ('width="four" height="3"', "integer 'width' and 'height'"),
    ('width="70000" height="3"', "65535"),
])
def test_bad_sizes_fail_the_item_without_reading_the_image(attrs, needle):
    with pytest.raises(ItemError, match=needle):
        cvat.parse_item(f'<image name="x" {attrs}/>'.encode(), CLASSES, dataset="d",
                        name="x", image_size=never)


def test_sizes_parse_as_datumaro_parses_them():
    item = cvat.parse_item(b'<image name="x" width=" 4 " height="+3"/>', CLASSES,
                           dataset="d", name="x", image_size=never)  # int()'s syntax
    assert (item.width, item.height) == (4, 3)


@pytest.mark.parametrize("attrs", ["", 'width="4"', 'height="3"', 'width="" height=""',
                                   'width="" height="3"'])
def test_a_size_missing_or_empty_comes_from_the_image_as_in_datumaro(attrs):
    """datumaro's `_load_items`: `if all((height, width))` (attribute text), else the size of
    the image file (both, even when one is given)."""
    body = '<box label="car" xtl="1" ytl="1" xbr="5" ybr="4"/>'
    data = f'<image name="x" {attrs}>{body}</image>'.encode()
    item = cvat.parse_item(data, CLASSES, dataset="d", name="x", image_size=lambda: (30, 20))
    assert (item.width, item.height, len(item.labels)) == (30, 20, 1)
    with pytest.raises(ItemError, match="image size in the annotation or an image file"):
        cvat.parse_item(data, CLASSES, dataset="d", name="x")
    with pytest.raises(ItemError, match="100000000 pixels"):  # the header meets the limits
        cvat.parse_item(data, CLASSES, dataset="d", name="x",
                        image_size=lambda: (20_000, 20_000))


def test_item_id_keeps_folders_and_drops_the_last_extension():
    assert cvat.item_id("dir/sub/img.with.dots.jpg") == "dir/sub/img.with.dots"
    assert cvat.item_id("noext") == "noext" and cvat.item_id("a.b/c") == "a.b/c"
    assert cvat.item_id(".hidden") == ".hidden"


# ---------------------------------------------------------------------------- painting
def test_z_order_then_input_order_later_wins_and_instances_numbered_in_paint_order():
    item = parse('<box label="car" xtl="0" ytl="0" xbr="10" ybr="10" z_order="1"/>'
                 '<box label="person" xtl="5" ytl="5" xbr="15" ybr="15"/>'
                 '<box label="Zebra" xtl="8" ytl="8" xbr="20" ybr="20"/>')
    cls, obj, out = export(item)
    assert rgb_at(cls, 6, 6) == (0, 255, 0)  # car z=1 on top of person
    assert rgb_at(cls, 12, 12) == (0, 0, 255)  # Zebra after person at z 0
    assert rgb_at(obj, 6, 6) == voc_color(3) and rgb_at(obj, 12, 12) == voc_color(2)
    assert rgb_at(cls, 25, 20) == (0, 0, 0) and out.instances == 3


def test_group_merged_under_largest_member_label_and_z():
    item = parse('<box label="car" xtl="0" ytl="0" xbr="4" ybr="4" group_id="2" z_order="9"/>'
                 '<box label="person" xtl="10" ytl="0" xbr="20" ybr="10" group_id="2"/>'
                 '<box label="Zebra" xtl="2" ytl="2" xbr="12" ybr="6" z_order="1"/>')
    cls, obj, out = export(item)
    assert rgb_at(cls, 1, 1) == (255, 0, 0)  # the car became person
    assert rgb_at(cls, 3, 3) == (0, 0, 255)  # the group took the person's z 0: Zebra on top
    assert rgb_at(obj, 1, 1) == rgb_at(obj, 15, 5) == voc_color(1)
    assert out.instances == 2


def test_background_class_erases_and_keeps_its_number():
    classes = ClassTable(CLASSES.classes, background=(9, 9, 9))
    item = parse('<box label="car" xtl="0" ytl="0" xbr="10" ybr="10"/>'
                 '<box label="background" xtl="2" ytl="2" xbr="4" ybr="4"/>'
                 '<box label="person" xtl="20" ytl="0" xbr="25" ybr="5"/>', classes)
    cls, obj, _ = export(item, classes)
    assert rgb_at(cls, 3, 3) == (9, 9, 9) and rgb_at(obj, 3, 3) == (0, 0, 0)
    assert rgb_at(cls, 30, 20) == (9, 9, 9)  # unannotated = the background label's colour
    assert rgb_at(obj, 22, 2) == voc_color(3)  # number 2 was used by the background shape
    assert cvat_masks.labelmap_text(classes, cvat_masks.CvatOptions()).decode().splitlines()[
        :2] == ["# label:color_rgb:parts:actions", "background:9,9,9::"]


def test_empty_shapes_keep_their_instance_number():
    item = parse('<polygon label="car" points="100,100;120,100;110,120"/>'
                 '<box label="person" xtl="0" ytl="0" xbr="5" ybr="5"/>')
    _, obj, _ = export(item)
    assert rgb_at(obj, 2, 2) == voc_color(2)


def test_polylines_and_points_paint_nothing_and_empty_items_are_background():
    item = parse('<polyline label="car" points="0,0;30,20"/><points label="car" points="3,3"/>')
    cls, obj, out = export(item)
    assert not cls.any() and not obj.any() and out.instances == 0 and out.class_pixels == {}


def test_voc_colours_by_labelmap_line():
    item = parse('<box label="Zebra" xtl="0" ytl="0" xbr="4" ybr="4"/>')
    cls, _, _ = export(item, colors="voc")
    assert rgb_at(cls, 1, 1) == voc_color(3)
    text = cvat_masks.labelmap_text(CLASSES, cvat_masks.CvatOptions(colors="voc")).decode()
    assert text.splitlines()[1:] == ["background:0,0,0::", "person:128,0,0::",
                                     "car:0,128,0::", "Zebra:128,128,0::"]


def test_colours_follow_each_jobs_classes_and_options_in_one_process():
    """The colour table is kept per (classes, options) object pair: another job in the same
    process (other colours, voc, or equal-looking new objects) never sees a stale table."""
    item = parse('<box label="Zebra" xtl="0" ytl="0" xbr="4" ybr="4"/>')
    other = ClassTable((ClassInfo("person", (1, 2, 3)), ClassInfo("car", (4, 5, 6)),
                        ClassInfo("Zebra", (7, 8, 9))))
    for classes, colors, want in ((CLASSES, "source", (0, 0, 255)), (other, "source", (7, 8, 9)),
                                  (other, "voc", voc_color(3)), (CLASSES, "source", (0, 0, 255))):
        cls, _, _ = export(item, classes, colors=colors)
        assert rgb_at(cls, 1, 1) == want
        assert cvat_masks.labelmap_bgr(classes, cvat_masks.CvatOptions(colors=colors)).tolist() \
            == [list(c[::-1]) for _, c in cvat_masks.labelmap(classes, cvat_masks.CvatOptions(
                colors=colors))]


def test_more_than_255_instances_error_or_wrap():
    boxes = "".join(f'<box label="car" xtl="{k % 30}" ytl="{k // 30}" xbr="{k % 30 + 1}" '
                    f'ybr="{k // 30 + 1}"/>' for k in range(300))
    item = parse(boxes)
    with pytest.raises(ItemError, match=r"at most 255 instances.*instance_overflow: wrap"):
        export(item)
    _, obj, out = export(item, instance_overflow="wrap")
    last = item.labels[-1].geometry.parts[0]
    assert rgb_at(obj, int(last[0]), int(last[1])) == voc_color(300 % 256)
    assert out.instances == 300


def test_more_than_255_labels_keep_their_colours_or_wrap_as_cvat_paints_them():
    """CVAT's paint_mask casts the class map to 8 bits: labelmap line k >= 256 is painted in
    line k % 256's colour (line 256 as background) while its labelmap lists line k's own."""
    many = ClassTable(tuple(ClassInfo(f"c{k:03d}", (k % 256, k // 256, 7)) for k in range(300)))
    item = parse('<box label="c000" xtl="0" ytl="0" xbr="4" ybr="4"/>'
                 '<box label="c255" xtl="5" ytl="0" xbr="9" ybr="4"/>'
                 '<box label="c256" xtl="10" ytl="0" xbr="14" ybr="4"/>'
                 '<box label="c299" xtl="15" ytl="0" xbr="19" ybr="4"/>', many)
    keep, _, _ = export(item, many)
    assert [rgb_at(keep, x, 2) for x in (2, 7, 12, 17)] == [
        (0, 0, 7), (255, 0, 7), (0, 1, 7), (43, 1, 7)]
    wrap, obj, out = export(item, many, class_overflow="wrap")
    # line 256 (c255) as line 0 (black background), line 257 (c256) as line 1 (c000), ...
    assert [rgb_at(wrap, x, 2) for x in (2, 7, 12, 17)] == [
        (0, 0, 7), (0, 0, 0), (0, 0, 7), (43, 0, 7)]
    assert out.class_pixels == {"c000": 16, "c255": 16, "c256": 16, "c299": 16}  # true labels
    assert rgb_at(obj, 7, 2) == voc_color(2)
    with pytest.raises(ConfigError, match=r"cvat\.class_overflow"):
        cvat_masks.CvatOptions.from_mapping({"class_overflow": "error"}, prefix="cvat",
                                            defaults={})


def test_subset_names_that_cvat_cannot_import_fail_the_item():
    item = cvat.parse_item(element(""), CLASSES, dataset="my_train", name="x.jpg")
    with pytest.raises(ItemError, match="without '_'"):
        export(item)


# ---------------------------------------------------------------------------- options
def test_options_are_validated_with_the_key_named():
    make = cvat_masks.CvatOptions.from_mapping
    with pytest.raises(ConfigError, match=r"cvat\.colour"):
        make({"colour": "voc"}, prefix="cvat", defaults={})
    with pytest.raises(ConfigError, match=r"cvat\.colors"):
        make({"colors": "rainbow"}, prefix="cvat", defaults={})
    with pytest.raises(ConfigError, match=r"cvat\.instance_overflow"):
        make({"instance_overflow": "ignore"}, prefix="cvat", defaults={})
    with pytest.raises(ConfigError, match=r"cvat\.zip"):
        make({"zip": "yes"}, prefix="cvat", defaults={})
    assert make({"zip": True}, prefix="cvat", defaults={}).zip


def test_check_classes_refuses_duplicate_colours_and_bad_names():
    opts = cvat_masks.CvatOptions()
    dup = ClassTable((ClassInfo("a", (1, 2, 3)), ClassInfo("b", (1, 2, 3))))
    with pytest.raises(ConfigError, match="colors: voc"):
        opts.check_classes(dup, "cvat")
    cvat_masks.CvatOptions(colors="voc").check_classes(dup, "cvat")
    black = ClassTable((ClassInfo("road", (0, 0, 0)),))
    with pytest.raises(ConfigError, match="'background' and 'road'"):
        opts.check_classes(black, "cvat")
    for bad in ("a:b", " pad", "#x", "line\nbreak", "background"):
        with pytest.raises(ConfigError, match="labelmap"):
            opts.check_classes(ClassTable((ClassInfo(bad, (1, 1, 1)),)), "cvat")


# ---------------------------------------------------------------------------- labelmap
def test_labelmap_parsing_follows_datumaro_importer_rules():
    text = (b"# label:color_rgb:parts:actions\n\nbackground:0,0,0::\n cat: 10, 20 ,30:p1, p2:\n"
            b"dog:1,2,3::# inline comment is an action\nnocolor:::\n")
    entries = cvat.parse_labelmap(text)
    assert [e.name for e in entries] == ["background", "cat", "dog", "nocolor"]
    assert entries[1].color == (10, 20, 30) and entries[1].parts == ("p1", "p2")
    assert entries[2].actions == ("# inline comment is an action",)
    classes = cvat.labelmap_classes(entries)
    assert classes.names() == ["cat", "dog", "nocolor"] and classes.background_line == 0
    assert dict(classes.colormap) == {(0, 0, 0): 0, (10, 20, 30): 1, (1, 2, 3): 2}


@pytest.mark.parametrize("text, reason", [
    (b"a:1,2,3:\n", "4 ':'-separated"),
    (b"a:1,2::\n", "colour"),
    (b"a:1,2,300::\n", "colour"),
    (b"a:::\na:::\n", "defined once"),
    (b"# only a comment\n", "at least one label"),
])
def test_bad_labelmaps_are_input_errors_with_the_line(text, reason):
    with pytest.raises(InputError, match=reason):
        cvat.parse_labelmap(text)


def test_colourless_labelmap_gets_voc_colours_and_no_labelmap_the_voc_default():
    classes = cvat.labelmap_classes(cvat.parse_labelmap(b"background:::\na:::\nb:::\n"))
    assert [c.color for c in classes.classes] == [voc_color(1), voc_color(2)]
    default = cvat.parse_labelmap_classes(None)
    assert default.names()[0] == "aeroplane" and default.names()[-1] == "ignored"
    assert dict(default.colormap)[(224, 224, 192)] == 21


# ---------------------------------------------------------------------------- mask import
LM = cvat.labelmap_classes(cvat.parse_labelmap(
    b"background:0,0,0::\nperson:255,0,0::\ncar:0,255,0::\n"))


def png(arr) -> bytes:
    return cv2.imencode(".png", arr)[1].tobytes()


def rgb_png(rgb: np.ndarray) -> bytes:
    return png(np.ascontiguousarray(rgb[:, :, ::-1]))


def import_item(class_png: bytes, object_png: bytes | None = None):
    data = class_png if object_png is None else pack_parts([class_png, object_png])
    return cvat.parse_item(data, LM, dataset="default", name="a.b.png")


def test_class_and_object_pngs_become_instance_bitmaps():
    cls = np.zeros((10, 12, 3), np.uint8)
    obj = np.zeros_like(cls)
    cls[1:4, 1:4] = (255, 0, 0)
    obj[1:4, 1:4] = voc_color(1)
    cls[5:9, 5:11] = (0, 255, 0)
    obj[5:9, 5:11] = voc_color(3)  # id 2 unused: a placeholder keeps the numbering
    item = import_item(rgb_png(cls), rgb_png(obj))
    assert (item.width, item.height) == (12, 10)
    assert [lab.class_index for lab in item.labels] == [0, 0, 1]
    assert isinstance(item.labels[1].geometry, CocoPolygon) and not item.labels[1].geometry.parts
    bm = item.labels[2].geometry
    assert (bm.left, bm.top, bm.mask.shape) == (5, 5, (4, 6))


def test_instance_spanning_classes_takes_the_largest_line():
    cls = np.zeros((4, 4), np.uint8)
    cls[0, 0], cls[0, 1] = 1, 2
    obj = np.zeros((4, 4), np.uint8)
    obj[0, :2] = 1
    item = import_item(png(cls), png(obj))
    assert [lab.class_index for lab in item.labels] == [1]


def test_class_only_import_one_bitmap_per_class_background_skipped():
    cls = np.zeros((4, 5), np.uint8)
    cls[0, 0], cls[3, 4] = 2, 1
    item = import_item(png(cls))
    assert [lab.class_index for lab in item.labels] == [0, 1]


def test_mask_import_errors_name_the_file_and_the_value():
    bad = np.zeros((4, 4, 3), np.uint8)
    bad[0, 0] = (1, 2, 3)
    with pytest.raises(ItemError, match=r"SegmentationClass/a\.b\.png.*\(1, 2, 3\)"):
        import_item(rgb_png(bad))
    idx = np.full((4, 4), 7, np.uint8)
    with pytest.raises(ItemError, match="index 7"):
        import_item(png(idx))
    obj = np.zeros((4, 4, 3), np.uint8)
    obj[0, 0] = (243, 243, 243)
    with pytest.raises(ItemError, match=r"SegmentationObject/a\.b\.png.*243"):
        import_item(png(np.zeros((4, 4), np.uint8)), rgb_png(obj))
    lone = np.zeros((4, 4), np.uint8)
    lone[1, 1] = 1
    with pytest.raises(ItemError, match="only background"):
        import_item(png(np.zeros((4, 4), np.uint8)), png(lone))
    with pytest.raises(ItemError, match="8-bit"):
        import_item(png(np.zeros((4, 4), np.uint16)))
    with pytest.raises(ItemError, match="not one"):
        import_item(b"\x89PNG nope")
    with pytest.raises(ItemError, match="size"):
        import_item(png(np.zeros((4, 4), np.uint8)), png(np.zeros((4, 5), np.uint8)))


def test_subset_problem():
    assert cvat.subset_problem("Train") is None and cvat.subset_problem("default") is None
    assert "'_'" in cvat.subset_problem("my_train")
    assert cvat.subset_problem("a/b") and cvat.subset_problem("")


@pytest.mark.parametrize("seed", range(6))
def test_random_hostile_items_parse_the_same_without_the_one_pass_parsers(seed, monkeypatch):
    """Random items of polygons, polylines, points and masks whose numbers are spelled every
    way (exponents, signs, '1e400', hex, 'nan', '١', blanks, empty pieces, runs beyond int64),
    some under tight point limits: the one-pass parsers (`_plain_polygons`, `_plain_runs`)
    give the geometries, or the error, the careful parses give."""
    import dataclasses
    import random

    from maskcore.limits import DEFAULT_LIMITS

    rng = random.Random(seed)
    tokens = ["0", "-1", "+1", "1.", ".5", "1e5", "1E-5", "1e400", "1e-400", "9" * 30, "1e",
              ".", "-", "1-2", "", " 1", "inf", "nan", "0x10", "1_0", "\u0661", "4.9e-324"]

    def number() -> str:
        if rng.random() < .6:
            return f"{rng.uniform(-2, 40):.{rng.randint(0, 7)}f}"
        return rng.choice(tokens)

    def item() -> bytes:
        shapes = []
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(["polygon", "polygon", "mask", "polyline", "points"])
            if kind == "mask":
                w, h, runs = rng.randint(1, 4), rng.randint(1, 4), []
                left = w * h
                while left > 0:
                    runs.append(rng.randint(0, left))
                    left -= runs[-1]
                rle = ",".join(map(str, runs))
                rle = rng.choice([rle, rle + ",", rle.replace(",", ", "), "-" + rle,
                                  rle.replace(",", " "), " " + rle.replace(",", " ,\t"),
                                  rle.replace("0", "0 0", 1), rle.replace("1", "1\u00a0"),
                                  rle + ",99999999999999999999", rle.replace("1", "\u0661")])
                shapes.append(f'<mask label="car" rle="{rle}" left="1" top="2" width="{w}" '
                              f'height="{h}"/>')
            else:
                pts = ";".join(f"{number()},{number()}" for _ in range(rng.randint(1, 5)))
                shapes.append(f'<{kind} label="car" points="{pts}"/>')
        return element("".join(shapes))

    def parsed(data: bytes, limits) -> object:
        try:
            got = cvat.parse_item(data, CLASSES, dataset="d", name="x.jpg", limits=limits)
        except ItemError as e:
            return str(e)
        return [(type(la.geometry).__name__, repr(la.geometry.parts) if isinstance(
            la.geometry, CocoPolygon) else getattr(la.geometry, "mask", la.geometry).tobytes()
            if isinstance(la.geometry, Bitmap) else repr(la.geometry)) for la in got.labels]

    for _ in range(300):
        data = item()
        limits = DEFAULT_LIMITS if rng.random() < .8 else dataclasses.replace(
            DEFAULT_LIMITS, max_points=rng.randint(3, 12), max_shape_points=rng.randint(3, 6))
        fast = parsed(data, limits)
        with monkeypatch.context() as m:
            m.setattr(cvat, "_plain_polygons", lambda shapes, limits: None)
            m.setattr(cvat, "_plain_runs", lambda raw, area: None)
            assert parsed(data, limits) == fast, data


def test_labelmap_lines_split_at_newlines_only_as_datumaro_reads_the_file():
    """A '\\x0c' (or U+2028) inside a label name does not end the line (str.splitlines did:
    'ca\\x0cr:1,2,3::' became two lines of the wrong field count); \\r and \\r\\n do."""
    entries = cvat.parse_labelmap("ca\x0cr:1,2,3::\r\nbus\u2028x:4,5,6::\rvan:::".encode())
    assert [e.name for e in entries] == ["ca\x0cr", "bus\u2028x", "van"]
