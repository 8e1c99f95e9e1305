"""Writer of the `supervisely` format: a Supervisely project plus mask folders (SPEC 2.1).

Layout under `supervisely/`: `meta.json`, `obj_class_to_machine_color.json` (app style),
`<dataset>/img/`, `<dataset>/ann/`, `<dataset>/masks_machine/<stem>.png`,
`<dataset>/masks_human/<stem>.png`, `<dataset>/masks_semantic_rgb/<stem>.png`,
`<dataset>/masks_instances/<stem>/<class>.png, <class>_01.png, ...`; nested datasets kept.

Two families of rules, picked by the options (reference/supervisely.md A.3-A.6, B.9):
- app (export-as-masks; no `gt_machine_color`): machine = grayscale class index (meta order
  from 1): the item's class map (`ctx.composition()`, maskcore/order.py, shared with every
  writer; for Supervisely projects labels drawn largest SDK area first, graphs as enabled
  nodes); 16-bit when there are more than 255 classes. Semantic = class colours on black in
  annotation order. Human (`app`) = original | cumulative 50% overlay. Instances = each object
  alone, 0/255, 1-bit PNG.
- DTL (`gt_machine_color` given): machine = RGB in the user's colours, annotation order,
  classes missing from the map left as background. Human (`dtl`) = original | 1-px green
  column | floor((fg + image) / 2) where fg is not black, human colours with black lifted to
  (1, 1, 1).

Packaging (the app's and ml-nodes' own): `resize_human_masks: P` resizes the human mask as
the app's resizeHumanMasks does (`resize_percent`); `archive: tar` makes `ArchiveFinalizer`
stream the finished tree into `supervisely/<archive_name>.tar`, or with `archive_split` into
the SDK's byte pieces `<archive_name>.tar.001`, `.002`, ... (maskcore/archive.py), and record
it in manifest.json.

Deliberate differences from upstream, documented in the README: cuboids are filled as their own
five faces everywhere (the app reuses another cuboid's faces, A.10.1); alpha masks count as
full coverage in index and instance masks (the SDK blends class *indices*, producing wrong
ids); in DTL machine masks graphs are drawn edges + nodes in the machine colour (the SDK leaks
the template's colours into machine masks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from .. import compose, encode, paths
from ..archive import PieceSink, TarStream, parse_size
from ..errors import ConfigError, ItemError, expected
from ..model import RGB, ClassTable, Label, name_stem
from ..palette import machine_colors, rgb
from ..rasterize import Stamp
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
from .supervisely import ANN_FORMAT, MACHINE_COLOR_FILE, META_FILE, SEMANTIC_COLOR_FILE

NAME = "supervisely"
HUMAN_STYLES = ("app", "dtl")
GREEN_BGR = np.array((0, 255, 0), np.uint8)
MAX_MACHINE_CLASSES = 65535  # class indices 1..65535 in a 16-bit PNG (0 is background)


@dataclass(frozen=True)
class SuperviselyOptions:
    """Options of the supervisely writer; names of the DTL save_masks layer kept."""

    masks_machine: bool = True
    masks_human: bool = True
    masks_semantic_rgb: bool = False
    masks_instances: bool = False
    gt_machine_color: Mapping[str, RGB] | None = None
    gt_human_color: Mapping[str, RGB] | None = None
    human_style: str = "app"
    thickness: int = 2
    images: bool = True
    annotations: bool = True
    resize_human_masks: int | None = None  # percent, the app's resizeHumanMasks/resizePercent
    archive: str | None = None  # "tar": the tree also as one tar (or pieces), at finalize
    archive_split: int | None = None  # piece size in bytes (SDK naming <name>.tar.001, ...)
    archive_name: str = "project"
    meta_json: bytes = field(default=b"", compare=False, repr=False)

    @property
    def dtl(self) -> bool:
        return self.gt_machine_color is not None

    def needs_image(self) -> bool:
        """Whether an item's image bytes are needed (read ahead by the task)."""
        return self.masks_human or self.images

    def with_input_meta(self, meta: bytes) -> Any:
        """A Supervisely input's meta.json as it stands, written verbatim to the output project
        (its class ids, tags and settings kept)."""
        return replace(self, meta_json=meta)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, prefix: str, defaults: Mapping[str, Any]
                     ) -> SuperviselyOptions:
        """Validate user settings (unknown keys, types, colours) into options."""
        known = {f for f in cls.__dataclass_fields__ if f != "meta_json"}
        merged = {**defaults, **raw}
        for k in merged:
            if k not in known:
                raise ConfigError(expected(f"one of {sorted(known)}", k), key=f"{prefix}.{k}")
        for k in ("masks_machine", "masks_human", "masks_semantic_rgb", "masks_instances",
                  "images", "annotations"):
            if k in merged and not isinstance(merged[k], bool):
                raise ConfigError(expected("true or false", merged[k]), key=f"{prefix}.{k}")
        t = check_thickness(merged, prefix)
        style = merged.get("human_style", "app")
        if style not in HUMAN_STYLES:
            raise ConfigError(expected(f"one of {HUMAN_STYLES}", style),
                              key=f"{prefix}.human_style")
        maps: dict[str, dict[str, RGB] | None] = {}
        for k in ("gt_machine_color", "gt_human_color"):
            v = merged.get(k)
            if v is None:
                maps[k] = None
                continue
            if not isinstance(v, Mapping):
                raise ConfigError(expected("a mapping {class: [r, g, b]}", v), key=f"{prefix}.{k}")
            maps[k] = {str(c): rgb(col, f"{prefix}.{k}.{c}") for c, col in v.items()}
        machine = maps["gt_machine_color"]
        if machine:
            seen: dict[RGB, str] = {}
            for c, col in machine.items():
                if col in seen:
                    raise ConfigError(
                        expected("a distinct machine colour per class",
                                 f"{c} and {seen[col]} both {list(col)}"),
                        key=f"{prefix}.gt_machine_color.{c}",
                    )
                seen[col] = c
        resize, archive, split, name = _packaging(merged, prefix)
        opts = cls(
            masks_machine=merged.get("masks_machine", True),
            masks_human=merged.get("masks_human", True),
            masks_semantic_rgb=merged.get("masks_semantic_rgb", False),
            masks_instances=merged.get("masks_instances", False),
            gt_machine_color=machine,
            gt_human_color=maps["gt_human_color"],
            human_style=style,
            thickness=t,
            images=merged.get("images", True),
            annotations=merged.get("annotations", True),
            resize_human_masks=resize,
            archive=archive,
            archive_split=split,
            archive_name=name,
        )
        if resize is not None and not opts.masks_human:
            raise ConfigError(expected("masks_human: true (there is nothing else to resize)",
                                       "masks_human: false"), key=f"{prefix}.resize_human_masks")
        if not (opts.masks_machine or opts.masks_human or opts.masks_semantic_rgb
                or opts.masks_instances or opts.images or opts.annotations):
            raise ConfigError("Expected at least one output enabled. Got all disabled instead.",
                              key=prefix)
        return opts

    def check_classes(self, classes: ClassTable, prefix: str) -> None:
        """Colour maps may only name classes of the input, and app-style machine masks (class
        index per pixel) need a PNG sample to hold every index (checked before any work)."""
        if self.masks_machine and not self.dtl and len(classes) > MAX_MACHINE_CLASSES:
            raise ConfigError(expected(f"at most {MAX_MACHINE_CLASSES} classes for machine "
                                       "masks (class index per pixel in a 16-bit PNG)",
                                       f"{len(classes)} classes"),
                              key=f"{prefix}.masks_machine")
        names = set(classes.names())
        for k, mapping in (("gt_machine_color", self.gt_machine_color),
                           ("gt_human_color", self.gt_human_color)):
            for c in mapping or {}:
                if c not in names:
                    raise ConfigError(expected(f"a class of the input ({sorted(names)[:10]}...)"
                                               if len(names) > 10 else
                                               f"a class of the input {sorted(names)}", c),
                                      key=f"{prefix}.{k}.{c}")


