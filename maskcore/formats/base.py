"""What every writer gets and gives: the Writer protocol, the per-item context, the output
blobs, and what a format's finalize sees.

A format is ONE module satisfying `Writer` (registered in formats/__init__.py, one line); it
owns its whole lifecycle, and jobs/ calls only this protocol, never a format by name:

    NAME                                   the format name, also its output sub-folder
    Options                                frozen dataclass (`WriterOptions`): validation,
                                           `check_classes`, `needs_image()`,
                                           `with_input_meta(meta)` (a Supervisely input's
                                           meta.json, kept only by the writer that copies it)
    SOURCE_DEFAULTS                        option defaults by job source ("dtl": a DTL
                                           save_masks layer); others take the Options' own
    write_item(ctx, opts) -> ItemOutput    the blobs of one item (pure; on a worker)
    PART_RECORDS                           whether write_item gives each item a `record` (one
                                           line of a dataset-level list, e.g. a ClearML frame):
                                           the task stores a partition's records beside its
                                           manifest part, in item order, and the finalizer gets
                                           them one partition at a time (`take_records`), so
                                           the list is a concatenation, O(partitions) reads
    record_key(dataset, name, opts)        the output key whose bytes are an item's record
                                           (one of its blobs), read back by the task when the
                                           item is carried forward unchanged; None when the
                                           format keeps no records
    dataset_files(classes, opts)           dataset-level sidecars (labelmap, meta.json, the
                                           zarr root), written once after the finalize pass
    finalizer(classes, opts, io)           a STREAMING `Finalizer`: `take(entry)` per manifest
                                           line in manifest order, `close()` at the end, or
                                           `abort(exc)` when the pass failed (discard, never
                                           commit half a stream or archive); I/O
                                           only through `io` (a `FinalizeIO` given by jobs/),
                                           memory bounded whatever the number of items;
                                           `take_records(data)` once per partition (after its
                                           lines) with that partition's records, for writers
                                           with PART_RECORDS only
    preview_mask(keys, read)               the mask the preview shows for an item, from its
                                           output keys (None: this format has none)

`ItemContext` is made once per item by the task. It renders stamps lazily, once per
(rule, thickness, templated) - so several formats share one rendering; templated stamps are
the plain ones unless a graph's class has a template - composes them once
(`composition`: one drawing order, one class / instance map, one histogram for every writer),
and decodes the image lazily, only if some output needs pixels. Writers return `Blob`s (key
relative to the output root, bytes) and never touch storage; `jobs/tasks.py` writes them.
"""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, Protocol, TypeVar

import msgspec
import numpy as np

from ..encode import decode_image
from ..errors import ConfigError, ItemError, expected
from ..limits import DEFAULT_LIMITS, Limits, check_image_header
from ..model import ClassTable, Item
from ..order import Composition, compose
from ..paths import Planned
from ..rasterize import Stamp, render, templates_matter
from ..runs import Runs, render_runs

T = TypeVar("T")

PACK_MAGIC = b"MJPARTS1"
MAX_THICKNESS = 1000


def check_thickness(merged: Mapping[str, Any], prefix: str, default: int = 2) -> int:
    """The render thickness a writer's options carry (jobs/config.py sets it from the job's
    `render` section): an integer in 1..MAX_THICKNESS, else ConfigError naming the key."""
    t = merged.get("thickness", default)
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= MAX_THICKNESS:
        raise ConfigError(expected(f"an integer thickness in 1..{MAX_THICKNESS}", t),
                          key=f"{prefix}.thickness")
    return t


def pack_parts(parts: list[bytes]) -> bytes:
    """Several input files of one item as one bytes (readers take one): magic, count, sizes."""
    head = PACK_MAGIC + len(parts).to_bytes(4, "big")
    return b"".join([head, *(len(p).to_bytes(8, "big") for p in parts), *parts])


def unpack_parts(data: bytes) -> list[bytes]:
    if not data.startswith(PACK_MAGIC) or len(data) < 12:
        raise ItemError("Expected packed item files. Got other bytes instead.")
    n = int.from_bytes(data[8:12], "big")
    sizes = [int.from_bytes(data[12 + 8 * k:20 + 8 * k], "big") for k in range(n)]
    pos, out = 12 + 8 * n, []
    for size in sizes:
        out.append(data[pos:pos + size])
        pos += size
    if pos != len(data):
        raise ItemError("Expected packed item files. Got truncated bytes instead.")
    return out


@dataclass(frozen=True)
class Blob:
    key: str
    data: bytes


