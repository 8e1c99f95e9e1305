"""The COCO reader: categories -> classes, the per-image split, and pixels equal to
pycocotools' `COCO.annToMask` on the full frame (random float polygons, multi-part, outside the
image, RLE compressed and uncompressed); every kind of bad annotation fails its item alone."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from maskcore.errors import InputError, ItemError
from maskcore.formats import coco
from maskcore.limits import Limits
from maskcore.model import Bitmap, CocoPolygon
from maskcore.palette import voc_color
from maskcore.rasterize import render

CATS = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 7, "name": "tree"}]


def doc(images, anns, cats=CATS):
    return json.dumps({"images": images, "annotations": anns, "categories": cats}).encode()


def one_image(anns, w=64, h=48, name="a.jpg"):
    split = coco.split_dataset(doc([{"id": 1, "file_name": name, "width": w, "height": h}],
                                   [{"image_id": 1, **a} for a in anns]))
    (im,) = split.images
    return split, im


def parse(anns, w=64, h=48, **kw):
    split, im = one_image(anns, w, h)
    assert im.problem is None, im.problem
    return coco.parse_item(im.inline, split.classes, dataset="ds", name=im.name, **kw), split


def painted(item, classes, k):
    """Label k of `item` alone on a full frame, as the kernel renders it under the coco rule."""
    frame = np.zeros((item.height, item.width), np.uint8)
    stamp = render(item, classes, rule="coco")[k]
    if stamp is not None:
        frame[stamp.window][stamp.covered] = 1
    return frame


def ann_to_mask(images, anns, cats=CATS):
    """pycocotools' own annToMask for every annotation (the oracle)."""
    api = COCO()
    api.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return [api.annToMask(a) for a in anns]


# ---------------------------------------------------------------------------- classes, split
def test_classes_are_categories_in_file_order_with_voc_colours():
    classes = coco.parse_classes(doc([], []))
    assert classes.names() == ["car", "person", "tree"]
    assert [c.color for c in classes.classes] == [voc_color(1), voc_color(2), voc_color(3)]


@pytest.mark.parametrize("cats, needle", [
    ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "unique category ids"),
    ([{"id": 1, "name": "a"}, {"id": 2, "name": "a"}], "unique category names"),
    ([{"id": "1", "name": "a"}], "integer 'id'"),
    ([{"id": 1, "name": ""}], "non-empty category 'name'"),
    ([{"id": 1, "name": "a\ud800"}], "valid Unicode"),  # a lone surrogate escape
])
def test_bad_categories_are_input_errors(cats, needle):
    with pytest.raises(InputError, match=needle):
        coco.split_dataset(doc([], [], cats))


@pytest.mark.parametrize("data", [b"{oops", b"[]", b'{"images": [], "annotations": []}'])
def test_not_a_coco_file_is_an_input_error(data):
    with pytest.raises(InputError):
        coco.split_dataset(data)