Options = SuperviselyOptions  # writer interface (see formats/__init__.py)

ARCHIVES = ("tar",)


def _packaging(merged: Mapping[str, Any], prefix: str
               ) -> tuple[int | None, str | None, int | None, str]:
    """(resize percent, archive, piece size, archive name) from the settings; ConfigError
    naming the key. Off: `resize_human_masks` / `archive` absent, null or false."""
    resize = merged.get("resize_human_masks")
    if resize is False:
        resize = None
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int)
                               or not 1 <= resize <= 100):
        raise ConfigError(expected("a percentage 1..100 (an integer, as the app's slider), "
                                   "or null", resize), key=f"{prefix}.resize_human_masks")
    archive = merged.get("archive")
    if archive is False or archive == "none":
        archive = None
    if archive is not None and archive not in ARCHIVES:
        raise ConfigError(expected(f"one of {list(ARCHIVES)} or none", archive),
                          key=f"{prefix}.archive")
    split = merged.get("archive_split")
    if split is not None and split is not False:
        if archive is None:
            raise ConfigError(expected("archive: tar with archive_split", "no archive"),
                              key=f"{prefix}.archive_split")
        split = parse_size(split, f"{prefix}.archive_split")
    else:
        split = None
    name = merged.get("archive_name", "project")
    if isinstance(name, str) and name.lower().endswith(".tar"):
        name = name[:-4]
    problem = paths.component_problem(name)
    if problem:
        raise ConfigError(problem, key=f"{prefix}.archive_name")
    return resize, archive, split, name