@dataclass
class ItemOutput:
    """A writer's result for one item: blobs to write and facts for the manifest."""

    blobs: list[Blob] = field(default_factory=list)
    class_pixels: dict[str, int] | None = None
    instances: int | None = None
    not_painted: dict[str, int] | None = None  # {kind: count}, see order.not_painted
    record: bytes | None = None  # one line, no line break (writers with PART_RECORDS)


@dataclass
class ItemContext:
    item: Item
    classes: ClassTable
    read_image: Callable[[], bytes] | None = None
    ann_bytes: bytes | None = None  # the item's annotation as the input holds it
    limits: Limits = DEFAULT_LIMITS
    rule: str = "opencv"
    exif: bool = True  # the reader's tool decodes images turned by EXIF orientation (EXIF)
    output_uri: Callable[[str], str] = str  # output key -> its final URL (for frame lists)
    input_uri: Callable[[str], str] = str  # input key -> its URL (image sources)
    ann_format: str = ""  # the reader's ANN_FORMAT: what `ann_bytes` is (a writer copies
    # an annotation verbatim only into a project of the same format)
    _stamps: dict[tuple[str, int, bool], list[Stamp | None]] = field(default_factory=dict)
    _compositions: dict[int, Composition] = field(default_factory=dict)
    _image: np.ndarray | None = None
    _image_bytes: bytes | None = None
    _image_uri: str | None = None

    def image_uri(self) -> str | None:
        """The image's URL (`input_uri` of its key, None without an image), made once for
        every writer that records it (zarr attrs, ClearML frames)."""
        if self._image_uri is None and self.item.image_key is not None:
            self._image_uri = self.input_uri(self.item.image_key)
        return self._image_uri

    def stamps(self, *, thickness: int = 2, templated: bool = False, rule: str | None = None
               ) -> list[Stamp | None]:
        """Stamps of every label, rendered once per (rule, thickness, templated); the rule
        defaults to the one of the tool the annotations came from (SPEC 2.5)."""
        rule = rule or self.rule
        if rule == "coco":
            thickness, templated = 1, False  # no strokes or templates under pycocotools' rule
        if templated and not templates_matter(self.item, self.classes, rule):
            templated = False  # the same stamps: rendered once
        key = (rule, thickness, templated)
        if key not in self._stamps:
            self._stamps[key] = render(self.item, self.classes, rule=rule, thickness=thickness,
                                       templated=templated,
                                       max_pixels=self.limits.max_shape_pixels)
        return self._stamps[key]

    def composition(self, *, thickness: int = 2) -> Composition:
        """The item's class / instance maps in the drawing order of its rule (order.py),
        composed once per thickness (the job's render setting) and shared by every writer."""
        key = 1 if self.rule == "coco" else thickness  # no strokes under pycocotools' rule
        if key not in self._compositions:
            if self.rule == "coco":  # runs, not windows: same pixels, far fewer touched
                footprints: Sequence[Stamp | Runs | None] = render_runs(
                    self.item, self.classes, max_pixels=self.limits.max_shape_pixels)
            else:
                footprints = self.stamps(thickness=thickness)
            self._compositions[key] = compose(self.item, self.classes, footprints, self.rule)
        return self._compositions[key]

    def image_bytes(self) -> bytes:
        if self._image_bytes is None:
            if self.read_image is None or self.item.image_key is None:
                raise ItemError("Expected an image file for this item. Got none instead.")
            self._image_bytes = self.read_image()
        return self._image_bytes

    def image(self) -> np.ndarray:
        """The decoded image (BGR), which must have the annotation's size: decoded as the
        reader's tool decodes it (`exif`: EXIF orientation applied or ignored); when only the
        other orientation has the annotation's size (EXIF 5-8 turn width and height), the
        annotation was drawn on that one, and it is decoded so (a second decode, only then)."""
        if self._image is None:
            name, size = f"image {self.item.name}", (self.item.width, self.item.height)
            img = decode_image(self.image_bytes(), self.limits, name=name, exif=self.exif)
            if img.shape[1::-1] != size and img.shape[:2] == size:
                del img
                img = decode_image(self.image_bytes(), self.limits, name=name,
                                   exif=not self.exif)
            h, w = img.shape[:2]
            if (w, h) != size:
                raise ItemError(
                    f"Expected the image to be {self.item.width}x{self.item.height} as its "
                    f"annotation says. Got {w}x{h} instead."
                )
            self._image = img
        return self._image


