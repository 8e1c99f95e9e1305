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

Deliberate differences from upstream, documented in the README: cuboids are filled as their own
five faces everywhere (the app reuses another cuboid's faces, A.10.1); alpha masks count as
full coverage in index and instance masks (the SDK blends class *indices*, producing wrong
ids); in DTL machine masks graphs are drawn edges + nodes in the machine colour (the SDK leaks
the template's colours into machine masks).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .. import compose, encode, paths
from ..errors import ConfigError, expected
from ..model import RGB, ClassTable, Label, name_stem
from ..palette import machine_colors, rgb
from ..rasterize import Stamp
from .base import (
    Blob,
    FinalizeIO,
    ItemContext,
    ItemOutput,
    NoFinalize,
    PreviewMask,
    check_thickness,
    decode_png,
)
from .supervisely import MACHINE_COLOR_FILE, META_FILE, SEMANTIC_COLOR_FILE

NAME = "supervisely"
HUMAN_STYLES = ("app", "dtl")
GREEN_BGR = np.array((0, 255, 0), np.uint8)


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
    meta_json: bytes = field(default=b"", compare=False, repr=False)

    @property
    def dtl(self) -> bool:
        return self.gt_machine_color is not None

    def needs_image(self) -> bool:
        """Whether an item's image bytes are needed (read ahead by the task)."""
        return self.masks_human or self.images

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
        )
        if not (opts.masks_machine or opts.masks_human or opts.masks_semantic_rgb
                or opts.masks_instances or opts.images or opts.annotations):
            raise ConfigError("Expected at least one output enabled. Got all disabled instead.",
                              key=prefix)
        return opts

    def check_classes(self, classes: ClassTable, prefix: str) -> None:
        """Colour maps may only name classes of the input (checked before any work)."""
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


def _present(stamps: list[Stamp | None], labels: tuple[Label, ...]) -> list[Stamp]:
    """The stamps that paint, in annotation order, but those of the background label (CVAT and
    COCO inputs), which erase in index masks and have no colour of their own."""
    return [s for s in stamps if s is not None and labels[s.label].class_index >= 0]


def _human_colors(classes: ClassTable, opts: SuperviselyOptions) -> dict[int, RGB]:
    """Class index -> human colour; DTL draws only mapped classes, black lifted to (1,1,1)."""
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
            out.blobs.append(Blob(paths.join(base, "masks_human", png_name),
                                  encode.png_photo(_human(ctx, opts, tmpl))))

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
    if opts.annotations and ctx.ann_bytes is not None:
        out.blobs.append(Blob(paths.join(base, "ann", paths.component(item.name) + ".json"),
                              ctx.ann_bytes))
    return out


def _human(ctx: ItemContext, opts: SuperviselyOptions, tmpl: list[Stamp]) -> np.ndarray:
    labels, classes = ctx.item.labels, ctx.classes
    image = ctx.image()
    colors = _human_colors(classes, opts)
    chosen = [s for s in tmpl if labels[s.label].class_index in colors]
    chosen_colors = [colors[labels[s.label].class_index] for s in chosen]
    if opts.human_style == "app":
        overlay = compose.blend_cumulative(image.copy(), chosen, chosen_colors)
        return np.hstack([image, overlay])
    fg = compose.paint_colors(np.zeros_like(image), chosen, chosen_colors)
    green = np.broadcast_to(GREEN_BGR, (image.shape[0], 1, 3))
    return np.hstack([image, green, compose.blend_flat(image, fg)])


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


def finalizer(classes: ClassTable, opts: SuperviselyOptions, io: FinalizeIO) -> NoFinalize:
    """Nothing is assembled from the items: a project is its files plus `dataset_files`."""
    return NoFinalize()


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


@lru_cache(maxsize=1024)
def _folders(dataset: str, opts: SuperviselyOptions) -> tuple[tuple[str, ...], str, str, str]:
    """The folders `planned_keys` declares keys in, each as a prefix ending in '/' ('' when
    not written): the requested mask folders, img, ann, masks_instances."""
    def under(folder: str, wanted: bool) -> str:
        return paths.folder(NAME, dataset, folder) if wanted else ""
    return (tuple(under(folder, True) for folder, option in _MASK_FOLDERS
                  if getattr(opts, option)),
            under("img", opts.images), under("ann", opts.annotations),
            under("masks_instances", opts.masks_instances))


def reserved_keys(opts: SuperviselyOptions) -> paths.Planned:
    """The project-level sidecars `dataset_files` writes at finalize (their keys do not depend
    on the classes)."""
    return paths.Planned(tuple(b.key for b in dataset_files(ClassTable(()), opts)))
