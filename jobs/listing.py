"""Find the items of an input dataset: format detection and the Supervisely project listing.

Runs on the driver and keeps keys only (never pixels): an `ItemRef` is (dataset, name,
ann_key, image_key). Items are returned sorted by (dataset, name), so partitions are
deterministic and a rerun plans the same partitions.

A Supervisely project has `meta.json` at its root (folder, `.tar`, or any fsspec URL);
datasets are top-level folders and `<dataset>/datasets/<child>` (SDK layout, reference B.1).
An image without an annotation, or an annotation without an image, is still an item: it fails
alone with that reason (the SDK would silently skip the whole dataset).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from maskcore.errors import InputError
from maskcore.formats import supervisely as sly
from maskcore.formats.base import pack_parts
from maskcore.model import ClassTable
from maskcore.paths import check_relative

from . import listing_cvat
from .listing_coco import detect_coco, list_coco
from .storage import Root


@dataclass(frozen=True, slots=True)
class ItemRef:
    dataset: str
    name: str
    ann_key: str | None
    image_key: str | None
    problem: str | None = None  # a reason the item cannot be exported, known from listing
    ann_inline: bytes | None = None  # the item's annotation, for formats with one big file
    ann_tag: str | None = None  # size + ETag/mtime of the annotation object (incremental runs)
    image_tag: str | None = None
    previous: str | None = None  # the item's line of the previous manifest (incremental runs)
    ann_more: tuple[str, ...] = ()  # further annotation objects, read after ann_key


@dataclass(frozen=True)
class Listing:
    """What the driver knows of an input: format, class list, items (keys only)."""

    reader: str
    classes: ClassTable
    refs: list[ItemRef]
    meta_json: bytes = b""  # the Supervisely meta.json as it stands, when the input has one
    image_root: Root | None = None  # where image keys resolve, when not in the input (COCO)


def detect_format(root: Root) -> str:
    for name, probe in DETECTORS:
        if probe(root):
            return name
    raise InputError(
        f"Expected a dataset at {root.url}: a Supervisely project (meta.json at the root). "
        "Got no such file instead; name the format with --input-format if it is another."
    )


def list_supervisely(root: Root) -> Listing:
    try:
        meta = root.read(sly.META_FILE)
    except FileNotFoundError:
        raise InputError(f"Expected {sly.META_FILE} at the root of {root.url}. Got none.") from None
    return Listing(sly.NAME, sly.parse_meta(meta), list_supervisely_items(root), meta)


def list_supervisely_items(root: Root) -> list[ItemRef]:
    images: dict[tuple[str, str], str] = {}
    anns: dict[tuple[str, str], str] = {}
    tags: dict[str, str] = {}
    for key, tag in root.list_tags():
        parent, fname = posixpath.split(key)
        ds, kind = posixpath.split(parent)
        if not ds or kind not in (sly.IMG_DIR, sly.ANN_DIR):
            continue
        if not next(iter(sly.dataset_dirs([ds])), None):
            continue
        try:
            check_relative(key)
        except Exception:
            continue  # a key that could escape (tar members): never read, never written
        tags[key] = tag
        if kind == sly.IMG_DIR:
            images[(ds, fname)] = key
        elif fname.endswith(".json"):
            anns[(ds, fname)] = key
    refs: list[ItemRef] = []
    used_anns: set[tuple[str, str]] = set()
    for (ds, name), img_key in images.items():
        ann_key = None
        for candidate in sly.ann_names_for(name):
            if (ds, candidate) in anns and (ds, candidate) not in used_anns:
                ann_key = anns[(ds, candidate)]
                used_anns.add((ds, candidate))
                break
        refs.append(ItemRef(ds, name, ann_key, img_key,
                            None if ann_key else "no annotation file in ann/ for this image",
                            ann_tag=tags.get(ann_key or ""), image_tag=tags[img_key]))
    for (ds, fname), ann_key in anns.items():
        if (ds, fname) not in used_anns:
            name = fname[: -len(".json")]
            refs.append(ItemRef(ds, name, ann_key, None, ann_tag=tags[ann_key]))
    refs.sort(key=lambda r: (r.dataset, r.name))
    return refs


# Detection order matters: the first probe that answers True names the input format.
DETECTORS = [
    ("supervisely", lambda root: root.exists(sly.META_FILE)),
    ("cvat", listing_cvat.detect),
    ("coco", detect_coco),  # last: any JSON file or folder of JSONs
]
LISTERS = {
    "supervisely": list_supervisely,
    "cvat": listing_cvat.list_cvat,
    "coco": list_coco,
}
TAKES_IMAGES_URL = ("coco",)  # listers whose images may live elsewhere (config images_url)


def read_annotation(root: Root, ref: ItemRef) -> bytes:
    """An item's annotation bytes: inline, its object, or with `ann_more` all its objects
    packed (`pack_parts`: a Segmentation Mask item is a class PNG and an object PNG)."""
    if ref.ann_inline is not None:
        return ref.ann_inline
    data = root.read(ref.ann_key or "")
    if ref.ann_more:
        data = pack_parts([data, *(root.read(k) for k in ref.ann_more)])
    return data


def list_input(root: Root, input_format: str = "auto", images_url: str | None = None
               ) -> Listing:
    fmt = detect_format(root) if input_format == "auto" else input_format
    if fmt not in LISTERS:
        raise InputError(f"Expected an input format in {sorted(LISTERS)}. Got {fmt!r} instead.")
    if images_url is None:
        return LISTERS[fmt](root)
    if fmt not in TAKES_IMAGES_URL:
        raise InputError(f"Expected images_url only for {list(TAKES_IMAGES_URL)} inputs. Got "
                         f"it for a {fmt} input instead.")
    return LISTERS[fmt](root, images_url=images_url)