def test_split_gives_each_image_its_own_annotations_and_names_problems():
    images = [{"id": 1, "file_name": "sub/a.jpg", "width": 10, "height": 10},
              {"id": "x", "file_name": "b.jpg", "width": 10, "height": 10},
              {"id": 3, "file_name": "../escape.jpg", "width": 10, "height": 10},
              {"id": 4, "file_name": "/abs/c.jpg", "width": 10, "height": 10},
              {"id": 5, "file_name": "b.jpg", "width": 10, "height": 10},
              {"id": 6, "file_name": "sub/a.png", "width": 10, "height": 10},
              {"id": 1, "file_name": "dup-id.jpg", "width": 10, "height": 10},
              {"id": 8, "width": 10, "height": 10}]
    anns = [{"id": 10, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 11, "image_id": "x", "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 12, "image_id": 1, "category_id": 7, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"id": 13, "image_id": 99, "category_id": 7, "segmentation": []}]
    split = coco.split_dataset(doc(images, anns))
    assert split.orphans == 1
    by_name = {im.name: im for im in split.images}
    a = json.loads(by_name["sub/a.jpg"].inline)
    assert [x["id"] for x in a["annotations"]] == [10, 12]  # file order, only its own
    assert a["image"]["file_name"] == "sub/a.jpg" and a["categories"] == [[3, "car"],
                                                                          [7, "tree"]]
    problems = {im.name: im.problem for im in split.images if im.problem}
    assert "relative to the images folder" in problems["../escape.jpg"]
    assert "relative to the images folder" in problems["/abs/c.jpg"]
    assert "one image per file stem" in problems["sub/a.png"]
    assert "unique image ids" in problems["dup-id.jpg"]
    assert "non-empty 'file_name'" in problems["images[7]"]
    first, dup = [im for im in split.images if im.name == "b.jpg"]
    assert first.problem is None and "unique file names" in dup.problem
    assert [x["id"] for x in json.loads(first.inline)["annotations"]] == [11]


def test_dataset_name_drops_the_instances_prefix():
    assert coco.dataset_name("annotations/instances_val2017.json") == "val2017"
    assert coco.dataset_name("instances_.json") == "instances_"
    assert coco.dataset_name("my_coco.json") == "my_coco"


# ---------------------------------------------------------------------------- pixels
def random_polygon(rng, w, h):
    n = int(rng.integers(3, 12))
    cx, cy = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.2 * h, 1.2 * h)
    r = rng.uniform(1, 0.6 * max(w, h))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.3, 1.0, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    if rng.random() < 0.3:  # coordinates on the 1/5 grid pycocotools snaps to
        pts = np.round(pts * 10) / 10
    return [round(float(v), 3) for v in pts.ravel()]


def test_random_float_polygons_equal_ann_to_mask():
    rng = np.random.default_rng(20261122)
    for trial in range(120):
        w, h = int(rng.integers(8, 90)), int(rng.integers(8, 90))
        images = [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}]
        anns = []
        for k in range(4):
            parts = [random_polygon(rng, w, h) for _ in range(int(rng.integers(1, 4)))]
            if rng.random() < 0.2:
                parts.append([1.0, 2.0, 3.5, 4.0])  # a 2-point part paints nothing
            anns.append({"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": parts})
        oracle = ann_to_mask(images, anns)
        item, split = parse(anns, w, h)
        for k in range(len(anns)):
            assert np.array_equal(painted(item, split.classes, k), oracle[k]), (trial, k)


def random_mask(rng, w, h):
    m = np.zeros((h, w), np.uint8)
    kind = rng.integers(0, 4)
    if kind == 0:
        m[:] = rng.random((h, w)) < rng.uniform(0.05, 0.95)
    elif kind == 1:
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        m[y:y + int(rng.integers(1, h + 1)), x:x + int(rng.integers(1, w + 1))] = 1
    elif kind == 2:
        m[:] = 1
    return m  # kind 3: empty


def uncompressed(m):
    flat = m.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def test_random_rles_compressed_and_uncompressed_equal_ann_to_mask():
    rng = np.random.default_rng(7)
    for trial in range(150):
        w, h = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        images = [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}]
        masks = [random_mask(rng, w, h) for _ in range(2)]
        enc = coco_mask.encode(np.asfortranarray(masks[0]))
        anns = [{"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 1,
                 "segmentation": {"size": [h, w], "counts": enc["counts"].decode()}},
                {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 1,
                 "segmentation": {"size": [h, w], "counts": uncompressed(masks[1])}}]
        oracle = ann_to_mask(images, anns)
        item, split = parse(anns, w, h)
        drawn = [k for k in range(2) if masks[k].any()]  # an empty RLE makes no label
        assert len(item.labels) == len(drawn)
        for label_index, k in enumerate(drawn):
            assert np.array_equal(oracle[k], masks[k])
            assert np.array_equal(painted(item, split.classes, label_index), oracle[k]), trial
        for label in item.labels:
            assert isinstance(label.geometry, Bitmap)  # a window, never the full frame
            assert label.geometry.mask.any(axis=0)[[0, -1]].all()
            assert label.geometry.mask.any(axis=1)[[0, -1]].all()


def test_decode_counts_reads_large_and_zero_runs():
    m = np.zeros((3000, 2000), np.uint8, order="F")
    m[2999, 1999] = 1  # a run of 5,999,999 zeros, then one pixel
    enc = coco_mask.encode(m)
    runs = coco.decode_counts(enc["counts"].decode())
    assert runs.tolist() == [5_999_999, 1]
    assert coco.decode_counts("").size == 0


