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

Group nodes and consolidation: each item group's `zarr.json` carries its two arrays' metadata
inline (consolidated per item: one GET opens an item); the root `zarr.json` (written at finalize
from `dataset_files`) is replaced at the very end, on the driver, by one that consolidates
every node of the store (`consolidated_root`, streamed from the per-item group documents by
jobs/assemble.py). Intermediate groups (datasets, sub-folders) are made there too, once.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
from numcodecs.zstd import Zstd

from .. import paths
from ..errors import ConfigError, ItemError, expected
from ..model import ClassTable, Item
from .base import Blob, ItemContext, ItemOutput, check_thickness

NAME = "zarr"
META_FILE = "zarr.json"
EMPTY = 2**64 - 1  # offset and length of an inner chunk that is not stored
ZSTD_LEVEL = 1  # as small as the default (3) on masks, and faster
_zstd = Zstd(level=ZSTD_LEVEL)


@dataclass(frozen=True)
class ZarrOptions:
    """`chunk`: side of the inner chunks (tile reads); `consolidated`: consolidate the whole
    store's metadata into the root at finalize (set false for stores of millions of images:
    the root document grows with every array, and item groups stay consolidated anyway);
    `thickness`: the job's render setting (jobs/config.py sets it from the `render` section)."""

    chunk: int = 512
    consolidated: bool = True
    thickness: int = 2

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, prefix: str, defaults: Mapping[str, Any]
                     ) -> ZarrOptions:
        merged = {**defaults, **raw}
        for k in merged:
            if k not in cls.__dataclass_fields__:
                raise ConfigError(expected(f"one of {sorted(cls.__dataclass_fields__)}", k),
                                  key=f"{prefix}.{k}")
        chunk = merged.get("chunk", cls.chunk)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 16 <= chunk <= 16384:
            raise ConfigError(expected("an integer chunk side in 16..16384", chunk),
                              key=f"{prefix}.chunk")
        consolidated = merged.get("consolidated", cls.consolidated)
        if not isinstance(consolidated, bool):
            raise ConfigError(expected("true or false", consolidated),
                              key=f"{prefix}.consolidated")
        return cls(chunk=chunk, consolidated=consolidated,
                   thickness=check_thickness(merged, prefix))

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


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- data
def encode_shard(array: np.ndarray, chunk: int) -> bytes:
    """The single shard of a 2-D array: zstd inner chunks (all-zero ones left out), then the
    index (offset, length per inner chunk, C order, uint64 LE) and its crc32c."""
    h, w = array.shape
    ch, cw = inner_chunk((h, w), chunk)
    ny, nx = math.ceil(h / ch), math.ceil(w / cw)
    index = np.full((ny, nx, 2), EMPTY, dtype="<u8")
    pieces: list[bytes] = []
    offset = 0
    le = array.dtype.newbyteorder("<")
    for iy in range(ny):
        for ix in range(nx):
            block = array[iy * ch:(iy + 1) * ch, ix * cw:(ix + 1) * cw]
            if not block.any():
                continue
            if block.shape != (ch, cw):
                padded = np.zeros((ch, cw), array.dtype)
                padded[:block.shape[0], :block.shape[1]] = block
                block = padded
            data = bytes(_zstd.encode(np.ascontiguousarray(block, dtype=le)))
            index[iy, ix] = (offset, len(data))
            pieces.append(data)
            offset += len(data)
    raw_index = index.tobytes()
    pieces.append(raw_index)
    pieces.append(struct.pack("<I", google_crc32c.value(raw_index)))
    return b"".join(pieces)


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
            block = np.frombuffer(_zstd.decode(data[off:off + n]),
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
    arrays = {"class": comp.class_map(), "instance": comp.instance_map(idtype)}
    base = paths.join(NAME, group_path(item.dataset, item.stem))
    metas = {name: array_meta(a.shape, a.dtype, opts.chunk) for name, a in arrays.items()}
    attrs: dict[str, Any] = {"image": item.name}
    if item.image_key is not None:
        attrs["image_uri"] = ctx.input_uri(item.image_key)
    blobs = [Blob(paths.join(base, META_FILE), _dumps(group_meta(attrs, metas)))]
    for name, a in arrays.items():
        blobs.append(Blob(paths.join(base, name, META_FILE), _dumps(metas[name])))
        blobs.append(Blob(paths.join(base, name, "c", "0", "0"), encode_shard(a, opts.chunk)))
    return ItemOutput(blobs, dict(comp.class_pixels), comp.instances, dict(comp.not_painted))


def root_attributes(classes: ClassTable) -> dict[str, Any]:
    return {"classes": [{"index": i, "name": c.name, "color": list(c.color)}
                        for i, c in enumerate(classes.classes, start=1)]}


def dataset_files(classes: ClassTable, opts: ZarrOptions) -> list[Blob]:
    """The root group (unconsolidated; the driver consolidates it last)."""
    return [Blob(paths.join(NAME, META_FILE), _dumps(group_meta(root_attributes(classes))))]


# ---------------------------------------------------------------------------- finalize helpers
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


def consolidated_frame(root_doc: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(head, tail) of the root `zarr.json` consolidating the store: the entries of
    `consolidated_entries` go between them, so the document is streamed, never held whole."""
    doc = {k: v for k, v in root_doc.items() if k != "consolidated_metadata"}
    doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False,
                                    "metadata": {}}
    text = _dumps(doc)
    cut = text.rindex(b'"metadata":{}') + len(b'"metadata":{')
    return text[:cut], text[cut:]


def consolidated_entries(path: str, group_doc: bytes | None, *, first: bool) -> bytes:
    """The consolidated entries of one group (its own, then its arrays'), given its zarr.json
    (None for an intermediate group). zarr-python's layout: every node flat, under its path
    from the root, groups with an empty consolidated_metadata of their own."""
    doc = json.loads(group_doc) if group_doc is not None else group_meta()
    children = doc.pop("consolidated_metadata", None) or {"metadata": {}}
    doc["consolidated_metadata"] = {"kind": "inline", "must_understand": False,
                                    "metadata": {}}
    entries = [(path, doc)] + [(f"{path}/{k}", v) for k, v in children["metadata"].items()]
    text = b",".join(_dumps({p: m})[1:-1] for p, m in entries)
    return text if first else b"," + text


# ---------------------------------------------------------------------------- plan (clashes)
ARRAY_NAMES = ("class", "instance")  # the arrays of an item group (`write_item`)


def planned_keys(dataset: str, name: str, opts: ZarrOptions) -> paths.Planned:
    """The keys `write_item` writes for (dataset, name), known without rendering
    (jobs/clashes.py): its two array folders (nothing else may go inside an array), its group
    node and the intermediate group nodes above it, shared (a group may be both an item's group
    and the parent of another item's group, see jobs/assemble.py). ItemError for a group named
    like an array: readers (and finalize) would take it for one."""
    group = group_path(dataset, Item(dataset, name, 0, 0, ()).stem)
    if group.rsplit("/", 1)[-1] in ARRAY_NAMES:
        raise ItemError(expected(f"an image name whose stem is not {' or '.join(ARRAY_NAMES)} "
                                 "(the zarr group would look like an array)", name))
    base = paths.join(NAME, group)
    return paths.Planned(
        folders=tuple(paths.join(base, a) for a in ARRAY_NAMES),
        shared=(paths.join(base, META_FILE),
                *(paths.join(NAME, g, META_FILE) for g in ancestors(group))))


def reserved_keys(opts: ZarrOptions) -> paths.Planned:
    """The root group node, written at finalize."""
    return paths.Planned(tuple(b.key for b in dataset_files(ClassTable(()), opts)))