def _present(stamps: list[Stamp | None], labels: tuple[Label, ...]) -> list[Stamp]:
    """The stamps that paint, in annotation order, but those of the background label (CVAT and
    COCO inputs), which erase in index masks and have no colour of their own."""
    return [s for s in stamps if s is not None and labels[s.label].class_index >= 0]


@last_by_identity
def _human_colors(classes: ClassTable, opts: SuperviselyOptions) -> dict[int, RGB]:
    """Class index -> human colour; DTL draws only mapped classes, black lifted to (1,1,1).
    Made once per job (read-only)."""
    if opts.human_style == "dtl":
        source = opts.gt_human_color
        if source is None:
            source = {c.name: c.color for c in classes.classes}
        out = {}
        for i, c in enumerate(classes.classes):
            if c.name in source:
                col = source[c.name]
                out[i] = (1, 1, 1) if max(col) == 0 else col
        return out
    over = opts.gt_human_color or {}
    return {i: over.get(c.name, c.color) for i, c in enumerate(classes.classes)}


def _instance_names(ctx: ItemContext, stamps: list[Stamp]) -> list[str]:
    """`<class>.png`, then `<class>_01.png`, ... per image (the SDK's generate_free_name)."""
    used: set[str] = set()
    names = []
    for s in stamps:
        base = paths.component(ctx.classes[ctx.item.labels[s.label].class_index].name)
        name, n = f"{base}.png", 1
        while name in used:
            name, n = f"{base}_{n:02d}.png", n + 1
        used.add(name)
        names.append(name)
    return names


