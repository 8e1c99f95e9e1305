"""Writer of the `clearml` format: Hyper-Dataset masks, labels and frames (SPEC 2.3).

Layout under `clearml/`:
- `masks/<dataset>/<stem>.png`: RGB PNG, class i (position in the class list, from 1) painted
  as (i, i, i), background (0, 0, 0) - the pixel values `set_masks_labels` maps (reference C.2);
  the item's class map (`ctx.composition()`, maskcore/order.py: the drawing order of its input,
  shared with every writer); a `background` label of the input is background (0, 0, 0);
- `mask_labels.json`: `{"_all_": [{"value": [r, g, b], "labels": [name]}, ...]}`, ONE
  background entry first - the form ClearML stores as version metadata (reference C.1);
- `frames.jsonl`: one frame per exported image in manifest order. Each frame is written by
  `write_item` twice: as the item's object `_frames/<dataset>/<stem>.json` (its output, which
  `verify` checks and `--incremental` carries forward) and as its `record` (PART_RECORDS): the
  task stores a partition's frames, in item order, beside its manifest part, and the finalizer
  concatenates those per-partition blocks in partition order - one read per partition, never
  one per item, and no process holds more than a batch of partitions. An item carried forward
  unchanged gets its record back from its frame object (`record_key`), read by its task.
  A frame is in the shape `DataEntryImage.from_api_object` reads (clearml.hyperdatasets,
  reference C.1/C.3): `sources[]` with the image `uri`, `width`,
  `height`, `timestamp` 0 and `masks[]` {id "00", content_type, uri, timestamp}; `rois[]` with
  `label`, `sources` and `mask` {id, value} for each class present in the mask.
URIs are final: the image's input URL and the mask's output URL (`ItemContext.input_uri` /
`output_uri`), so users register frames without uploading anything.

More than 255 classes cannot be written as (i, i, i) in 8 bits: a config error before any work.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import msgspec
import numpy as np

from .. import paths
from ..errors import ConfigError, expected
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
    decode_png,
    template_of,
)

NAME = "clearml"
MASKS_DIR = "masks"
FRAMES_DIR = "_frames"
FRAMES_FILE = "frames.jsonl"
LABELS_FILE = "mask_labels.json"
MASK_ID = "00"
MAX_CLASSES = 255
PART_RECORDS = True  # frames.jsonl is the concatenation of the partitions' frames
SOURCE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {}  # the Options' own for every job source


@dataclass(frozen=True)
class ClearmlOptions:
    """`source_id`: the frame's source (sub-entry) name; the new SDK's default is
    'image_entry_0', the legacy SingleFrame's 'default'. `thickness`: the job's render setting
    (jobs/config.py sets it from the `render` section)."""

    source_id: str = "image_entry_0"
    thickness: int = 2

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, prefix: str, defaults: Mapping[str, Any]
                     ) -> ClearmlOptions:
        merged = {**defaults, **raw}
        for k in merged:
            if k not in cls.__dataclass_fields__:
                raise ConfigError(expected(f"one of {sorted(cls.__dataclass_fields__)}", k),
                                  key=f"{prefix}.{k}")
        sid = merged.get("source_id", cls.source_id)
        if not isinstance(sid, str) or not sid:
            raise ConfigError(expected("a non-empty source id", sid), key=f"{prefix}.source_id")
        return cls(source_id=sid, thickness=check_thickness(merged, prefix))

    def needs_image(self) -> bool:
        """Masks and frames need the annotation only (image size included)."""
        return False

    def with_input_meta(self, meta: bytes) -> Any:
        """No project metadata is kept from the input: these options as they are."""
        return self

    def check_classes(self, classes: ClassTable, prefix: str) -> None:
        if len(classes) > MAX_CLASSES:
            raise ConfigError(expected(f"at most {MAX_CLASSES} classes for (i, i, i) mask "
                                       "values in 8-bit RGB", f"{len(classes)} classes"),
                              key=prefix)


Options = ClearmlOptions  # writer interface (see formats/__init__.py)


def mask_key(dataset: str, stem: str) -> str:
    return paths.join(NAME, MASKS_DIR, dataset, stem + ".png")


def frame_key(dataset: str, stem: str) -> str:
    return paths.join(NAME, FRAMES_DIR, dataset, stem + ".json")


def _content_type(name: str) -> str:
    """The image's MIME type by its extension (mimetypes.guess_type, ~7 us a call): asked once
    per extension for a plain name - no ':' (which could read as a URL scheme) and one dot in
    its last part, not leading - whose guess depends on that extension alone."""
    last = name[name.rfind("/") + 1:]
    dot = last.find(".")
    if dot > 0 and last.find(".", dot + 1) < 0 and ":" not in name:
        return _type_of_extension(last[dot:])
    return _guess(name)


def _guess(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@lru_cache(maxsize=256)
def _type_of_extension(ext: str) -> str:
    return _guess("x" + ext)


def frame(ctx: ItemContext, opts: ClearmlOptions, mask_uri: str, present: list[int]
          ) -> dict[str, Any]:
    """The frame dict of one item; `present` are the class indices (from 1) in its mask."""
    item = ctx.item
    source: dict[str, Any] = {"id": opts.source_id}
    if (image_uri := ctx.image_uri()) is not None:
        source["uri"] = image_uri
        source["content_type"] = _content_type(item.name)
    source.update({
        "width": item.width, "height": item.height, "timestamp": 0,
        "masks": [{"id": MASK_ID, "content_type": "image/png", "uri": mask_uri,
                   "timestamp": 0}],
    })
    rois = [{"label": [ctx.classes[i - 1].name], "sources": [opts.source_id],
             "meta": {"_type": "mask"}, "mask": {"id": MASK_ID, "value": [i, i, i]}}
            for i in present]
    return {"id": paths.join(item.dataset, item.name), "meta": {"dataset": item.dataset,
                                                              "image": item.name},
            "sources": [source], "rois": rois}


def gray_rgb_png(index: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of (v, v, v). PNG filter NONE: on such masks 40% smaller and ~15% faster
    than OpenCV's default (SUB), which finds nothing to predict across the equal channels."""
    ok, buf = cv2.imencode(".png", cv2.merge([index, index, index]),
                           [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE])
    if not ok:
        raise ValueError(f"cv2.imencode failed for an array of shape {index.shape}")
    return buf.tobytes()


