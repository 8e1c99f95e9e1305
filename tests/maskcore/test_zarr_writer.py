"""The zarr writer's bytes, read back with the zarr package itself: one shard per array with
inner chunks (tile reads), uint8/uint16 classes, uint16/uint32 instances in drawing order,
empty masks and empty chunks reading as zeros, a rewrite replacing stale data, and the streamed
consolidated root equal to the store's own metadata."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from maskcore.errors import ConfigError
from maskcore.formats import zarr_masks
from maskcore.formats.base import ItemContext
from maskcore.model import ClassInfo, ClassTable, Item, Label, Rectangle

CLASSES = ClassTable((ClassInfo("road", (1, 2, 3)), ClassInfo("car", (9, 9, 9))))

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def opts(**raw):
    return zarr_masks.Options.from_mapping(raw, prefix="zarr", defaults={})


def write(root: Path, blobs) -> None:
    for b in blobs:
        path = root / b.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b.data)


def export_item(root: Path, labels, *, name="sub/a.jpg", w=40, h=30, classes=CLASSES,
                **raw) -> None:
    item = Item("ds", name, w, h, tuple(labels), "img/" + name)
    ctx = ItemContext(item, classes, input_uri=lambda k: f"file:///in/{k}")
    o = opts(**raw)
    write(root, zarr_masks.dataset_files(classes, o))
    out = zarr_masks.write_item(ctx, o)
    write(root, out.blobs)
    return out


def open_root(root: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(str(root / "zarr"), mode="r", **kw)


def test_arrays_read_back_with_zarr_including_tile_reads(tmp_path):
    labels = [Label(0, Rectangle(0, 0, 39, 9)), Label(1, Rectangle(5, 5, 24, 24)),
              Label(1, Rectangle(30, 20, 39, 29))]
    out = export_item(tmp_path, labels, chunk=16)
    expected = np.zeros((30, 40), np.uint8)
    expected[0:10, :] = 1
    expected[5:25, 5:25] = 2
    expected[20:30, 30:40] = 2
    inst = np.zeros((30, 40), np.uint16)
    inst[0:10, :] = 1
    inst[5:25, 5:25] = 2
    inst[20:30, 30:40] = 3
    g = open_root(tmp_path, use_consolidated=False)
    a = g["ds/sub/a/class"]
    assert a.dtype == np.uint8 and a.shape == (30, 40) and a.chunks == (16, 16)
    assert a.shards == (32, 48)
    assert np.array_equal(a[:], expected)
    assert np.array_equal(a[16:30, 16:32], expected[16:30, 16:32])  # tile read
    i = g["ds/sub/a/instance"]
    assert i.dtype == np.uint16 and np.array_equal(i[:], inst)
    assert dict(g["ds/sub/a"].attrs) == {"image": "sub/a.jpg",
                                         "image_uri": "file:///in/img/sub/a.jpg"}
    assert g.attrs["classes"] == [{"index": 1, "name": "road", "color": [1, 2, 3]},
                                  {"index": 2, "name": "car", "color": [9, 9, 9]}]
    assert out.class_pixels == {"road": int((expected == 1).sum()),
                                "car": int((expected == 2).sum())}
    assert out.instances == 3
    data = (tmp_path / "zarr/ds/sub/a/class/c/0/0").read_bytes()
    assert np.array_equal(zarr_masks.decode_shard(data, (30, 40), np.dtype("uint8"), 16),
                          expected)
    # one shard object per array, each written whole by the item's task
    assert sorted(p.relative_to(tmp_path / "zarr/ds/sub/a").as_posix()
                  for p in (tmp_path / "zarr/ds/sub/a").rglob("*") if p.is_file()) == \
        ["class/c/0/0", "class/zarr.json", "instance/c/0/0", "instance/zarr.json", "zarr.json"]


def test_empty_mask_reads_as_zeros_and_a_rewrite_leaves_no_stale_data(tmp_path):
    export_item(tmp_path, [Label(0, Rectangle(0, 0, 39, 29))], chunk=16)
    assert open_root(tmp_path, use_consolidated=False)["ds/sub/a/class"][:].all()
    export_item(tmp_path, [], chunk=16)  # the item lost its labels: same keys rewritten
    g = open_root(tmp_path, use_consolidated=False)
    assert not g["ds/sub/a/class"][:].any() and not g["ds/sub/a/instance"][:].any()
    assert (tmp_path / "zarr/ds/sub/a/class/c/0/0").exists()  # written, empty index


def test_wide_dtypes(tmp_path):
    many = ClassTable(tuple(ClassInfo(f"c{i}", (0, 0, 0)) for i in range(300)))
    export_item(tmp_path, [Label(299, Rectangle(2, 2, 5, 5))], classes=many, name="m.png")
    a = open_root(tmp_path, use_consolidated=False)["ds/m/class"]
    assert a.dtype == np.uint16 and a[3, 3] == 300 and a[0, 0] == 0
    labels = [Label(0, Rectangle(x, y, x, y)) for y in range(257) for x in range(256)]
    export_item(tmp_path, labels, name="n.png", w=256, h=257, chunk=64)
    i = open_root(tmp_path, use_consolidated=False)["ds/n/instance"]
    assert i.dtype == np.uint32 and i[256, 255] == 65792 and i[0, 0] == 1


def test_consolidated_root_matches_the_store(tmp_path):
    export_item(tmp_path, [Label(0, Rectangle(0, 0, 9, 9))], name="sub/a.jpg")
    export_item(tmp_path, [Label(1, Rectangle(0, 0, 9, 9))], name="b.jpg", w=600, h=700)
    root_doc = json.loads((tmp_path / "zarr/zarr.json").read_bytes())
    head, tail = zarr_masks.consolidated_frame(root_doc)
    nodes = [("ds", None), ("ds/sub", None), ("ds/sub/a", "ds/sub/a"), ("ds/b", "ds/b")]
    body = []
    for k, (path, doc) in enumerate(nodes):
        data = (tmp_path / "zarr" / doc / "zarr.json").read_bytes() if doc else None
        body.append(zarr_masks.consolidated_entries(path, data, first=k == 0))
        if doc is None:
            (tmp_path / "zarr" / path / "zarr.json").write_bytes(zarr_masks.empty_group())
    (tmp_path / "zarr/zarr.json").write_bytes(head + b"".join(body) + tail)
    plain = open_root(tmp_path, use_consolidated=False)
    cons = open_root(tmp_path, use_consolidated=True)
    assert cons.metadata.consolidated_metadata is not None
    names = sorted(k for k, _ in plain.members(max_depth=None))
    assert names == sorted(k for k, _ in cons.members(max_depth=None)) == [
        "ds", "ds/b", "ds/b/class", "ds/b/instance", "ds/sub", "ds/sub/a", "ds/sub/a/class",
        "ds/sub/a/instance"]
    for name in ("ds/b/class", "ds/sub/a/instance"):
        assert cons[name].metadata == plain[name].metadata
        assert np.array_equal(cons[name][:], plain[name][:])
    assert cons["ds/b/class"].shape == (700, 600) and cons["ds/b/class"].shards == (1024, 1024)
    assert cons.attrs["classes"] == plain.attrs["classes"]


def test_item_groups_are_consolidated_on_their_own(tmp_path):
    export_item(tmp_path, [Label(0, Rectangle(0, 0, 9, 9))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(str(tmp_path / "zarr/ds/sub/a"), mode="r")
    assert g.metadata.consolidated_metadata is not None
    assert sorted(g.array_keys()) == ["class", "instance"] and g["class"][0, 0] == 1


@pytest.mark.parametrize("raw, key", [({"chunk": 8}, "zarr.chunk"),
                                      ({"chunk": True}, "zarr.chunk"),
                                      ({"consolidated": "yes"}, "zarr.consolidated"),
                                      ({"thickness": 0}, "zarr.thickness"),
                                      ({"nope": 1}, "zarr.nope")])
def test_bad_options_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        opts(**raw)


def test_item_group_of_and_ancestors():
    assert zarr_masks.item_group_of("zarr/ds/sub/a/zarr.json") == "ds/sub/a"
    assert zarr_masks.item_group_of("zarr/ds/sub/a/class/zarr.json") is None
    assert zarr_masks.item_group_of("zarr/ds/sub/a/class/c/0/0") is None
    assert zarr_masks.ancestors("ds/sub/a") == ["ds", "ds/sub"]
