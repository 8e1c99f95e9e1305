"""Every registered writer satisfies `base.Writer` whole (no optional hooks for jobs/ to probe):
its constants, its Options' methods and a finalizer that can `take`, `close` and `abort`; what
is format-specific stays in the format's module (an input's annotation copied verbatim only into
a project of its own format, a Supervisely input's meta.json kept only by the Supervisely writer,
a DTL layer's defaults declared by the writer they apply to)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from maskcore.formats import FORMATS, INPUT_FORMATS, coco, cvat, supervisely, supervisely_masks
from maskcore.formats.base import ItemContext
from maskcore.model import ClassInfo, ClassTable, Item, Label, Polygon
from tests.maskcore.finalize_store import Store

CLASSES = ClassTable((ClassInfo("car", (255, 0, 0), "polygon"),))
WRITER_FUNCTIONS = ("write_item", "record_key", "dataset_files", "finalizer", "preview_mask",
                    "planned_keys", "reserved_keys", "key_template")


def opts(name: str, **raw):
    module = FORMATS[name]
    return module.Options.from_mapping(raw, prefix=name, defaults={})


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_writer_has_the_whole_protocol(name):
    module = FORMATS[name]
    assert name == module.NAME and isinstance(module.PART_RECORDS, bool)
    assert all(isinstance(v, dict) for v in module.SOURCE_DEFAULTS.values())
    for fn in WRITER_FUNCTIONS:
        assert callable(getattr(module, fn)), fn
    o = opts(name)
    assert isinstance(o.needs_image(), bool)
    o.check_classes(CLASSES, name)
    fin = module.finalizer(CLASSES, o, Store().io())
    for method in ("take", "close", "abort"):
        assert callable(getattr(fin, method)), method
    fin.abort(OSError("the pass failed"))


@pytest.mark.parametrize("name", sorted(INPUT_FORMATS))
def test_every_reader_says_what_its_annotation_bytes_are(name):
    formats = {m.ANN_FORMAT for m in INPUT_FORMATS.values()}
    assert len(formats) == len(INPUT_FORMATS)  # distinct: a writer can tell them apart
    assert isinstance(INPUT_FORMATS[name].ANN_FORMAT, str) and INPUT_FORMATS[name].ANN_FORMAT


def item_ctx(ann: bytes, ann_format: str) -> ItemContext:
    item = Item("ds", "a.jpg", 20, 10, (Label(0, Polygon(np.array([[1, 1], [8, 1], [8, 8]]))),),
                "ds/img/a.jpg")
    return ItemContext(item, CLASSES, ann_bytes=ann, ann_format=ann_format)


@pytest.mark.parametrize("reader", [coco, cvat])
def test_another_tools_annotation_is_never_copied_into_a_supervisely_project(reader):
    """A COCO record or a CVAT <image> element is not a Supervisely ann/*.json."""
    o = opts("supervisely", masks_human=False, images=False)
    out = supervisely_masks.write_item(item_ctx(b'{"id": 1}', reader.ANN_FORMAT), o)
    assert not [b.key for b in out.blobs if "/ann/" in b.key]


def test_a_supervisely_annotation_is_copied_verbatim():
    ann = json.dumps({"size": {"width": 20, "height": 10}, "objects": []}).encode()
    o = opts("supervisely", masks_human=False, images=False)
    out = supervisely_masks.write_item(item_ctx(ann, supervisely.ANN_FORMAT), o)
    assert [b.data for b in out.blobs if b.key == "supervisely/ds/ann/a.jpg.json"] == [ann]


def test_only_the_supervisely_writer_keeps_an_inputs_meta_json():
    meta = b'{"classes": [], "tags": [], "projectType": "images"}'
    for name in FORMATS:
        o = opts(name)
        kept = o.with_input_meta(meta)
        if name == supervisely_masks.NAME:
            assert kept.meta_json == meta and kept == o  # meta_json is not a setting
            (blob,) = [b for b in supervisely_masks.dataset_files(CLASSES, kept)
                       if b.key.endswith("meta.json")]
            assert blob.data == meta
        else:
            assert kept is o


def test_a_failed_pass_discards_clearml_frames():
    store = Store()
    fin = FORMATS["clearml"].finalizer(CLASSES, opts("clearml"), store.io())
    fin.take_records(0, b'{"id": "ds/a"}\n')
    fin.abort(OSError("part 1 could not be read"))
    assert "clearml/frames.jsonl" not in store.objects
    fin = FORMATS["clearml"].finalizer(CLASSES, opts("clearml"), store.io())
    fin.take_records(0, b'{"id": "ds/a"}')
    fin.close()
    assert store.objects["clearml/frames.jsonl"] == b'{"id": "ds/a"}\n'


@pytest.mark.parametrize("fails", [False, True])
def test_cvat_spools_its_subset_lists_in_the_scratch_folder_it_is_given(tmp_path, fails):
    """The subset lists are spooled in `io.scratch()` (jobs/ gives a folder the next driver
    sweeps if this one is killed) and `drop_scratch` removes it, whether the pass ends or fails."""
    from maskcore.formats.base import FinalEntry, OutputRef

    made, dropped = [], []

    def scratch() -> str:
        made.append(tmp_path / f"s{len(made)}")
        made[-1].mkdir()
        return str(made[-1])

    store = Store()
    io_ = dataclasses.replace(store.io(), scratch=scratch, drop_scratch=dropped.append)
    fin = FORMATS["cvat"].finalizer(CLASSES, opts("cvat"), io_)
    fin.take(FinalEntry("ds", "a.jpg", "ok", outputs=[
        OutputRef("cvat/SegmentationClass/a.png"), OutputRef("cvat/SegmentationObject/a.png")]))
    assert [p.name for p in made[0].iterdir()]  # a subset's ids spooled there
    if fails:
        fin.abort(OSError("the pass failed"))
    else:
        fin.close()
        assert store.objects["cvat/ImageSets/Segmentation/ds.txt"] == b"a\n"
    assert dropped == [str(made[0])]
