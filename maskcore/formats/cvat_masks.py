"""Writer of the `cvat` format: CVAT "Segmentation Mask 1.1" (SPEC 2.2), pixel-exact with CVAT.

Layout under `cvat/`: `labelmap.txt`, `ImageSets/Segmentation/<subset>.txt`,
`SegmentationClass/<id>.png`, `SegmentationObject/<id>.png` (8-bit RGB), and with `zip: true`
`cvat/segmentation_mask_1.1.zip` holding the same tree as CVAT's own archive (stored, no
directory entries). `<id>` is the image name minus its last extension, sub-folders kept;
`<subset>` is the item's dataset (a CVAT subset, or "default"). At finalize, `finalizer`
streams the subset lists (only ids whose PNGs were written; see `id_problem`) and the zip from
the manifest lines, with bounded memory.

Painting is the item's composition (`ctx.composition()`, maskcore/order.py), shared with every
other writer: for CVAT and COCO inputs it is datumaro's pipeline as CVAT runs it
(reference/cvat_clearml.md A.1, A.5, A.6: groups merged into one instance, ungrouped masks
first, z_order, background instances erasing and keeping their number). The class PNG is the
labelmap colour of each pixel's class, the object PNG the VOC colour of its instance number.

Labelmap: `background` first (coloured as the input's `background` label if it declares one,
whose shapes then paint background, else `background:0,0,0::`), then the classes in input
order, so the line of class index i is i.
Colours: `colors: source` = the input's class colours (what CVAT does with label colours);
`colors: voc` = the VOC colour of the labelmap line (datumaro's colours when none are given).
CVAT itself sorts labelmap lines by name; we keep background first, which upstream datumaro
needs (A.6) and which imports identically. Duplicate colours would make a class unreachable
on import, so they are refused before any work (ConfigError), as are names that a labelmap
cannot hold.

Subsets: each dataset is a subset. CVAT's importer cannot hold every dataset name as a subset
list (`/` would be a folder; datumaro skips list files whose name has `_`): `subset_of` maps a
dataset to its subset. `subsets: {dataset: subset}` names some explicitly; `subset_names`
decides the others: `strict` (default) keeps the name, and items of a dataset it cannot hold
fail with the reason; `safe` percent-encodes `%`, `_`, `/`, backslash and control characters
(`train/cats` -> `train%2Fcats`, `a_b` -> `a%5Fb`; names without them are unchanged; reversible
with urllib.parse.unquote), an injective rule, so two datasets never share a subset by it.
Collisions never merge lists: explicit targets must be distinct and valid (ConfigError before
any work), and a dataset not in the map whose subset would be an explicit target fails its
items (the map wins, whichever datasets the input holds).

More than 255 instances in an image: the object PNG cannot number them. `instance_overflow:
error` (default) fails that item with the count; `wrap` writes CVAT's aliasing (index k gets
the colour of k mod 256; 255 is the VOC void colour).

More than 255 labels: CVAT's `paint_mask` casts the class map to 8 bits, so it paints labelmap
line k >= 256 in line k mod 256's colour (label 255 as background) although its labelmap.txt
lists line k's own colour. `class_overflow: keep` (default) paints each line's own colour (the
masks import back to the right labels); `wrap` writes CVAT's aliasing, pixel for pixel.

Items (a decision on reference A.7 / D.5): CVAT lists images without annotations in the subset
list but writes no PNG for them, and drops images whose annotations paint nothing (points only)
from the list. We list every exported item and write both PNGs for all of them (all-background
when nothing paints): a training loader can read `<id>.png` for every listed id, CVAT and
datumaro import such an item as "no annotations", and every PNG CVAT does write is identical.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Any

import cv2
import numpy as np

from .. import encode, paths
from ..errors import ConfigError, ItemError, expected
from ..model import RGB, ClassTable
from ..palette import voc_color
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
    last_by_identity,
    no_record_key,
    template_of,
)
from .cvat import (
    BACKGROUND,
    CLASS_DIR,
    LABELMAP_FILE,
    LABELMAP_HEADER,
    MASK_EXT,
    OBJECT_DIR,
    SEGM_LIST_DIR,
    item_id,
    subset_problem,
)

NAME = "cvat"
COLORS = ("source", "voc")
OVERFLOW = ("error", "wrap")
CLASS_OVERFLOW = ("keep", "wrap")
SUBSET_NAMES = ("strict", "safe")
ZIP_NAME = "segmentation_mask_1.1.zip"
MAX_INSTANCES = 255
VOC_INSTANCE_BGR = np.array([voc_color(i)[::-1] for i in range(256)], np.uint8)


@dataclass(frozen=True)
class CvatOptions:
    """`thickness`: the job's render setting (strokes under the OpenCV rule; set by
    jobs/config.py from the `render` section, never per format)."""

    colors: str = "source"
    instance_overflow: str = "error"
    zip: bool = False
    thickness: int = 2
    subset_names: str = "strict"
    subsets: Mapping[str, str] = field(default_factory=dict, hash=False)
    class_overflow: str = "keep"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, prefix: str, defaults: Mapping[str, Any]
                     ) -> CvatOptions:
        merged = {**defaults, **raw}
        known = tuple(cls.__dataclass_fields__)
        for k in merged:
            if k not in known:
                raise ConfigError(expected(f"one of {list(known)}", k), key=f"{prefix}.{k}")
        colors = merged.get("colors", "source")
        if colors not in COLORS:
            raise ConfigError(expected(f"one of {list(COLORS)}", colors), key=f"{prefix}.colors")
        overflow = merged.get("instance_overflow", "error")
        if overflow not in OVERFLOW:
            raise ConfigError(expected(f"one of {list(OVERFLOW)}", overflow),
                              key=f"{prefix}.instance_overflow")
        class_overflow = merged.get("class_overflow", "keep")
        if class_overflow not in CLASS_OVERFLOW:
            raise ConfigError(expected(f"one of {list(CLASS_OVERFLOW)}", class_overflow),
                              key=f"{prefix}.class_overflow")
        zipped = merged.get("zip", False)
        if not isinstance(zipped, bool):
            raise ConfigError(expected("true or false", zipped), key=f"{prefix}.zip")
        names = merged.get("subset_names", "strict")
        if names not in SUBSET_NAMES:
            raise ConfigError(expected(f"one of {list(SUBSET_NAMES)}", names),
                              key=f"{prefix}.subset_names")
        return cls(colors, overflow, zipped, check_thickness(merged, prefix), names,
                   _subset_map(merged.get("subsets") or {}, f"{prefix}.subsets"),
                   class_overflow=class_overflow)

    def needs_image(self) -> bool:
        """Masks need the annotation only."""
        return False

    def with_input_meta(self, meta: bytes) -> Any:
        """No project metadata is kept from the input: these options as they are."""
        return self

    @cached_property
    def subset_owners(self) -> dict[str, str]:
        """Explicit subset -> its dataset (one lookup per item, whatever the map's size)."""
        return {subset: dataset for dataset, subset in self.subsets.items()}

    def check_classes(self, classes: ClassTable, prefix: str) -> None:
        """Every class must fit a labelmap line, and no two lines may share a colour."""
        for c in classes.classes:
            bad = (not c.name or c.name != c.name.strip() or c.name[0] == "#"
                   or any(ch in c.name for ch in ":\n\r"))
            if bad:
                raise ConfigError(expected(
                    "class names a labelmap.txt line can hold (no ':', no line break, no "
                    "leading '#' or surrounding spaces)", c.name), key=prefix)
            if c.name == BACKGROUND:  # a Supervisely class: CVAT/COCO readers make it background
                raise ConfigError(expected(
                    "no class named 'background' (the labelmap's first line is the background; "
                    "a second one would not import): rename the class", c.name), key=prefix)
        seen: dict[RGB, str] = {}
        for name, color in labelmap(classes, self):
            if color in seen:
                raise ConfigError(expected(
                    "a distinct colour per labelmap line (CVAT's importer would read one as "
                    "the other); set colors: voc to use VOC colours",
                    f"{seen[color]!r} and {name!r} both {list(color)}"), key=f"{prefix}.colors")
            seen[color] = name


Options = CvatOptions  # writer interface (see formats/__init__.py)


def _subset_map(raw: Any, key: str) -> dict[str, str]:
    """`subsets`: {dataset: subset}, every subset a valid list name, no two the same."""
    if not isinstance(raw, Mapping):
        raise ConfigError(expected("a mapping {dataset: subset}", raw), key=key)
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for dataset, subset in raw.items():
        where = f"{key}.{dataset}"
        if not isinstance(dataset, str) or not isinstance(subset, str):
            raise ConfigError(expected("dataset and subset names (text)",
                                       f"{dataset!r}: {subset!r}"), key=where)
        problem = subset_problem(subset)
        if problem:
            raise ConfigError(problem, key=where)
        if subset in taken:
            raise ConfigError(expected(
                "one dataset per subset (two would merge into one list)",
                f"{taken[subset]!r} and {dataset!r} both mapped to {subset!r}"), key=where)
        taken[subset] = dataset
        out[dataset] = subset
    return out


_ESCAPED = frozenset("%_/\\")


def safe_subset(dataset: str) -> str:
    """`subset_names: safe`: `%`, `_`, `/`, `\\` and control characters percent-encoded
    (UTF-8 bytes, upper-case hex); every other character kept. Injective."""
    if not any(c in _ESCAPED or not c.isprintable() for c in dataset):
        return dataset
    return "".join(
        "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        if c in _ESCAPED or not c.isprintable() else c for c in dataset)


def subset_of(dataset: str, opts: CvatOptions) -> str:
    """The subset (list name) of a dataset's items; ItemError when it has none (see the module
    docstring: a name CVAT cannot hold under `strict`, or one an explicit mapping owns)."""
    if dataset in opts.subsets:
        return opts.subsets[dataset]
    subset = safe_subset(dataset) if opts.subset_names == "safe" else dataset
    problem = subset_problem(subset)
    if problem:
        raise ItemError(f"dataset {dataset!r} as a Segmentation Mask subset: {problem}; map it "
                        "with cvat.subsets or set cvat.subset_names: safe")
    other = opts.subset_owners.get(subset)
    if other is not None:
        raise ItemError(expected(
            f"a subset of its own for dataset {dataset!r}",
            f"{subset!r}, the subset cvat.subsets gives to dataset {other!r} (one list "
            "would hold both); map this dataset too"))
    return subset


# ---------------------------------------------------------------------------- labelmap
def labelmap(classes: ClassTable, opts: CvatOptions) -> list[tuple[str, RGB]]:
    """(name, colour) per labelmap line: background first (the colour of the input's
    `background` label, else black), then the classes in input order, so class index i (from
    1) is line i."""
    bg_color = classes.background if classes.background is not None else (0, 0, 0)
    lines = [(BACKGROUND, bg_color)] + [(c.name, c.color) for c in classes.classes]
    if opts.colors == "voc":
        lines = [(name, voc_color(k)) for k, (name, _) in enumerate(lines)]
    return lines


def labelmap_text(classes: ClassTable, opts: CvatOptions) -> bytes:
    rows = [LABELMAP_HEADER] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in labelmap(classes, opts)]
    return ("\n".join(rows) + "\n").encode("utf-8")


@last_by_identity
def labelmap_bgr(classes: ClassTable, opts: CvatOptions) -> np.ndarray:
    """The labelmap colours as a BGR table (line i = class index i), made once per job."""
    table = np.array([c[::-1] for _, c in labelmap(classes, opts)], np.uint8)
    if opts.class_overflow == "wrap":  # CVAT's 8-bit class map: line k painted as line k % 256
        table = table[np.arange(len(table)) % 256]
    table.flags.writeable = False
    return table


# ---------------------------------------------------------------------------- painting
def write_item(ctx: ItemContext, opts: CvatOptions) -> ItemOutput:
    item = ctx.item
    subset_of(item.dataset, opts)
    rel = item_id(item.name) + MASK_EXT
    comp = ctx.composition(thickness=opts.thickness)
    if comp.top > MAX_INSTANCES and opts.instance_overflow == "error":
        raise ItemError(expected(
            f"at most {MAX_INSTANCES} instances in one image (SegmentationObject PNGs hold "
            "8-bit instance colours; set cvat.instance_overflow: wrap for CVAT's aliasing)",
            comp.top))
    index = comp.index
    class_lut = labelmap_bgr(ctx.classes, opts)[comp.class_of]  # instance -> its class's BGR
    if index.dtype == np.uint8:
        # paletted PNGs: every decoder expands them to exactly CVAT's RGB masks, and they cost
        # a third of encoding the RGB images (BENCHMARKS.md)
        class_data, object_data = encode.png_palettes(
            index, [class_lut[:, ::-1], VOC_INSTANCE_BGR[:, ::-1]])
    else:
        class_data = encode.png(np.take(class_lut, index, axis=0))
        object_data = encode.png(VOC_INSTANCE_BGR[(index & 0xFF).astype(np.uint8)])
    return ItemOutput(blobs=[
        Blob(paths.join(NAME, CLASS_DIR, rel), class_data),
        Blob(paths.join(NAME, OBJECT_DIR, rel), object_data),
    ], class_pixels=dict(comp.class_pixels), instances=comp.instances,
        not_painted=dict(comp.not_painted))


# ---------------------------------------------------------------------------- finalize
def dataset_files(classes: ClassTable, opts: CvatOptions) -> list[Blob]:
    return [Blob(paths.join(NAME, LABELMAP_FILE), labelmap_text(classes, opts))]


ZIP_CHUNK = 1 << 20
_CLASS_PREFIX = f"{NAME}/{CLASS_DIR}/"
_BAD_ID_CHAR = re.compile(r"[\x00-\x1f\x7f\\]")  # (str.splitlines catches U+2028 & co.)
BATCH = 64  # PNGs fetched per concurrent read when zipping (bounded bytes in memory)
MAX_RECORDED = 10_000  # renamed datasets listed in manifest.json


def listed_id(entry: FinalEntry) -> str | None:
    """The id an exported entry adds to its subset list: the one its class PNG was written
    under (so a list only ever names ids that exist), None when the entry has no such PNG."""
    for o in entry.outputs:
        if o.key.startswith(_CLASS_PREFIX) and o.key.endswith(MASK_EXT):
            return o.key[len(_CLASS_PREFIX):-len(MASK_EXT)]
    return None


def id_problem(item_id_: str) -> str | None:
    """Why an id cannot be a line of a subset list (it would become another line, or name a
    path outside the tree), or None."""
    parts = item_id_.split("/")
    if _BAD_ID_CHAR.search(item_id_) or len(item_id_.splitlines()) != 1:
        return "a control character, line break or backslash"
    if not item_id_ or item_id_.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return "an empty, absolute or relative ('.', '..') path"
    return None


class SubsetListsFinalizer:
    """`ImageSets/Segmentation/<subset>.txt` (the ids of the exported items, in manifest order)
    and, with `zip: true`, the archive streamed into one object.

    Ids are spooled to one local temporary file per subset (the manifest is sorted by dataset,
    so each is opened once; any order is still right) and copied out at `close`: memory stays
    bounded whatever the number of items. An id that a list cannot hold (line break, absolute
    or '..' path) or that differs from the item's is reported and never written."""

    def __init__(self, classes: ClassTable, opts: CvatOptions, io: FinalizeIO) -> None:
        self.classes, self.opts, self.io = classes, opts, io
        self.spool = io.scratch()  # the subset lists' spool files
        self.files: dict[str, str] = {}  # subset -> spool file (one per subset)
        self.current: tuple[str, IO[bytes]] | None = None
        self.zip: zipfile.ZipFile | None = None
        self.pngs: list[str] = []
        self.renamed: dict[str, str] = {}  # dataset -> its subset, where they differ
        if opts.zip:
            self._zctx = io.open_output(paths.join(NAME, ZIP_NAME), archive=True)
            self.zip = zipfile.ZipFile(self._zctx.__enter__(), "w", zipfile.ZIP_STORED)

    def take(self, entry: FinalEntry) -> None:
        if not entry.exported:
            return
        got = listed_id(entry)
        if got is None:
            return  # no cvat output (failed before cvat, or not part of this format's run)
        try:
            subset = subset_of(entry.dataset, self.opts)
        except ItemError as e:
            self.io.problem(f"cvat: {entry.dataset}/{entry.item!r} left out of the subset "
                            f"lists: {e}")
            return
        if subset != entry.dataset and len(self.renamed) < MAX_RECORDED:
            self.renamed[entry.dataset] = subset
        why = id_problem(got)
        if why is None and got != item_id(entry.item):
            why = f"its PNG id {got!r} is not the item's id {item_id(entry.item)!r}"
        if why is not None:
            self.io.problem(f"cvat: {entry.dataset}/{entry.item!r} left out of the subset "
                            f"lists: {why}")
            return
        self._spool(subset).write(got.encode("utf-8") + b"\n")
        if self.zip is not None:
            prefix = NAME + "/"
            self.pngs += [o.key for o in entry.outputs
                          if o.key.startswith(prefix) and o.key.endswith(MASK_EXT)]
            if len(self.pngs) >= BATCH:
                self._zip_pngs()

    def _spool(self, subset: str) -> IO[bytes]:
        if self.current is not None and self.current[0] == subset:
            return self.current[1]
        if self.current is not None:
            self.current[1].close()
        path = self.files.setdefault(subset, os.path.join(self.spool, f"{len(self.files)}"))
        self.current = (subset, open(path, "ab"))  # noqa: SIM115 - kept open across takes
        return self.current[1]

    def _zip_pngs(self) -> None:
        assert self.zip is not None
        got = self.io.read_many(self.pngs, True)
        for k in self.pngs:
            if k in got:
                self.zip.writestr(k[len(NAME) + 1:], got[k])
            else:
                self.io.problem(f"cvat: {k} is missing; left out of {ZIP_NAME}")
        self.pngs = []

    def close(self) -> None:
        try:
            if self.current is not None:
                self.current[1].close()
            for subset in sorted(self.files):
                key = paths.join(NAME, SEGM_LIST_DIR, subset + ".txt")
                with open(self.files[subset], "rb") as src, self.io.open_output(key) as dst:
                    shutil.copyfileobj(src, dst, ZIP_CHUNK)
                if self.zip is not None:
                    self.zip.write(self.files[subset], key[len(NAME) + 1:])
            if self.zip is not None:
                self._zip_pngs()
                for b in dataset_files(self.classes, self.opts):
                    self.zip.writestr(b.key[len(NAME) + 1:], b.data)
                self.zip.close()
                self._zctx.__exit__(None, None, None)
            self.io.record({"subset_names": self.opts.subset_names,
                            "subsets": dict(sorted(self.renamed.items()))})
        finally:
            self.io.drop_scratch(self.spool)

    def abort(self, exc: BaseException) -> None:
        """The pass failed: discard the zip being streamed (never commit half an archive) and
        the spooled lists; nothing of this finalizer is written."""
        try:
            if self.current is not None:
                self.current[1].close()
            if self.zip is not None:
                self.zip = None
                with contextlib.suppress(type(exc)):
                    self._zctx.__exit__(type(exc), exc, exc.__traceback__)
        finally:
            self.io.drop_scratch(self.spool)


PART_RECORDS = False  # no per-item records (base.Writer)
SOURCE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {}  # the Options' own for every job source
record_key = no_record_key


def finalizer(classes: ClassTable, opts: CvatOptions, io: FinalizeIO) -> SubsetListsFinalizer:
    return SubsetListsFinalizer(classes, opts, io)


def preview_mask(keys: Sequence[str], read: Callable[[str], bytes]) -> PreviewMask | None:
    """The class PNG (labelmap colours)."""
    for key in keys:
        if key.startswith(_CLASS_PREFIX):
            m = decode_png(read(key))
            if m is not None:
                if m.ndim == 2:
                    m = cv2.cvtColor(m, cv2.COLOR_GRAY2BGR)
                return "bgr", m[:, :, :3]
    return None


# ---------------------------------------------------------------------------- plan (clashes)
def planned_keys(dataset: str, name: str, opts: CvatOptions) -> paths.Planned:
    """The keys `write_item` writes for (dataset, name), known without rendering
    (jobs/clashes.py): the class and object PNGs by item id - the subset (dataset) is not part
    of them, so two subsets with the same id clash - and, shared by the items of a subset, its
    list file. ItemError for a subset a list file cannot be named after (as `write_item`)."""
    subset = subset_of(dataset, opts)
    rel = item_id(name) + MASK_EXT  # checked once: the same under both folders
    return paths.Planned(
        (paths.join(paths.folder(NAME, CLASS_DIR) + rel), paths.folder(NAME, OBJECT_DIR) + rel),
        shared=(paths.folder(NAME, SEGM_LIST_DIR) + subset + ".txt",))


def key_template(dataset: str, opts: CvatOptions) -> KeyTemplate:
    """`planned_keys` of the plain names of `dataset` (see `base.KeyTemplate`)."""
    return template_of(planned_keys, dataset, opts)


def reserved_keys(opts: CvatOptions) -> paths.Planned:
    """labelmap.txt, the zip on request, and ImageSets/ (only subset lists go there)."""
    files = tuple(b.key for b in dataset_files(ClassTable(()), opts))
    if opts.zip:
        files += (paths.join(NAME, ZIP_NAME),)
    return paths.Planned(files, (paths.join(NAME, SEGM_LIST_DIR.split("/")[0]),))