def write_item(ctx: ItemContext, opts: SuperviselyOptions) -> ItemOutput:
    """All per-item files of the supervisely format, from stamps rendered once."""
    item, classes = ctx.item, ctx.classes
    h, w = item.height, item.width
    base = paths.join(NAME, item.dataset)
    png_name = paths.component(item.stem) + ".png"
    out = ItemOutput()
    labels = item.labels
    # class map and class_pixels: the item's composition (order.py), shared with every writer;
    # for Supervisely inputs the app's order (largest SDK area first)
    comp = ctx.composition(thickness=opts.thickness)
    out.class_pixels = dict(comp.class_pixels)
    out.instances = comp.instances
    out.not_painted = dict(comp.not_painted)
    drawn = _present(ctx.stamps(thickness=opts.thickness, templated=False), labels)

    if opts.masks_machine:
        if opts.dtl:
            assert opts.gt_machine_color is not None
            colors = {i: opts.gt_machine_color[c.name] for i, c in enumerate(classes.classes)
                      if c.name in opts.gt_machine_color}
            tmpl = _present(ctx.stamps(thickness=opts.thickness, templated=True), labels)
            mapped = [s for s in tmpl if labels[s.label].class_index in colors]
            canvas = compose.paint_colors(
                np.zeros((h, w, 3), np.uint8), mapped,
                [colors[labels[s.label].class_index] for s in mapped], flat=True)
            out.blobs.append(Blob(paths.join(base, "masks_machine", png_name), encode.png(canvas)))
        else:
            out.blobs.append(Blob(paths.join(base, "masks_machine", png_name),
                                  encode.png(comp.class_map())))

    if opts.masks_semantic_rgb or opts.masks_human:
        tmpl = _present(ctx.stamps(thickness=opts.thickness, templated=True), labels)
        if opts.masks_semantic_rgb:
            canvas = compose.paint_colors(np.zeros((h, w, 3), np.uint8), tmpl,
                                          [classes[labels[s.label].class_index].color
                                           for s in tmpl])
            out.blobs.append(Blob(paths.join(base, "masks_semantic_rgb", png_name),
                                  encode.png(canvas)))
        if opts.masks_human:
            parts = _human(ctx, opts, tmpl)  # the image, then what goes beside it
            if opts.resize_human_masks is not None:
                parts = (resize_percent(np.hstack(parts), opts.resize_human_masks),)
            out.blobs.append(Blob(paths.join(base, "masks_human", png_name),
                                  encode.png_photo(*parts)))

    if opts.masks_instances and drawn:
        frame = np.zeros((h, w), np.uint8)
        for s, name in zip(drawn, _instance_names(ctx, drawn), strict=True):
            compose.instance_frame(s, h, w, frame)
            data = encode.png_bilevel(frame, (s.top, s.top + s.parts.shape[0]))
            compose.clear_instance_frame(frame, s)
            out.blobs.append(Blob(paths.join(base, "masks_instances",
                                             paths.component(item.stem), name), data))

    if opts.images and item.image_key is not None:
        out.blobs.append(Blob(paths.join(base, "img", paths.component(item.name)),
                              ctx.image_bytes()))
    if opts.annotations and ctx.ann_bytes is not None and ctx.ann_format == ANN_FORMAT:
        out.blobs.append(Blob(paths.join(base, "ann", paths.component(item.name) + ".json"),
                              ctx.ann_bytes))
    return out


def _human(ctx: ItemContext, opts: SuperviselyOptions, tmpl: list[Stamp]
           ) -> tuple[np.ndarray, ...]:
    """The human mask's parts, left to right (the encoder places them side by side)."""
    labels, classes = ctx.item.labels, ctx.classes
    image = ctx.image()
    colors = _human_colors(classes, opts)
    chosen = [s for s in tmpl if labels[s.label].class_index in colors]
    chosen_colors = [colors[labels[s.label].class_index] for s in chosen]
    if opts.human_style == "app":
        return image, compose.blend_cumulative(image.copy(), chosen, chosen_colors)
    fg = compose.paint_colors(np.zeros_like(image), chosen, chosen_colors)
    green = np.broadcast_to(GREEN_BGR, (image.shape[0], 1, 3))
    return image, green, compose.blend_flat(image, fg)


