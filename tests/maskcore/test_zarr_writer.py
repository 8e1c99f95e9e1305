"""The zarr writer's bytes, read back with the zarr package itself: one shard per array with
inner chunks (tile reads), uint8/uint16 classes, uint16/uint32 instances in drawing order,
empty masks and empty chunks reading as zeros, a rewrite replacing stale data, and the
layout-2 finalize: parent groups made once and never over an item group, the root a plain
group that is never consolidated."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr

from maskcore.errors import ConfigError
from maskcore.formats import zarr_masks
from maskcore.formats.base import Blob, FinalEntry, FinalizeIO, ItemContext, OutputRef
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


def local_io(root: Path, problems: list[str]) -> FinalizeIO:
    """A FinalizeIO over a local folder (what jobs/finalize.py gives, without fsspec)."""

    def read_many(keys, missing_ok=False):
        return {k: (root / k).read_bytes() for k in keys if missing_ok is False
                or (root / k).is_file()}

    @contextmanager
    def open_output(key, *, archive=False):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        with open(root / key, "wb") as f:
            yield f

    return FinalizeIO(read=lambda k: (root / k).read_bytes(), read_many=read_many,
                      write_many=lambda objs: write(root, [Blob(k, v) for k, v in objs.items()]),
                      open_output=open_output, problem=problems.append)


def entry(out) -> FinalEntry:
    return FinalEntry("ds", "x", "ok", outputs=[OutputRef(b.key, len(b.data)) for b in out.blobs])


def test_finalize_makes_parent_groups_never_over_an_item_and_never_consolidates_the_root(
        tmp_path):
    """'a.jpg' (group ds/a) is also the parent of 'a/b.jpg': its group keeps its attrs and
    arrays; ds and the sub-folders are made; the root stays one small plain document."""
    outs = [export_item(tmp_path, [Label(0, Rectangle(0, 0, 9, 9))], name="a.jpg"),
            export_item(tmp_path, [Label(1, Rectangle(0, 0, 9, 9))], name="a/b.jpg", w=600,
                        h=700),
            export_item(tmp_path, [Label(1, Rectangle(0, 0, 3, 3))], name="sub/deep/c.png")]
    problems: list[str] = []
    fin = zarr_masks.finalizer(CLASSES, opts(), local_io(tmp_path, problems))
    for o in outs:
        fin.take(entry(o))
    fin.take(FinalEntry("ds", "gone.png", "failed",
                        outputs=[OutputRef("zarr/zz/gone/zarr.json")]))  # never a parent
    fin.close()
    assert problems == []
    root_doc = json.loads((tmp_path / "zarr/zarr.json").read_bytes())
    assert "consolidated_metadata" not in root_doc and root_doc["attributes"]["maskjob"][
        "layout"] == 2
    assert not (tmp_path / "zarr/zz").exists()
    g = open_root(tmp_path)  # default: consolidated if present - it is not
    assert g.metadata.consolidated_metadata is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = sorted(k for k, _ in g.members(max_depth=None))
    # an item group is consolidated over its own arrays, so a walk does not see the item
    # nested under it ('a/b.jpg' under 'a.jpg': a plan-time clash); direct access does
    assert names == ["ds", "ds/a", "ds/a/class", "ds/a/instance", "ds/sub", "ds/sub/deep",
                     "ds/sub/deep/c", "ds/sub/deep/c/class", "ds/sub/deep/c/instance"]
    assert dict(g["ds/a"].attrs)["image"] == "a.jpg"  # the item group was not overwritten
    assert g["ds/a"].metadata.consolidated_metadata is not None
    assert g["ds/a/b/class"].shape == (700, 600) and g["ds/a/b/class"][0, 0] == 2
    assert g["ds/sub/deep/c/class"][3, 3] == 2


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
                                      ({"consolidated": True}, "zarr.consolidated"),
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


def test_cached_documents_are_the_plain_json_of_each_item(tmp_path):
    """The per-size cached documents are byte for byte the JSON of the item's own nodes:
    attributes spliced in per item (non-ASCII, quotes), documents per (shape, dtype)."""
    o = opts(chunk=16)
    for name, (w, h), top in (('ü "q"/é.jpg', (40, 30), 2), ("b.png", (40, 30), 1),
                              ("c.png", (8, 9), 1), ("d.png", (8, 9), 70_000)):
        labels = [Label(i % 2, Rectangle(0, 0, 3, 3)) for i in range(top)]
        item = Item("ds", name, w, h, tuple(labels), None if top == 1 else "img/" + name)
        out = zarr_masks.write_item(ItemContext(item, CLASSES, input_uri=lambda k: f"s3://b/{k}"),
                                    o)
        base = f"zarr/ds/{name.rsplit('.', 1)[0]}/"
        docs = {b.key[len(base):].removesuffix("zarr.json").rstrip("/") or "group": b.data
                for b in out.blobs if b.key.endswith("zarr.json")}
        itype = np.dtype(np.uint32 if top > 65535 else np.uint16)
        metas = {"class": zarr_masks.array_meta((h, w), np.dtype(np.uint8), 16),
                 "instance": zarr_masks.array_meta((h, w), itype, 16)}
        attrs = {"image": name} | ({} if top == 1 else {"image_uri": f"s3://b/img/{name}"})
        plain = {k: json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()
                 for k, v in [("group", zarr_masks.group_meta(attrs, metas)), *metas.items()]}
        assert docs == plain


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_one_chunk_shards_round_trip_and_empty_ones_hold_no_chunk(dtype):
    rng = np.random.default_rng(1)
    a = (rng.integers(0, 3, (9, 7)) * 70_001 % np.iinfo(dtype).max).astype(dtype)
    for array in (a, np.zeros_like(a), a[:, ::2]):  # also a strided view
        data = zarr_masks.encode_shard(array, 16)
        assert np.array_equal(zarr_masks.decode_shard(data, array.shape, array.dtype, 16), array)
    empty = zarr_masks.encode_shard(np.zeros_like(a), 16)
    assert np.frombuffer(empty[:16], "<u8").tolist() == [zarr_masks.EMPTY] * 2
    assert len(empty) == 20  # the index and its crc32c only