def test_bbox_without_segmentation_is_painted_as_pycocotools_frbbox():
    w, h = 50, 40
    bbox = [3.3, 4.6, 20.25, 10.7]
    item, split = parse([{"category_id": 1, "segmentation": [], "bbox": bbox},
                         {"category_id": 1, "bbox": bbox}], w, h)
    oracle = coco_mask.decode(coco_mask.frPyObjects(np.array([bbox]), h, w))[:, :, 0]
    assert oracle.sum() > 150
    for k in range(2):
        assert isinstance(item.labels[k].geometry, CocoPolygon)
        assert np.array_equal(painted(item, split.classes, k), oracle)


def test_labels_keep_annotation_order_and_class_of_their_category():
    item, split = parse([{"category_id": 7, "segmentation": [[0, 0, 9, 0, 9, 9]]},
                         {"category_id": 3, "segmentation": [[0, 0, 9, 0, 9, 9]]}])
    assert [split.classes[lb.class_index].name for lb in item.labels] == ["tree", "car"]
    assert (item.width, item.height, item.dataset, item.name) == (64, 48, "ds", "a.jpg")


# ---------------------------------------------------------------------------- bad items
@pytest.mark.parametrize("ann, needle", [
    ({"category_id": 99, "segmentation": [[0, 0, 5, 0, 5, 5]]}, "category_id declared"),
    ({"category_id": True, "segmentation": [[0, 0, 5, 0, 5, 5]]}, "category_id declared"),
    ({"category_id": 1, "segmentation": [[0, 0, 5, 0, 5]]}, "even number of coordinates"),
    ({"category_id": 1, "segmentation": [[0, 0, "5", 0, 5, 5]]}, "list of numbers"),
    ({"category_id": 1, "segmentation": [[0, 0, float("nan"), 0, 5, 5]]}, "finite"),
    ({"category_id": 1, "segmentation": [[0, 0, 1e12, 0, 5, 5]]}, "coordinates within"),
    ({"category_id": 1, "segmentation": [[0, 0, 10**400, 0, 5, 5]]}, "coordinates within"),
    ({"category_id": 1, "bbox": [1, 2, 3, -10**400]}, "coordinates within"),
    ({"category_id": 1, "segmentation": "polygon"}, "a segmentation"),
    ({"category_id": 1, "segmentation": []}, "'segmentation' or a 'bbox'"),
    ({"category_id": 1, "bbox": [1, 2, -3, 4]}, "width, height >= 0"),
    ({"category_id": 1, "segmentation": {"size": [48, 63], "counts": [3072]}}, "RLE 'size'"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": [3000]}}, "adding up"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": [3080, -8]}},
     "non-negative"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": "\x01\x02"}},
     "valid compressed RLE"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": "ÿÿ"}},
     "valid compressed RLE"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": "oooooooooooooooo1"}},
     "valid compressed RLE"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": "o"}},
     "valid compressed RLE"),
    ({"category_id": 1, "segmentation": {"size": [48, 64], "counts": None}}, "RLE 'counts'"),
])
def test_each_bad_annotation_fails_its_item_naming_it(ann, needle):
    split, im = one_image([{"id": 42, **ann}])
    with pytest.raises(ItemError, match=needle) as e:
        coco.parse_item(im.inline, split.classes, dataset="ds", name=im.name)
    assert "annotations[0] (id 42)" in str(e.value)


def parse_record(record: dict, **kw) -> coco.Item:
    split = coco.split_dataset(doc([{"id": 1, "file_name": "a.jpg", **record}], []))
    return coco.parse_item(split.images[0].inline, split.classes, dataset="ds", name="a.jpg",
                           **kw)


def never() -> tuple[int, int]:
    raise AssertionError("the image was read although the annotation gives the size")


@pytest.mark.parametrize("record, needle", [
    ({"width": 10.0, "height": 10}, "positive integer"),  # datumaro: not an int, refused
    ({"width": "10", "height": 10}, "positive integer"),
    ({"width": -10, "height": 10}, "positive integer"),
    ({"width": True, "height": 10}, "positive integer"),
    ({"width": [3], "height": 10}, "positive integer"),
    ({"width": 10 ** 6, "height": 10 ** 6}, "65535"),
])
def test_bad_image_sizes_fail_the_item_without_reading_the_image(record, needle):
    with pytest.raises(ItemError, match=needle):
        parse_record(record, image_size=never)