def resize_percent(image: np.ndarray, percent: int) -> np.ndarray:
    """The app's resizeHumanMasks: `cv2.resize` to (int(width * percent / 100),
    int(height * percent / 100)) with INTER_AREA (reference A.4 step 5); ItemError if that
    leaves no pixel."""
    h, w = image.shape[:2]
    size = (int(w * percent / 100), int(h * percent / 100))
    if 0 in size:
        raise ItemError(expected(f"a human mask of at least 1x1 pixels at {percent}%",
                                 f"{w}x{h} -> {size[0]}x{size[1]}"))
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def meta_json(classes: ClassTable) -> bytes:
    """A Supervisely meta.json for classes read from another format."""
    out = [{"title": c.name, "shape": c.shape, "color": "#{:02X}{:02X}{:02X}".format(*c.color),
            "geometry_config": c.geometry_config} for c in classes.classes]
    return json.dumps({"classes": out, "tags": [], "projectType": "images"}, indent=2,
                      ensure_ascii=False).encode()


def dataset_files(classes: ClassTable, opts: SuperviselyOptions) -> list[Blob]:
    """Project-level sidecars, written once at finalize."""
    blobs = [Blob(paths.join(NAME, META_FILE), opts.meta_json or meta_json(classes))]
    if opts.masks_machine and not opts.dtl:
        blobs.append(Blob(paths.join(NAME, MACHINE_COLOR_FILE),
                          json.dumps(machine_colors(classes), indent=2).encode()))
    if opts.masks_semantic_rgb:
        sem = {c.name: list(c.color) for c in classes.classes}
        blobs.append(Blob(paths.join(NAME, SEMANTIC_COLOR_FILE),
                          json.dumps(sem, indent=2).encode()))
    return blobs


def archive_key(opts: SuperviselyOptions, piece: int | None = None) -> str:
    """`supervisely/<name>.tar`, or its piece `<name>.tar.001`, `.002`, ... (the SDK's names:
    3 digits, more past 999)."""
    key = paths.join(NAME, opts.archive_name + ".tar")
    return key if piece is None else f"{key}.{piece:03d}"


MAX_PIECES = 999  # pieces reserved at plan time (jobs/clashes.py); more are still written
BATCH_BYTES = 32 << 20  # bytes of outputs read per concurrent call while archiving
BATCH_KEYS = 256
_SHALLOW_DIRS = 100_000  # folders remembered across items (datasets and their sub-folders)