def last_by_identity(fn: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """`fn(a, b)` kept for its last arguments, compared by identity: a job's items share one
    class table and one options object (frozen), so a per-job table is made once, not per
    item - and hashing those objects per item would cost as much as making it. The result is
    shared: read-only by convention. A race between threads only makes it twice."""
    last: tuple[Any, Any, T] | None = None

    @functools.wraps(fn)
    def cached(a: Any, b: Any) -> T:
        nonlocal last
        got = last
        if got is not None and got[0] is a and got[1] is b:
            return got[2]
        out = fn(a, b)
        last = (a, b, out)
        return out

    return cached


# ---------------------------------------------------------------------------- the protocol
SHOWN = ("ok", "unchanged")  # statuses of exported items (their outputs exist)


class OutputRef(msgspec.Struct):
    """One output of a manifest line, as finalize sees it."""

    key: str
    size: int = 0


class FinalEntry(msgspec.Struct):
    """The fields of a manifest line that finalize uses (other fields are skipped when a line
    is decoded, which keeps the one pass over millions of lines fast)."""

    dataset: str
    item: str
    status: str
    error: str | None = None
    outputs: list[OutputRef] = []
    class_pixels: dict[str, int] = {}
    instances: int = 0
    not_painted: dict[str, int] = {}

    @property
    def exported(self) -> bool:
        return self.status in SHOWN


def _no_io(what: str) -> None:
    raise NotImplementedError(f"this FinalizeIO cannot {what}")


class OpenOutput(Protocol):
    """`FinalizeIO.open_output`: a stream of lines by default, `archive=True` for an archive."""

    def __call__(self, key: str, *, archive: bool = False
                 ) -> AbstractContextManager[IO[bytes]]: ...


@dataclass(frozen=True)
class FinalizeIO:
    """The I/O a finalizer may do, supplied by jobs/ (keys are relative to the output root):

    read(key) -> bytes
    read_many(keys, missing_ok) -> {key: bytes}   one concurrent call; with `missing_ok`,
                                                  keys that do not exist are left out
    write_many({key: bytes})                      one concurrent call
    open_output(key, archive=False) -> context manager of a binary file to stream one large
                                                  object into (committed on normal exit,
                                                  discarded on error); `archive=True` for an
                                                  archive (zip, tar): bigger multipart parts
                                                  than a line stream (storage's policy)
    problem(message)                              report something finalize could not do
                                                  (listed in manifest.json; never raises)
    exists(key) -> bool, delete(keys), move(src, dst)   for outputs whose keys vary between
                                                  runs (archive pieces)
    record(details)                               what the format wants in manifest.json under
                                                  `format_details.<format>` (small, JSON)
    scratch() -> path, drop_scratch(path)         a private local folder to spool into, and
                                                  its removal (jobs/ gives one that the next
                                                  driver removes if this one is killed)
    """

    read: Callable[[str], bytes]
    read_many: Callable[[list[str], bool], dict[str, bytes]]
    write_many: Callable[[Mapping[str, bytes]], None]
    open_output: OpenOutput
    problem: Callable[[str], None]
    exists: Callable[[str], bool] = lambda key: False
    delete: Callable[[list[str]], None] = lambda keys: None
    move: Callable[[str, str], None] = lambda src, dst: _no_io("move")
    record: Callable[[Mapping[str, Any]], None] = lambda details: None
    scratch: Callable[[], str] = lambda: tempfile.mkdtemp(prefix="maskcore-finalize-")
    drop_scratch: Callable[[str], None] = lambda path: shutil.rmtree(path, True)


class Finalizer(Protocol):
    """A format's streaming finalize: `take` every manifest line in order, then `close`; or
    `abort(exc)` instead of `close` when the pass failed (a stream or an archive is then
    discarded rather than committed half written; finalize runs again on the rerun)."""

    def take(self, entry: FinalEntry) -> None: ...

    def close(self) -> None: ...

    def abort(self, exc: BaseException) -> None: ...


class RecordsFinalizer(Finalizer, Protocol):
    """The finalizer of a writer with PART_RECORDS: also `take_records` of every partition, in
    partition order, after that partition's lines (None: the partition's records are missing)."""

    def take_records(self, pid: int, data: bytes | None) -> None: ...


class NoFinalize:
    """The finalizer of a format with nothing to assemble from its items."""

    def take(self, entry: FinalEntry) -> None:
        """Nothing to do per item."""

    def close(self) -> None:
        """Nothing to write."""

    def abort(self, exc: BaseException) -> None:
        """Nothing to discard."""


def no_record_key(dataset: str, name: str, opts: Any) -> None:
    """`record_key` of a writer without PART_RECORDS."""
    return None


class WriterOptions(Protocol):
    """What a writer's `Options` class offers (a frozen dataclass)."""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, prefix: str,
                     defaults: Mapping[str, Any]) -> Any: ...

    def check_classes(self, classes: ClassTable, prefix: str) -> None: ...

    def needs_image(self) -> bool: ...

    def with_input_meta(self, meta: bytes) -> Any:
        """The options for an input that carries its project metadata as it stands (a
        Supervisely meta.json); a format that does not keep it returns the options unchanged."""


