"""Writer of the `zarr` format: one zarr v3 group of class / instance arrays (SPEC 2.4).

`OUTPUT/zarr` is a zarr v3 hierarchy that plain `zarr.open_group(url)` reads:
- root group: attrs `classes` = [{"index": i, "name": ..., "color": [r, g, b]}] (i from 1;
  0 is background);
- per image, group `<dataset>/<stem>` (sub-folders of the image name kept) with attrs `image`
  (the file name) and `image_uri`, and two 2-D arrays (height, width):
  `class` (class index, uint8; uint16 beyond 255 classes) and `instance` (0 background,
  instances numbered from 1 in drawing order: the item's composition, maskcore/order.py, the
  numbers of the cvat writer's SegmentationObject; uint16, uint32 beyond 65535);
- each array is ONE shard (`sharding_indexed`, inner chunks of `chunk` x `chunk`, zstd), so an
  image costs two data objects, a tile read fetches one inner chunk by byte range, and every
  array is written whole by the one task that renders its item: one writer per shard, no
  read-modify-write (reference dask_s3.md 4.2).

The encoding is done here with numpy, numcodecs' zstd and google-crc32c (both zarr
dependencies) into plain bytes (`Blob`s written by the task with the item's other outputs):
the `zarr` package itself imports fsspec, which maskcore must not. Readers see standard zarr
v3 (tests read every output back with zarr, on disk and on S3).

Empty chunks: a shard object is always written, whatever its content, so a rerun replaces every
byte of an item and stale data cannot survive; inner chunks that are all background are left
out of the shard (its index marks them empty) and read back as the fill value 0. Nothing
depends on an object's existence (the manifest says what was written).

Scale (layout 2, see NOTES): no document lists the items. The root `zarr.json` is a plain
group (attrs `classes` and `maskjob`), never consolidated, so `zarr.open_group(url)` reads one
small object whatever the number of images; each item group's `zarr.json` carries its two
arrays' metadata inline (consolidated per item), so `root["<dataset>/<stem>"]` is one GET and
an image's masks are two more per array (shard index, then the inner chunks by byte range).
zarr-python trusts a consolidated parent and never looks below it, so consolidating the root
(or a dataset group) over its items is exactly what must not be done at 1M items (a 1.5 GB
root document). Intermediate groups (datasets, sub-folders) are written once at finalize
(`finalizer`), never over an existing node; the root at the end (`dataset_files`). The items
of the store are listed by `manifest.jsonl` (their outputs) or by listing the store.
"""

from __future__ import annotations

import json
import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import google_crc32c
import msgspec
import numpy as np
from numcodecs.zstd import compress as zstd_compress
from numcodecs.zstd import decompress as zstd_decompress

from .. import paths
from ..errors import ConfigError, ItemError, expected
from ..model import ClassTable, name_stem
from .base import (
    Blob,
    FinalEntry,
    FinalizeIO,
    ItemContext,
    ItemOutput,
    KeyTemplate,
    PreviewMask,
    check_thickness,
    no_record_key,
    template_of,
)

NAME = "zarr"
META_FILE = "zarr.json"
EMPTY = 2**64 - 1  # offset and length of an inner chunk that is not stored
ARRAY_NAMES = ("class", "instance")  # the arrays of an item group, in `write_item` order
ZSTD_LEVEL = 1  # as small as the default (3) on masks, and faster


@dataclass(frozen=True)
class ZarrOptions:
    """`chunk`: side of the inner chunks (tile reads); `thickness`: the job's render setting
    (jobs/config.py sets it from the `render` section). `consolidated` may only be false, kept
    for old job files: item groups are always consolidated, the root never is (see the module
    docstring)."""

    chunk: int = 512
    thickness: int = 2

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, prefix: str, defaults: Mapping[str, Any]
                     ) -> ZarrOptions:
        merged = {**defaults, **raw}
        if merged.get("consolidated", False) is not False:  # false: what layout 2 always does
            raise ConfigError(expected(
                "consolidated: false or no setting (layout 2: each item group is consolidated, "
                "the root never is, so the store opens at any size)", merged["consolidated"]),
                key=f"{prefix}.consolidated")
        merged.pop("consolidated", None)
        for k in merged:
            if k not in cls.__dataclass_fields__:
                raise ConfigError(expected(f"one of {sorted(cls.__dataclass_fields__)}", k),
                                  key=f"{prefix}.{k}")
        chunk = merged.get("chunk", cls.chunk)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 16 <= chunk <= 16384:
            raise ConfigError(expected("an integer chunk side in 16..16384", chunk),
                              key=f"{prefix}.chunk")
        return cls(chunk=chunk, thickness=check_thickness(merged, prefix))

    def needs_image(self) -> bool:
        """Masks need the annotation only."""
        return False

    def with_input_meta(self, meta: bytes) -> Any:
        """No project metadata is kept from the input: these options as they are."""
        return self

    def check_classes(self, classes: ClassTable, prefix: str) -> None:
        """Any number of classes fits (uint16 beyond 255)."""


