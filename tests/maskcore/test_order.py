"""The one drawing order and composition every writer encodes from (maskcore/order.py), the
background label, and the not-painted counts that reach the manifest."""

from __future__ import annotations

import json

import numpy as np

from maskcore.formats import clearml, coco, cvat, cvat_masks, supervisely_masks, zarr_masks
from maskcore.formats.base import ItemContext
from maskcore.manifest import ManifestEntry, summarize
from maskcore.model import BACKGROUND_CLASS, ClassInfo, ClassTable, Item, Label, Rectangle
from maskcore.order import compose, draw_order

CLASSES = ClassTable((ClassInfo("person", (255, 0, 0)), ClassInfo("car", (0, 255, 0))),
                     background=(0, 0, 0))
XML_HEAD = (b'<annotations><version>1.1</version><meta><task><labels>'
            b'<label><name>background</name></label>'
            b'<label><name>person</name></label><label><name>car</name></label>'
            b'</labels></task></meta></annotations>')


def element(body: str) -> bytes:
    return f'<image id="0" name="x.jpg" width="40" height="30">{body}</image>'.encode()


def cvat_item(body: str) -> Item:
    return cvat.parse_item(element(body), CLASSES, dataset="default", name="x.jpg")


def all_writers(ctx: ItemContext) -> dict[str, object]:
    return {
        "cvat": cvat_masks.write_item(ctx, cvat_masks.CvatOptions()),
        "clearml": clearml.write_item(ctx, clearml.ClearmlOptions()),
        "zarr": zarr_masks.write_item(ctx, zarr_masks.ZarrOptions()),
        "supervisely": supervisely_masks.write_item(ctx, supervisely_masks.SuperviselyOptions(
            masks_human=False, images=False, annotations=False)),
    }


def test_cvat_order_groups_are_one_instance_after_ungrouped_shapes():
    """The issue's case: zarr/ClearML used to number every grouped shape and ignore groups."""
    item = cvat_item(
        '<box label="car" xtl="0" ytl="0" xbr="10" ybr="10" group_id="3"/>'
        '<box label="person" xtl="5" ytl="5" xbr="30" ybr="20" group_id="3"/>'
        '<box label="car" xtl="8" ytl="8" xbr="12" ybr="12"/>')
    order = draw_order(item, ItemContext(item, CLASSES, rule="coco").stamps(), "coco")
    # the ungrouped car first, then the group as ONE person (its largest member)
    assert [(i.class_index, len(i.stamps)) for i in order] == [(1, 1), (0, 2)]
    comp = compose(item, CLASSES, ItemContext(item, CLASSES, rule="coco").stamps(), "coco")
    assert comp.instances == 2 and comp.class_pixels == {"person": 10 * 10 + 25 * 15 - 25}
    assert comp.index[10, 10] == 2 and comp.class_map()[10, 10] == 1


def test_every_writer_gets_the_same_class_map_and_histogram():
    item = cvat_item(
        '<box label="person" xtl="0" ytl="0" xbr="20" ybr="20" z_order="1"/>'
        '<polygon label="car" points="5,5;35,5;35,25" group_id="1"/>'
        '<box label="car" xtl="30" ytl="0" xbr="40" ybr="4" group_id="1"/>'
        '<box label="background" xtl="2" ytl="2" xbr="6" ybr="6" z_order="2"/>')
    ctx = ItemContext(item, CLASSES, rule="coco")
    outs = all_writers(ctx)
    pixels = {name: o.class_pixels for name, o in outs.items()}
    assert len({json.dumps(p, sort_keys=True) for p in pixels.values()}) == 1, pixels
    assert {o.instances for o in outs.values()} == {2}
    comp = ctx.composition()
    assert comp.class_map()[3, 3] == 0  # the background box erased the person
    assert comp.top == 2 and comp.index[3, 3] == 0  # its number (3) stays unused


def test_supervisely_items_draw_largest_area_first_in_every_format():
    classes = ClassTable((ClassInfo("road", (1, 2, 3)), ClassInfo("car", (4, 5, 6))))
    item = Item("ds", "a.png", 30, 30, (Label(1, Rectangle(2, 2, 5, 5)),
                                        Label(0, Rectangle(0, 0, 20, 20))))
    comp = ItemContext(item, classes).composition()
    assert comp.class_map()[3, 3] == 2  # the small car on top of the big road
    assert comp.class_pixels == {"road": 441 - 16, "car": 16}


def test_background_label_of_datumaro_xml_and_coco_is_not_a_class():
    classes = cvat.parse_classes(XML_HEAD)
    assert classes.names() == ["person", "car"] and classes.background == (0, 0, 0)
    assert [c.color for c in classes.classes] == [(128, 0, 0), (0, 128, 0)]  # VOC by line
    text = cvat_masks.labelmap_text(classes, cvat_masks.CvatOptions()).decode()
    assert text.splitlines()[1:] == ["background:0,0,0::", "person:128,0,0::", "car:0,128,0::"]
    labels = clearml.mask_labels(classes)["_all_"]
    assert [v["labels"] for v in labels] == [["background"], ["person"], ["car"]]
    doc = {"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "background"}, {"id": 2, "name": "person"}, {"id": 3, "name": "car"}]}
    from_coco = coco.parse_classes(json.dumps(doc).encode())
    assert from_coco == classes
    assert zarr_masks.root_attributes(from_coco)["classes"][0] == {
        "index": 1, "name": "person", "color": [128, 0, 0]}
    item = cvat_item('<box label="background" xtl="0" ytl="0" xbr="3" ybr="3"/>')
    assert item.labels[0].class_index == BACKGROUND_CLASS


def test_not_painted_kinds_are_counted_per_item_and_in_the_summary():
    item = cvat_item(
        '<tag label="car"/><tag label="person"><attribute name="a">1</attribute></tag>'
        '<points label="car" points="1,1;2,2;3,3"/><polyline label="car" points="0,0;9,9"/>'
        '<box label="car" occluded="1" xtl="0" ytl="0" xbr="4" ybr="4">'
        '<attribute name="color">red</attribute></box>'
        '<skeleton label="person"/><cuboid label="car"/>')
    out = cvat_masks.write_item(ItemContext(item, CLASSES, rule="coco"), cvat_masks.CvatOptions())
    assert out.not_painted == {"attribute": 2, "cuboid": 1, "occluded": 1, "points": 3,
                               "polyline": 1, "skeleton": 1, "tag": 2}
    entry = ManifestEntry("default", "x.jpg", "ok", not_painted=out.not_painted)
    old_line = json.dumps({"dataset": "d", "item": "y.jpg", "status": "ok"}) + "\n"
    assert ManifestEntry.from_line(old_line).not_painted == {}  # lines from older versions
    assert ManifestEntry.from_line(entry.to_line()) == entry
    total = summarize([entry.to_line(), entry.to_line(), old_line]).to_dict()["not_painted"]
    assert total["points"] == 6 and total["tag"] == 4


def test_coco_attributes_are_counted_not_painted():
    doc = {"image": {"id": 1, "width": 10, "height": 10, "file_name": "a.jpg"},
           "categories": [[1, "person"]],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 3, 3],
                            "segmentation": [], "attributes": {"occluded": True,
                                                               "rotation": 30.0}}]}
    classes = ClassTable((ClassInfo("person", (1, 1, 1)),))
    item = coco.parse_item(json.dumps(doc).encode(), classes, dataset="d", name="a.jpg")
    assert dict(item.not_painted) == {"attribute": 1, "occluded": 1}
    assert np.count_nonzero(ItemContext(item, classes, rule="coco").composition().index) == 9