PreviewMask = tuple[str, np.ndarray]  # ("index", HxW class indices) | ("bgr", HxWx3)


def decode_png(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray | None:
    """A PNG as written (any depth, channels as stored, BGR order); None if undecodable or if
    its header claims more pixels than `limits` allow (checked before decoding)."""
    import cv2

    try:
        check_image_header(data, limits, what="mask")
    except ItemError:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


class Writer(Protocol):
    """An output format: one module (see the module docstring)."""

    NAME: str
    Options: type[WriterOptions]
    PART_RECORDS: bool
    SOURCE_DEFAULTS: Mapping[str, Mapping[str, Any]]  # option defaults by job source ("dtl":
    # a Supervisely DTL save_masks layer; "yaml"); a source not named takes the Options' own

    def write_item(self, ctx: ItemContext, opts: Any) -> ItemOutput: ...

    def record_key(self, dataset: str, name: str, opts: Any) -> str | None: ...

    def dataset_files(self, classes: ClassTable, opts: Any) -> list[Blob]: ...

    def finalizer(self, classes: ClassTable, opts: Any, io: FinalizeIO) -> Finalizer: ...
    # a writer with PART_RECORDS returns a RecordsFinalizer

    def preview_mask(self, keys: Sequence[str], read: Callable[[str], bytes]
                     ) -> PreviewMask | None: ...

    def planned_keys(self, dataset: str, name: str, opts: Any) -> Planned: ...

    def reserved_keys(self, opts: Any) -> Planned: ...

    def key_template(self, dataset: str, opts: Any) -> KeyTemplate: ...


# ---------------------------------------------------------------------------- plan (clashes)
STEM_MARK = "\x02"  # in a KeyTemplate: the item's stem (control characters: never in a
NAME_MARK = "\x03"  # dataset, name or layout folder that passes the name rules)
_PLAIN_NAME = re.compile(r"[ -\-0-9;-\[\]-~][ -\.0-9;-\[\]-~]*").fullmatch


def plain_name(name: str) -> bool:
    """Whether `name` is PLAIN: printable ASCII, not empty, no '/', '\\' or ':', not starting
    with '.'. Such a name passes `paths.key_problem` (when at most 255 characters), it is its
    own `paths.component`, and so is its stem (`model.name_stem`: no '/', never empty, '.' or
    '..'), which is also CVAT's item id."""
    return _PLAIN_NAME(name) is not None


class KeyTemplate(NamedTuple):
    """A writer's `planned_keys` of one dataset for every PLAIN name at once
    (`key_template(dataset, opts)`, jobs/clashes.py: one stem per item for all formats).

    `planned` holds the keys with STEM_MARK for the item's stem and NAME_MARK for its name;
    a key with neither (a list file, a group node above the items) is the same for every item
    of the dataset. For a plain name whose stem is not in `odd_stems`,
    `planned_keys(dataset, name, opts)` equals `planned` with the marks replaced (same keys,
    same order); other names (and a dataset `key_template` raises for) take `planned_keys`."""

    planned: Planned
    odd_stems: frozenset[str] = frozenset()

    def expand(self, name: str) -> Planned:
        """`planned` for the PLAIN `name` (what the contract says `planned_keys` gives)."""
        head, dot, _ext = name.rpartition(".")
        stem = head if dot and head else name

        def fill(keys: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(k.replace(STEM_MARK, stem).replace(NAME_MARK, name) for k in keys)
        return Planned(*(fill(keys) for keys in self.planned))


_PROBE_EXT = "\x04"  # the extension of the probe name `template_of` plans


def template_of(planned_keys: Callable[[str, str, Any], Planned], dataset: str, opts: Any, *,
                odd_stems: frozenset[str] = frozenset()) -> KeyTemplate:
    """The KeyTemplate of a writer whose `planned_keys` makes the keys of a plain name from
    its stem and name as text only (no other decision on them): planned for the probe name
    STEM_MARK + '.' + a control character, then its name marked. A writer's `key_template`
    states that by calling this; tests/maskcore/test_key_templates.py checks it on hostile
    names. Raises what `planned_keys` raises for every item of `dataset`."""
    probe = STEM_MARK + "." + _PROBE_EXT
    planned = planned_keys(dataset, probe, opts)
    return KeyTemplate(Planned(*(tuple(k.replace(probe, NAME_MARK) for k in keys)
                                 for keys in planned)), odd_stems)