_encode = msgspec.json.Encoder().encode  # json.dumps' compact UTF-8 text, ~10x faster


def write_item(ctx: ItemContext, opts: ClearmlOptions) -> ItemOutput:
    item = ctx.item
    comp = ctx.composition(thickness=opts.thickness)
    key = mask_key(item.dataset, item.stem)
    data = _encode(frame(ctx, opts, ctx.output_uri(key), comp.present))
    blobs = [Blob(key, gray_rgb_png(comp.class_map())),
             Blob(frame_key(item.dataset, item.stem), data)]
    return ItemOutput(blobs, dict(comp.class_pixels), comp.instances, dict(comp.not_painted),
                      record=data)


def record_key(dataset: str, name: str, opts: ClearmlOptions) -> str:
    """The item's frame object: its record when it is carried forward unchanged."""
    return frame_key(dataset, name_stem(name))


def mask_labels(classes: ClassTable) -> dict[str, Any]:
    values = [{"value": [0, 0, 0], "labels": ["background"]}]
    values += [{"value": [i, i, i], "labels": [c.name]}
               for i, c in enumerate(classes.classes, start=1)]
    return {"_all_": values}


def dataset_files(classes: ClassTable, opts: ClearmlOptions) -> list[Blob]:
    """mask_labels.json; frames.jsonl is streamed from the per-item frames by `finalizer`."""
    return [Blob(paths.join(NAME, LABELS_FILE),
                 json.dumps(mask_labels(classes), indent=2, ensure_ascii=False).encode())]


# ---------------------------------------------------------------------------- finalize
class FramesFinalizer:
    """`clearml/frames.jsonl`: the partitions' frames (their records, already in item order)
    copied into one streamed object in partition order - manifest order."""

    def __init__(self, io: FinalizeIO) -> None:
        self.io = io
        self._ctx = io.open_output(paths.join(NAME, FRAMES_FILE))
        self.out = self._ctx.__enter__()

    def take(self, entry: FinalEntry) -> None:
        """The frames come with the partition's records (`take_records`)."""

    def take_records(self, pid: int, data: bytes | None) -> None:
        if data is None:
            self.io.problem(f"clearml: the frames of partition {pid} are missing; left out of "
                            f"{FRAMES_FILE}")
            return
        self.out.write(data)
        if data and not data.endswith(b"\n"):
            self.out.write(b"\n")

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        """The pass failed: discard the stream (never commit half of frames.jsonl)."""
        with contextlib.suppress(type(exc)):
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)


def finalizer(classes: ClassTable, opts: ClearmlOptions, io: FinalizeIO) -> FramesFinalizer:
    return FramesFinalizer(io)


def preview_mask(keys: Sequence[str], read: Callable[[str], bytes]) -> PreviewMask | None:
    """The class-index mask (channel 0 of the (i, i, i) PNG)."""
    for key in keys:
        if key.startswith(f"{NAME}/{MASKS_DIR}/") and key.endswith(".png"):
            m = decode_png(read(key))
            if m is not None:
                return "index", m[:, :, 0] if m.ndim == 3 else m
    return None


# ---------------------------------------------------------------------------- plan (clashes)
def planned_keys(dataset: str, name: str, opts: ClearmlOptions) -> paths.Planned:
    """The keys `write_item` writes for (dataset, name), known without rendering
    (jobs/clashes.py): the mask and the per-item frame, both by stem."""
    stem = name_stem(name)  # as mask_key / frame_key, prefixes cached
    # checked once: another folder and extension make no component empty, '.' or '..'
    return paths.Planned((paths.join(paths.folder(NAME, MASKS_DIR, dataset) + stem + ".png"),
                          paths.folder(NAME, FRAMES_DIR, dataset) + stem + ".json"))


def key_template(dataset: str, opts: ClearmlOptions) -> KeyTemplate:
    """`planned_keys` of the plain names of `dataset` (see `base.KeyTemplate`)."""
    return template_of(planned_keys, dataset, opts)


def reserved_keys(opts: ClearmlOptions) -> paths.Planned:
    """mask_labels.json, and frames.jsonl assembled at finalize."""
    sidecars = [b.key for b in dataset_files(ClassTable(()), opts)]
    return paths.Planned((*sidecars, paths.join(NAME, FRAMES_FILE)))