class ArchiveFinalizer:
    """`archive: tar`: the project tree as the app's tar, streamed from the outputs at
    finalize with bounded memory (nothing staged on local disk).

    Members, as the export-as-masks app's tar (reference A.2, A.8): no wrapping folder;
    `meta.json` and the colour maps first, then every exported item's outputs in manifest
    order (`<ds>/img/`, `<ds>/ann/`, `<ds>/masks_*/`, nested `<ds>/datasets/<child>/`), each
    folder as a directory member before its first file. The outputs are read back
    `BATCH_BYTES` at a time (one concurrent call) and appended to a `TarStream` whose
    `PieceSink` streams into `io.open_output` (one multipart upload per piece). Split: pieces
    `<name>.tar.001`, ... of `archive_split` bytes, or `<name>.tar` alone when the tar fits in
    one (the SDK's rule); pieces or a tar left by an earlier run under the other names are
    deleted. What was written is recorded in manifest.json (`format_details.supervisely`).
    An output that has gone missing is reported and left out."""

    def __init__(self, classes: ClassTable, opts: SuperviselyOptions, io: FinalizeIO, *,
                 mtime: int | None = None) -> None:
        self.opts, self.io = opts, io
        split = opts.archive_split
        self.sink = PieceSink(lambda n: io.open_output(archive_key(opts, n if split else None),
                                                       archive=True), split=split)
        self.tar = TarStream(self.sink, mtime=int(time.time()) if mtime is None else mtime)
        self.dirs: set[str] = set()  # folders of datasets and their sub-folders
        self.item_dirs: list[str] = []  # folders inside those, of the last item(s)
        self.pending: list[tuple[str, int]] = []
        self.pending_bytes = 0
        self.missing = 0
        for b in dataset_files(classes, opts):
            self.tar.add_file(b.key[len(NAME) + 1:], b.data)

    def take(self, entry: FinalEntry) -> None:
        if not entry.exported:
            return
        prefix = NAME + "/"
        for o in entry.outputs:
            if o.key.startswith(prefix):
                self.pending.append((o.key, entry.dataset.count("/") + 2))
                self.pending_bytes += o.size
        if self.pending_bytes >= BATCH_BYTES or len(self.pending) >= BATCH_KEYS:
            self._flush()

    def _add_dirs(self, rel: str, shallow: int) -> None:
        """Directory members for the folders of `rel` not added yet: folders up to `shallow`
        components deep (the dataset and its img/, masks_*/ ...) are remembered for the whole
        archive, deeper ones (masks_instances/<stem>/) for the last few items."""
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            seen = folder in self.dirs if depth <= shallow else folder in self.item_dirs
            if seen:
                continue
            self.tar.add_dir(folder)
            if depth > shallow:
                self.item_dirs = [*self.item_dirs[-7:], folder]
            elif len(self.dirs) < _SHALLOW_DIRS:
                self.dirs.add(folder)

    def _flush(self) -> None:
        if not self.pending:
            return
        got = self.io.read_many([k for k, _ in self.pending], True)
        for key, shallow in self.pending:
            data = got.pop(key, None)
            if data is None:
                self.missing += 1
                self.io.problem(f"supervisely: {key} is missing; left out of "
                                f"{archive_key(self.opts)}")
                continue
            rel = key[len(NAME) + 1:]
            self._add_dirs(rel, shallow)
            self.tar.add_file(rel, data)
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        try:
            self._flush()
        except BaseException as e:
            self.abort(e)
            raise
        pieces = self.tar.close()
        opts, io = self.opts, self.io
        keys = [archive_key(opts, n if opts.archive_split else None)
                for n in range(1, len(pieces) + 1)]
        whole = archive_key(opts)
        if opts.archive_split and len(pieces) == 1:  # fits in one piece: <name>.tar (the SDK)
            io.move(keys[0], whole)
            keys = [whole]
        # what an earlier run left under the other names: the whole tar, or pieces (always
        # numbered from .001 without a gap) past the ones just written
        stale = [whole] if keys[0] != whole and io.exists(whole) else []
        n = len(pieces) + 1 if opts.archive_split else 1
        while io.exists(archive_key(opts, n)):
            stale.append(archive_key(opts, n))
            n += 1
        if stale:
            io.delete(stale)
        io.record({
            "settings": settings_record(opts),
            "archive": {"format": "tar", "members": self.tar.members,
                        "bytes": sum(size for size, _ in pieces), "missing": self.missing,
                        "pieces": [{"key": k, "size": size, "checksum": checksum}
                                   for k, (size, checksum) in zip(keys, pieces, strict=True)]},
        })

    def abort(self, exc: BaseException) -> None:
        """The pass failed: discard the piece being uploaded (a rerun writes them all)."""
        self.tar.abort(exc)


class RecordSettings:
    """No archive: only the packaging settings go to manifest.json."""

    def __init__(self, opts: SuperviselyOptions, io: FinalizeIO) -> None:
        self.opts, self.io = opts, io

    def take(self, entry: FinalEntry) -> None:
        """Nothing to do per item."""

    def close(self) -> None:
        self.io.record({"settings": settings_record(self.opts)})

    def abort(self, exc: BaseException) -> None:
        """Nothing to discard: the settings are recorded only by a pass that ends."""


def settings_record(opts: SuperviselyOptions) -> dict[str, Any]:
    """The packaging settings as manifest.json records them (`format_details.supervisely`)."""
    return {"archive": opts.archive, "archive_split": opts.archive_split,
            "archive_name": opts.archive_name if opts.archive else None,
            "resize_human_masks": opts.resize_human_masks}