Options = ZarrOptions  # writer interface (see formats/__init__.py)


# ---------------------------------------------------------------------------- metadata
def group_meta(attributes: Mapping[str, Any] | None = None,
               children: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A group node; `children` ({name: metadata}) are consolidated into it."""
    doc: dict[str, Any] = {"zarr_format": 3, "node_type": "group",
                           "attributes": dict(attributes or {})}
    if children is not None:
        doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False,
                                        "metadata": dict(children)}
    return doc


def _codec_bytes(dtype: np.dtype) -> dict[str, Any]:
    if dtype.itemsize == 1:
        return {"name": "bytes"}
    return {"name": "bytes", "configuration": {"endian": "little"}}


def inner_chunk(shape: tuple[int, int], chunk: int) -> tuple[int, int]:
    """The inner chunk of an array: `chunk` x `chunk`, never larger than the array."""
    return min(chunk, shape[0]), min(chunk, shape[1])


def shard_shape(shape: tuple[int, int], inner: tuple[int, int]) -> tuple[int, int]:
    """The one shard that covers the array: a whole number of inner chunks."""
    return (math.ceil(shape[0] / inner[0]) * inner[0], math.ceil(shape[1] / inner[1]) * inner[1])


def array_meta(shape: tuple[int, int], dtype: np.dtype, chunk: int) -> dict[str, Any]:
    inner = inner_chunk(shape, chunk)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular",
                       "configuration": {"chunk_shape": list(shard_shape(shape, inner))}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": list(inner),
            "codecs": [_codec_bytes(dtype),
                       {"name": "zstd", "configuration": {"level": ZSTD_LEVEL,
                                                          "checksum": False}}],
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                             {"name": "crc32c"}],
            "index_location": "end",
        }}],
        "attributes": {},
        "dimension_names": ["y", "x"],
        "storage_transformers": [],
    }


# json.dumps' compact UTF-8 text (the documents hold only strings, ints, bools), ~10x faster
_dumps = msgspec.json.Encoder().encode

_ATTRS_MARK = {"~": 0}  # stands for an item group's attributes in its cached document


@lru_cache(maxsize=256)
def _item_docs(shapes: tuple[tuple[int, int], ...], dtypes: tuple[np.dtype, ...], chunk: int
               ) -> tuple[tuple[bytes, ...], bytes, bytes]:
    """The documents of an item group whose arrays (ARRAY_NAMES) have these shapes and dtypes,
    the same for every image of that size: (each array's zarr.json, the group's zarr.json before
    its attributes, after them). Encoded once per (shapes, dtypes, chunk), not per item."""
    metas = {name: array_meta(shape, dt, chunk)
             for name, shape, dt in zip(ARRAY_NAMES, shapes, dtypes, strict=True)}
    head, mark, tail = _dumps(group_meta(_ATTRS_MARK, metas)).partition(_dumps(_ATTRS_MARK))
    assert mark and _dumps(_ATTRS_MARK) not in tail, "the attributes mark must occur once"
    return tuple(_dumps(m) for m in metas.values()), head, tail


# ---------------------------------------------------------------------------- data
def encode_shard(array: np.ndarray, chunk: int) -> bytes:
    """The single shard of a 2-D array: zstd inner chunks (all-zero ones left out), then the
    index (offset, length per inner chunk, C order, uint64 LE) and its crc32c."""
    h, w = array.shape
    le = array.dtype.newbyteorder("<")
    if h <= chunk and w <= chunk:  # one inner chunk, the array itself (small images)
        if not np.count_nonzero(array):  # (faster than .any() on small arrays)
            return _EMPTY_ONE
        data = zstd_compress(np.ascontiguousarray(array, dtype=le), ZSTD_LEVEL)
        raw_one = _ONE_INDEX.pack(0, len(data))
        return b"".join((data, raw_one, _CRC.pack(google_crc32c.value(raw_one))))
    ch, cw = inner_chunk((h, w), chunk)
    ny, nx = math.ceil(h / ch), math.ceil(w / cw)
    index = np.full((ny, nx, 2), EMPTY, dtype="<u8")
    pieces: list[bytes] = []
    offset = 0
    for iy in range(ny):
        for ix in range(nx):
            block = array[iy * ch:(iy + 1) * ch, ix * cw:(ix + 1) * cw]
            if not block.any():
                continue
            if block.shape != (ch, cw):
                padded = np.zeros((ch, cw), array.dtype)
                padded[:block.shape[0], :block.shape[1]] = block
                block = padded
            data = zstd_compress(np.ascontiguousarray(block, dtype=le), ZSTD_LEVEL)
            index[iy, ix] = (offset, len(data))
            pieces.append(data)
            offset += len(data)
    raw_index = index.tobytes()
    pieces.append(raw_index)
    pieces.append(_CRC.pack(google_crc32c.value(raw_index)))
    return b"".join(pieces)


_ONE_INDEX = struct.Struct("<QQ")  # the index of a one-chunk shard: (offset, length)
_CRC = struct.Struct("<I")
_EMPTY_ONE = _ONE_INDEX.pack(EMPTY, EMPTY) + _CRC.pack(google_crc32c.value(
    _ONE_INDEX.pack(EMPTY, EMPTY)))  # a one-chunk shard of background only


def decode_shard(data: bytes, shape: tuple[int, int], dtype: np.dtype, chunk: int
                 ) -> np.ndarray:
    """The inverse of `encode_shard` (for previews and checks; readers use zarr)."""
    h, w = shape
    ch, cw = inner_chunk(shape, chunk)
    ny, nx = math.ceil(h / ch), math.ceil(w / cw)
    size = ny * nx * 16
    raw_index = data[len(data) - 4 - size:len(data) - 4]
    if struct.unpack("<I", data[-4:])[0] != google_crc32c.value(raw_index):
        raise ValueError("Expected a shard index with a matching crc32c. Got a mismatch.")
    index = np.frombuffer(raw_index, "<u8").reshape(ny, nx, 2)
    out = np.zeros((ny * ch, nx * cw), dtype)
    for iy in range(ny):
        for ix in range(nx):
            off, n = (int(v) for v in index[iy, ix])
            if off == EMPTY:
                continue
            block = np.frombuffer(zstd_decompress(data[off:off + n]),
                                  dtype.newbyteorder("<")).reshape(ch, cw)
            out[iy * ch:(iy + 1) * ch, ix * cw:(ix + 1) * cw] = block
    return out[:h, :w]


# ---------------------------------------------------------------------------- writer
def group_path(dataset: str, stem: str) -> str:
    """The item's group, relative to the store root."""
    return paths.join(dataset, stem)


def write_item(ctx: ItemContext, opts: ZarrOptions) -> ItemOutput:
    item = ctx.item
    comp = ctx.composition(thickness=opts.thickness)
    idtype = np.uint16 if comp.top <= 65535 else np.uint32
    cls, inst = arrays = (comp.class_map(), comp.instance_map(idtype))  # ARRAY_NAMES
    base = paths.join(NAME, group_path(item.dataset, item.stem)) + "/"  # + clean layout names
    docs, head, tail = _item_docs((cls.shape, inst.shape), (cls.dtype, inst.dtype), opts.chunk)
    attrs: dict[str, Any] = {"image": item.name}
    if (image_uri := ctx.image_uri()) is not None:
        attrs["image_uri"] = image_uri
    blobs = [Blob(base + META_FILE, b"".join((head, _dumps(attrs), tail)))]
    for name, a, doc in zip(ARRAY_NAMES, arrays, docs, strict=True):
        blobs.append(Blob(f"{base}{name}/{META_FILE}", doc))
        blobs.append(Blob(f"{base}{name}/c/0/0", encode_shard(a, opts.chunk)))
    return ItemOutput(blobs, dict(comp.class_pixels), comp.instances, dict(comp.not_painted))


LAYOUT = 2  # root attrs `maskjob.layout`: 2 = item groups consolidated, root never


def root_attributes(classes: ClassTable) -> dict[str, Any]:
    return {"classes": [{"index": i, "name": c.name, "color": list(c.color)}
                        for i, c in enumerate(classes.classes, start=1)],
            "maskjob": {"layout": LAYOUT, "items": "<dataset>/<stem> groups, listed in "
                        "manifest.jsonl", "arrays": ["class", "instance"]}}


def dataset_files(classes: ClassTable, opts: ZarrOptions) -> list[Blob]:
    """The root group: plain (never consolidated), written after the intermediate groups."""
    return [Blob(paths.join(NAME, META_FILE), _dumps(group_meta(root_attributes(classes))))]


# ---------------------------------------------------------------------------- finalize
BATCH = 1024  # intermediate groups checked per concurrent read
_GROUP_SUFFIX = "/" + META_FILE
RECENT = 4096  # parent groups remembered (the manifest is sorted: repeats are near)


def item_group_of(key: str) -> str | None:
    """'zarr/<group>/zarr.json' of an item's group (one of its output keys) -> '<group>'."""
    prefix, suffix = NAME + "/", "/" + META_FILE
    if not (key.startswith(prefix) and key.endswith(suffix)):
        return None
    group = key[len(prefix):-len(suffix)]
    if group.endswith(("/class", "/instance")):
        return None
    return group


def ancestors(group: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b'] (the groups that must exist above an item group)."""
    parts = group.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts))]


