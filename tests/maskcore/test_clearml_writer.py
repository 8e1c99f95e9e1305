"""The clearml writer: (i, i, i) RGB masks in drawing order, frames in the shape the ClearML SDK
reads (final URIs, rois only for the classes present), mask_labels.json background first, and
config errors before any work."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from maskcore.errors import ConfigError
from maskcore.formats import clearml
from maskcore.formats.base import ItemContext
from maskcore.model import ClassInfo, ClassTable, Item, Label, Polygon, Rectangle

CLASSES = ClassTable((ClassInfo("road", (1, 2, 3)), ClassInfo("car", (9, 9, 9)),
                      ClassInfo("sky", (0, 0, 255))))


def ctx_for(labels, *, name="sub/a.jpg", image_key="images/sub/a.jpg", w=40, h=30):
    item = Item("ds", name, w, h, tuple(labels), image_key)
    return ItemContext(item, CLASSES, output_uri=lambda k: f"s3://out/{k}",
                       input_uri=lambda k: f"s3://in/{k}")


def opts(**raw):
    return clearml.Options.from_mapping(raw, prefix="clearml", defaults={})


def test_mask_frame_and_counts():
    labels = [Label(0, Rectangle(0, 0, 39, 9)),  # road
              Label(1, Rectangle(5, 5, 14, 14)),  # car, on top of road
              Label(1, Polygon(np.array([[100, 100], [120, 100], [110, 120]])))]  # outside
    out = clearml.write_item(ctx_for(labels), opts())
    keys = [b.key for b in out.blobs]
    assert keys == ["clearml/masks/ds/sub/a.png", "clearml/_frames/ds/sub/a.json"]
    mask = cv2.imdecode(np.frombuffer(out.blobs[0].data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (30, 40, 3) and mask.dtype == np.uint8
    assert (mask[:, :, 0] == mask[:, :, 1]).all() and (mask[:, :, 1] == mask[:, :, 2]).all()
    assert mask[0, 0, 0] == 1 and mask[7, 7, 0] == 2 and mask[20, 20, 0] == 0
    assert out.class_pixels == {"road": 400 - 50, "car": 100} and out.instances == 2
    frame = json.loads(out.blobs[1].data)
    (src,) = frame["sources"]
    assert src == {"id": "image_entry_0", "uri": "s3://in/images/sub/a.jpg",
                   "content_type": "image/jpeg", "width": 40, "height": 30, "timestamp": 0,
                   "masks": [{"id": "00", "content_type": "image/png",
                              "uri": "s3://out/clearml/masks/ds/sub/a.png", "timestamp": 0}]}
    assert frame["rois"] == [
        {"label": ["road"], "sources": ["image_entry_0"], "meta": {"_type": "mask"},
         "mask": {"id": "00", "value": [1, 1, 1]}},
        {"label": ["car"], "sources": ["image_entry_0"], "meta": {"_type": "mask"},
         "mask": {"id": "00", "value": [2, 2, 2]}}]
    assert frame["id"] == "ds/sub/a.jpg"


def test_z_order_then_annotation_order_decides_what_is_on_top():
    labels = [Label(1, Rectangle(0, 0, 9, 9), z_order=2), Label(0, Rectangle(0, 0, 9, 9))]
    out = clearml.write_item(ctx_for(labels), opts())
    mask = cv2.imdecode(np.frombuffer(out.blobs[0].data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask[5, 5, 0] == 2 and out.class_pixels == {"car": 100}
    assert [r["label"] for r in json.loads(out.blobs[1].data)["rois"]] == [["car"]]


def test_empty_image_has_a_black_mask_and_no_rois():
    out = clearml.write_item(ctx_for([], image_key=None), opts(source_id="default"))
    mask = cv2.imdecode(np.frombuffer(out.blobs[0].data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert not mask.any()
    frame = json.loads(out.blobs[1].data)
    assert frame["rois"] == [] and frame["sources"][0]["id"] == "default"
    assert "uri" not in frame["sources"][0]


def test_mask_labels_background_first():
    (blob,) = clearml.dataset_files(CLASSES, opts())
    assert blob.key == "clearml/mask_labels.json"
    assert json.loads(blob.data) == {"_all_": [
        {"value": [0, 0, 0], "labels": ["background"]},
        {"value": [1, 1, 1], "labels": ["road"]},
        {"value": [2, 2, 2], "labels": ["car"]},
        {"value": [3, 3, 3], "labels": ["sky"]}]}


@pytest.mark.parametrize("raw, key", [({"bogus": 1}, "clearml.bogus"),
                                      ({"source_id": ""}, "clearml.source_id"),
                                      ({"thickness": 0}, "clearml.thickness")])
def test_bad_options_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        opts(**raw)


def test_more_than_255_classes_is_a_config_error():
    many = ClassTable(tuple(ClassInfo(f"c{i}", (0, 0, 0)) for i in range(256)))
    with pytest.raises(ConfigError, match="at most 255 classes"):
        opts().check_classes(many, "clearml")
    opts().check_classes(ClassTable(many.classes[:255]), "clearml")


def test_clearml_and_zarr_of_one_pass_share_one_composition():
    from maskcore.formats import zarr_masks

    ctx = ctx_for([Label(0, Rectangle(0, 0, 9, 9)), Label(2, Rectangle(5, 5, 20, 20))])
    a = clearml.write_item(ctx, opts())
    first = ctx.composition(thickness=2)
    z = zarr_masks.write_item(ctx, zarr_masks.Options())
    assert ctx.composition(thickness=2) is first  # composed once for the item
    # a Supervisely item: the app's order, largest area first, so road (100 px) is on top
    assert a.class_pixels == z.class_pixels == {"road": 100, "sky": 231}
    other = ctx_for([Label(0, Rectangle(0, 0, 9, 9))])
    assert other.composition(thickness=2) is not first  # a new item, a new composition


def test_clearml_and_zarr_ask_for_the_image_url_once_and_record_the_same():
    from maskcore.formats import zarr_masks

    asked = []
    ctx = ctx_for([Label(0, Rectangle(0, 0, 9, 9))])
    ctx.input_uri = lambda k: asked.append(k) or f"s3://in/{k}"
    frame = json.loads(clearml.write_item(ctx, opts()).record)
    group = json.loads(zarr_masks.write_item(ctx, zarr_masks.Options()).blobs[0].data)
    assert asked == [ctx.item.image_key]
    assert frame["sources"][0]["uri"] == group["attributes"]["image_uri"] == \
        f"s3://in/{ctx.item.image_key}"
    no_image = ctx_for([Label(0, Rectangle(0, 0, 9, 9))], image_key=None)
    assert no_image.image_uri() is None
    assert "uri" not in json.loads(clearml.write_item(no_image, opts()).record)["sources"][0]


@pytest.mark.parametrize("dtype, n", [(np.uint8, 4), (np.uint8, 256), (np.uint16, 300)])
def test_histogram_equals_bincount(dtype, n):
    from maskcore.order import histogram

    rng = np.random.default_rng(n)
    m = rng.integers(0, n, (70, 90)).astype(dtype)
    assert np.array_equal(histogram(m, n), np.bincount(m.ravel(), minlength=n))


def test_frame_bytes_are_the_compact_json_of_the_frame():
    """The record (and frame object) is json.dumps' compact UTF-8 text of `frame`, also for
    names with quotes and non-ASCII characters (keys cannot hold backslashes or controls)."""
    ctx = ctx_for([Label(1, Rectangle(0, 0, 9, 9))], name='ü "q"/é 漢\u2028.png',
                  image_key='img/ü "q"/é 漢\u2028.png')
    out = clearml.write_item(ctx, opts())
    key = clearml.mask_key("ds", ctx.item.stem)
    doc = clearml.frame(ctx, opts(), f"s3://out/{key}", [2])
    assert out.record == out.blobs[1].data == json.dumps(
        doc, ensure_ascii=False, separators=(",", ":")).encode()
