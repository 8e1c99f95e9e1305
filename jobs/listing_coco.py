"""List a COCO instances input: find the JSON, split it per image, find the images folder.

INPUT is the JSON itself, or a folder holding it (at its top, else under `annotations/`); a
folder holding several JSONs must have exactly one `instances_*.json`, or INPUT must name the
file. The JSON is read once, on the driver, and split into one small JSON per image
(`ItemRef.ann_inline`), so workers never receive the whole file.

Images: `file_name` (sub-folders allowed, never `..` or absolute: such an image fails alone) is
resolved under the images root, the first of `images/` beside the JSON, `images/` beside its
folder, `images/<dataset>/` in either place (datumaro's layout) that holds the first image;
`images_url` from the job config replaces the search. The images root is listed once for the
tags incremental runs compare; images are read only when an output needs pixels.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from typing import TYPE_CHECKING

from maskcore.errors import InputError
from maskcore.formats import coco

from .storage import Root

if TYPE_CHECKING:
    from .listing import Listing

log = logging.getLogger("maskjob")

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"


def _json_files(root: Root) -> list[str]:
    """Paths of the JSON files that may be the COCO file: INPUT itself, the folder's top
    level, else its annotations/ folder (hidden files left out)."""
    fs, path = root.fs_path
    if path.lower().endswith(".json"):
        return [path] if fs.isfile(path) else []
    for folder in (path, posixpath.join(path, ANNOTATIONS_DIR)):
        try:
            found = sorted(p for p in fs.ls(folder, detail=False)
                           if p.lower().endswith(".json") and not
                           posixpath.basename(p).startswith(".") and fs.isfile(p))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if found:
            return found
    return []


def detect_coco(root: Root) -> bool:
    return bool(_json_files(root))


def _choose(root: Root, files: list[str]) -> str:
    if len(files) == 1:
        return files[0]
    instances = [f for f in files if posixpath.basename(f).startswith(coco.INSTANCES_PREFIX)]
    if len(instances) == 1:
        return instances[0]
    names = [posixpath.basename(f) for f in (instances or files)]
    raise InputError(f"Expected one COCO instances JSON in {root.url}. Got {len(names)} "
                     f"instead ({names[:10]}); give the JSON file itself as INPUT.")


def _images_root(root: Root, json_path: str, dataset: str, first: str | None) -> Root:
    """The first candidate images folder that holds `first` (else one that exists)."""
    fs, _ = root.fs_path
    here = posixpath.dirname(json_path)
    parent = posixpath.dirname(here) or here
    candidates = list(dict.fromkeys([
        posixpath.join(here, IMAGES_DIR), posixpath.join(parent, IMAGES_DIR),
        posixpath.join(here, IMAGES_DIR, dataset), posixpath.join(parent, IMAGES_DIR, dataset),
    ]))
    chosen = None
    if first is not None:
        chosen = next((c for c in candidates if fs.isfile(posixpath.join(c, first))), None)
    if chosen is None:
        chosen = next((c for c in candidates if fs.isdir(c)), candidates[0])
    return Root(fs.unstrip_protocol(chosen), dict(root.storage_options))


def list_coco(root: Root, images_url: str | None = None) -> Listing:
    from .listing import ItemRef, Listing

    files = _json_files(root)
    if not files:
        raise InputError(f"Expected a COCO instances JSON at {root.url} (the file, or a folder "
                         "holding it, also under annotations/). Got none instead.")
    json_path = _choose(root, files)
    fs, base = root.fs_path
    ann_key = posixpath.relpath(json_path, base) if json_path != base else \
        posixpath.basename(json_path)
    split = coco.split_dataset(fs.cat_file(json_path), where=ann_key)
    if split.orphans:
        log.warning("%s: %d annotations name no image of the file; they are not exported",
                    ann_key, split.orphans)
    dataset = coco.dataset_name(json_path)
    first = next((im.name for im in split.images if im.problem is None), None)
    images = Root(images_url, dict(root.storage_options)) if images_url else \
        _images_root(root, json_path, dataset, first)
    tags = dict(images.list_tags())
    refs = []
    for im in split.images:
        ok = im.problem is None
        refs.append(ItemRef(
            dataset, im.name, ann_key, im.name if ok else None, im.problem,
            ann_inline=im.inline,
            ann_tag=hashlib.md5(im.inline, usedforsecurity=False).hexdigest() if im.inline
            else None,
            image_tag=tags.get(im.name) if ok else None,
        ))
    refs.sort(key=lambda r: (r.dataset, r.name))
    return Listing(coco.NAME, split.classes, refs, image_root=images)