def empty_group() -> bytes:
    return _dumps(group_meta())


def group_key(group: str) -> str:
    """The key of a group's zarr.json ('' is the root)."""
    return paths.join(NAME, group, META_FILE) if group else paths.join(NAME, META_FILE)


class GroupsFinalizer:
    """The intermediate groups above the item groups (datasets, sub-folders), each made once
    and never over an existing node (an item group may be another item's parent: 'a' of
    'a.jpg' and of 'a/b.jpg'): missing ones are found with one concurrent read per batch.
    Memory: a bounded set of recently seen groups, whatever the number of items."""

    def __init__(self, io: FinalizeIO) -> None:
        self.io = io
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.pending: list[str] = []

    def _seen(self, group: str) -> bool:
        if group in self.recent:
            self.recent.move_to_end(group)
            return True
        self.recent[group] = None
        if len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        return False

    def take(self, entry: FinalEntry) -> None:
        if not entry.exported:
            return
        for o in entry.outputs:  # an item has one group: the first group document
            if o.key.endswith(_GROUP_SUFFIX) and (group := item_group_of(o.key)) is not None:
                self.pending += [p for p in ancestors(group) if not self._seen(p)]
                break
        if len(self.pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        keys = [group_key(p) for p in self.pending]
        self.pending = []
        if not keys:
            return
        present = self.io.read_many(keys, True)
        missing = {k: empty_group() for k in keys if k not in present}
        try:
            self.io.write_many(missing)
        except OSError as e:  # a file where a folder must go: report, never stop finalize
            self.io.problem(f"zarr: {len(missing)} intermediate groups not written ({e})")

    def close(self) -> None:
        self._flush()

    def abort(self, exc: BaseException) -> None:
        """The pass failed: the pending groups are left to the rerun's finalize (each group is
        made once, never over a node, whichever pass makes it)."""
        self.pending = []


PART_RECORDS = False  # no per-item records (base.Writer)
SOURCE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {}  # the Options' own for every job source
record_key = no_record_key


def finalizer(classes: ClassTable, opts: ZarrOptions, io: FinalizeIO) -> GroupsFinalizer:
    return GroupsFinalizer(io)


def preview_mask(keys: Sequence[str], read: Callable[[str], bytes]) -> PreviewMask | None:
    """The `class` array of the item (decoded from its one shard)."""
    for key in keys:
        if key.startswith(NAME + "/") and key.endswith("/class/c/0/0"):
            meta = json.loads(read(key[: -len("c/0/0")] + META_FILE))
            inner = meta["codecs"][0]["configuration"]["chunk_shape"]
            return "index", decode_shard(read(key), tuple(meta["shape"]),
                                         np.dtype(meta["data_type"]), max(inner))
    return None


# ---------------------------------------------------------------------------- plan (clashes)


def planned_keys(dataset: str, name: str, opts: ZarrOptions) -> paths.Planned:
    """The keys `write_item` writes for (dataset, name), known without rendering
    (jobs/clashes.py): its two array folders (nothing else may go inside an array), its group
    node and the intermediate group nodes above it, shared (a group may be both an item's group
    and the parent of another item's group, see `GroupsFinalizer`). ItemError for a group named
    like an array: readers (and finalize) would take it for one."""
    group = group_path(dataset, name_stem(name))
    if group.rsplit("/", 1)[-1] in ARRAY_NAMES:
        raise ItemError(expected(f"an image name whose stem is not {' or '.join(ARRAY_NAMES)} "
                                 "(the zarr group would look like an array)", name))
    base = paths.folder(NAME) + group + "/"
    return paths.Planned(folders=tuple([base + a for a in ARRAY_NAMES]),
                         shared=(base + META_FILE, *_ancestor_nodes(group.rpartition("/")[0])))


def key_template(dataset: str, opts: ZarrOptions) -> KeyTemplate:
    """`planned_keys` of the plain names of `dataset` (see `base.KeyTemplate`); an array's
    name as the stem takes `planned_keys` (refused there)."""
    return template_of(planned_keys, dataset, opts, odd_stems=frozenset(ARRAY_NAMES))


@lru_cache(maxsize=1024)
def _ancestor_nodes(parent: str) -> tuple[str, ...]:
    """The group nodes of `parent` (a group path, '' for the root) and of its ancestors."""
    return tuple(paths.join(NAME, g, META_FILE) for g in ancestors(parent + "/_")) \
        if parent else ()


def reserved_keys(opts: ZarrOptions) -> paths.Planned:
    """The root group node, written at finalize."""
    return paths.Planned(tuple(b.key for b in dataset_files(ClassTable(()), opts)))