@pytest.mark.parametrize("record", [
    {}, {"height": 10}, {"width": 12}, {"width": None, "height": None},
    {"width": 0, "height": 10}, {"width": 12, "height": 0}, {"width": "", "height": 10},
])
def test_a_size_missing_or_falsy_comes_from_the_image_as_in_datumaro(record):
    """datumaro's `_parse_item`: `if img_info.get("height") and img_info.get("width")`, else
    the size of the image file (both, even when one is given)."""
    calls = []

    def header() -> tuple[int, int]:
        calls.append(1)
        return 30, 20

    item = parse_record(record, image_size=header)
    assert (item.width, item.height, len(calls)) == (30, 20, 1)
    with pytest.raises(ItemError, match="image size in the annotation or an image file"):
        parse_record(record)  # no image to read it from
    with pytest.raises(ItemError, match="65535"):  # the header's size meets the same limits
        parse_record(record, image_size=lambda: (70_000, 20))


def test_an_rle_is_checked_against_the_size_read_from_the_image():
    rle = {"size": [20, 30], "counts": [0, 600]}
    split = coco.split_dataset(doc([{"id": 1, "file_name": "a.jpg"}],
                                   [{"id": 1, "image_id": 1, "category_id": 1,
                                     "segmentation": rle}]))
    item = coco.parse_item(split.images[0].inline, split.classes, dataset="ds", name="a.jpg",
                           image_size=lambda: (30, 20))
    assert (item.width, item.height, len(item.labels)) == (30, 20, 1)
    with pytest.raises(ItemError, match="RLE 'size'"):
        coco.parse_item(split.images[0].inline, split.classes, dataset="ds", name="a.jpg",
                        image_size=lambda: (31, 20))


def test_limits_bound_one_item():
    split, im = one_image([{"category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]}] * 3)
    with pytest.raises(ItemError, match="at most 2 annotations"):
        coco.parse_item(im.inline, split.classes, dataset="ds", name="a.jpg",
                        limits=Limits(max_objects=2))
    with pytest.raises(ItemError, match="at most 10 bytes"):
        coco.parse_item(im.inline, split.classes, dataset="ds", name="a.jpg",
                        limits=Limits(max_annotation_bytes=10))
    with pytest.raises(ItemError, match="valid per-image COCO JSON"):
        coco.parse_item(b"{nope", split.classes, dataset="ds", name="a.jpg")


def test_malformed_values_fail_cleanly_never_crash():
    """Random values of the wrong type anywhere in the file: the split raises InputError or
    marks images, and parsing an image raises ItemError, never anything else."""
    rng = np.random.default_rng(3)
    weird = [None, True, -1, 2 ** 70, 1.5, float("nan"), "x", "", [], [1], [[1, 2]], {},
             {"size": [4, 4], "counts": "0"}, {"counts": [1, 2]}]
    base = {"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0,
                             "segmentation": [[0, 0, 5, 0, 5, 5]], "bbox": [0, 0, 5, 5]}],
            "categories": [{"id": 3, "name": "car"}]}
    paths = [("images", 0, "id"), ("images", 0, "file_name"), ("images", 0, "width"),
             ("images", 0, "height"), ("annotations", 0, "image_id"),
             ("annotations", 0, "category_id"), ("annotations", 0, "segmentation"),
             ("annotations", 0, "bbox"), ("categories", 0, "id"), ("categories", 0, "name"),
             ("annotations", 0), ("images", 0), ("categories", 0)]
    for _ in range(400):
        d = json.loads(json.dumps(base))
        for _ in range(int(rng.integers(1, 3))):
            path = paths[int(rng.integers(len(paths)))]
            value = weird[int(rng.integers(len(weird)))]
            node = d
            for p in path[:-1]:
                ok = (isinstance(node, dict) and p in node) or (
                    isinstance(node, list) and isinstance(p, int) and p < len(node))
                node = node[p] if ok else None
            if isinstance(node, dict):
                node[path[-1]] = value
            elif isinstance(node, list) and node:
                node[0] = value
        data = json.dumps(d).encode()
        try:
            split = coco.split_dataset(data)
        except InputError:
            continue
        for im in split.images:
            if im.problem is None:
                with contextlib.suppress(ItemError):
                    coco.parse_item(im.inline, split.classes, dataset="ds", name=im.name)