PART_RECORDS = False  # no per-item records (base.Writer)
# a DTL save_masks layer's defaults (the export-as-masks app's - a YAML job's - are the Options')
SOURCE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "dtl": {"human_style": "dtl", "masks_semantic_rgb": False, "masks_instances": False}}
record_key = no_record_key


def finalizer(classes: ClassTable, opts: SuperviselyOptions, io: FinalizeIO
              ) -> ArchiveFinalizer | RecordSettings:
    """With `archive`, the tar streamed from the outputs; else only the settings recorded (a
    project is its files plus `dataset_files`)."""
    if opts.archive:
        return ArchiveFinalizer(classes, opts, io)
    return RecordSettings(opts, io)


def preview_mask(keys: Sequence[str], read: Callable[[str], bytes]) -> PreviewMask | None:
    """The machine mask (class indices, or DTL machine colours)."""
    for key in keys:
        if key.startswith(NAME + "/") and "/masks_machine/" in key:
            m = decode_png(read(key))
            if m is not None:
                return ("index", m) if m.ndim == 2 else ("bgr", m[:, :, :3])
    return None


# ---------------------------------------------------------------------------- plan (clashes)
_MASK_FOLDERS = (("masks_machine", "masks_machine"), ("masks_human", "masks_human"),
                 ("masks_semantic_rgb", "masks_semantic_rgb"))


def planned_keys(dataset: str, name: str, opts: SuperviselyOptions) -> paths.Planned:
    """The keys `write_item` may write for (dataset, name), known without rendering
    (jobs/clashes.py): the masks by stem, the item's own `masks_instances/<stem>/` folder (its
    files are named by class, known only after parsing), and the image and annotation copies
    (declared even for inputs that have none to copy)."""
    # prefix + component: a component has no '/', '\\' or NUL and is never '', '.' or '..'
    masks, img, ann, instances = _folders(dataset, opts)
    stem = paths.component(name_stem(name))
    files = [folder + stem + ".png" for folder in masks]
    if img:
        files.append(img + paths.component(name))
    if ann:
        files.append(ann + paths.component(name) + ".json")
    return paths.Planned(tuple(files), (instances + stem,) if instances else ())


def key_template(dataset: str, opts: SuperviselyOptions) -> KeyTemplate:
    """`planned_keys` of the plain names of `dataset` (see `base.KeyTemplate`)."""
    return template_of(planned_keys, dataset, opts)


def _folders(dataset: str, opts: SuperviselyOptions) -> tuple[tuple[str, ...], str, str, str]:
    """The folders `planned_keys` declares keys in, each as a prefix ending in '/' ('' when
    not written): the requested mask folders, img, ann, masks_instances."""
    wanted = tuple(bool(getattr(opts, option)) for _, option in _MASK_FOLDERS)
    return _folders_of(dataset, wanted, opts.images, opts.annotations, opts.masks_instances)


@lru_cache(maxsize=1024)
def _folders_of(dataset: str, masks: tuple[bool, ...], images: bool, annotations: bool,
                instances: bool) -> tuple[tuple[str, ...], str, str, str]:
    """`_folders`, cached on what decides it (the options hold dicts: not hashable)."""
    def under(folder: str, wanted: bool) -> str:
        return paths.folder(NAME, dataset, folder) if wanted else ""
    return (tuple(under(folder, True) for (folder, _), w in zip(_MASK_FOLDERS, masks, strict=True)
                  if w),
            under("img", images), under("ann", annotations),
            under("masks_instances", instances))


def reserved_keys(opts: SuperviselyOptions) -> paths.Planned:
    """The project-level sidecars `dataset_files` writes at finalize (their keys do not depend
    on the classes), and the archive with its first MAX_PIECES piece names."""
    files = tuple(b.key for b in dataset_files(ClassTable(()), opts))
    if opts.archive:
        files += (archive_key(opts),)
    if opts.archive_split:
        files += tuple(archive_key(opts, n) for n in range(1, MAX_PIECES + 1))
    return paths.Planned(files)
