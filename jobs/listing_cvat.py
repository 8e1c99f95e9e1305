"""Listing of CVAT inputs (driver side, keys only): CVAT for images 1.1 tasks and Segmentation
Mask 1.1 archives, as folders, zips (`jobs/storage.py` opens `.zip` URLs as archives) or any
fsspec URL. One input format name, `cvat`, for both; the layout tells them apart.

- Task: `annotations.xml` (+ `images/`). The XML is streamed once; each `<image>` element's
  bytes go into `ItemRef.ann_inline`, so workers never re-read the whole XML. Items keep the
  XML's order (CVAT's frame order); dataset = the image's `subset` attribute or "default"; the
  image file is `images/<subset>/<name>` (project exports) or `images/<name>`.
- Segmentation Mask: `labelmap.txt` (optional: datumaro's VOC default), subset lists
  `ImageSets/Segmentation/<subset>.txt` (without lists: every SegmentationClass PNG, subset
  "default"), `SegmentationClass/<id>.png`, `SegmentationObject/<id>.png`, images (optional)
  `JPEGImages/<id>.<ext>`. The class PNG is the item's `ann_key`, the object PNG its
  `ann_more`. An id listed without any mask PNG is an image without annotations: its size is
  read from its image's header here (it becomes an empty `<image>` element), or it fails.

Safety: names that could escape the input (absolute, `..`, backslashes) make their item fail
and are never read; an annotations.xml or archive member declaring an absurd size is refused.
"""

from __future__ import annotations

import hashlib
import posixpath
from xml.sax.saxutils import quoteattr

from maskcore.encode import _jpeg_size
from maskcore.errors import InputError, ItemError, expected
from maskcore.formats import cvat
from maskcore.limits import PNG_SIGNATURE
from maskcore.model import ClassTable
from maskcore.paths import check_relative

from . import listing
from .storage import Root

MAX_XML_BYTES = 16 * 1024 ** 3  # an annotations.xml larger than this is refused as absurd
MAX_LABELMAP_BYTES = 16 * 1024 ** 2
HEADER_BYTES = 1 << 16


def detect(root: Root) -> bool:
    return any(root.exists(k) for k in (cvat.ANNOTATIONS_FILE, cvat.LABELMAP_FILE,
                                        cvat.SEGM_LIST_DIR))


def list_cvat(root: Root) -> listing.Listing:
    if root.exists(cvat.ANNOTATIONS_FILE):
        return list_task(root)
    return list_masks(root)


def _safe(key: str) -> bool:
    try:
        check_relative(key)
    except ItemError:
        return False
    return True


def _tags(root: Root, prefix: str) -> dict[str, str]:
    return {k: t for k, t in root.list_tags(prefix) if _safe(k)}


# ---------------------------------------------------------------------------- tasks
def list_task(root: Root) -> listing.Listing:
    size = root.size(cvat.ANNOTATIONS_FILE)
    if size is not None and size > MAX_XML_BYTES:
        raise InputError(f"{cvat.ANNOTATIONS_FILE}: " + expected(
            f"at most {MAX_XML_BYTES} bytes", f"{size} bytes"))
    images = _tags(root, cvat.IMAGES_DIR)
    refs: list[listing.ItemRef] = []
    seen: set[tuple[str, str]] = set()
    classes: ClassTable | None = None
    with root.fs.open(root.full(cvat.ANNOTATIONS_FILE), "rb") as stream:
        for got in cvat.iter_task(stream):
            if isinstance(got, ClassTable):
                classes = got
                continue
            attrs, element = got
            refs.append(_task_ref(attrs, element, images, seen))
    assert classes is not None
    return listing.Listing(cvat.NAME, classes, refs)


def _task_ref(attrs: dict[str, str], element: bytes, images: dict[str, str],
              seen: set[tuple[str, str]]) -> listing.ItemRef:
    name = attrs.get("name", "")
    subset = attrs.get("subset") or cvat.DEFAULT_SUBSET
    tag = "md5:" + hashlib.md5(element, usedforsecurity=False).hexdigest()
    problem = None
    image_key = None
    if not name or not _safe(name):
        problem = expected("an image name inside the task (relative, no '..')", name)
    elif (subset, name) in seen:
        problem = expected("one <image> per name", f"{name!r} again in subset {subset!r}")
    else:
        for key in (f"{cvat.IMAGES_DIR}/{subset}/{name}", f"{cvat.IMAGES_DIR}/{name}"):
            if key in images:
                image_key = key
                break
    seen.add((subset, name))
    return listing.ItemRef(subset, name, cvat.ANNOTATIONS_FILE, image_key, problem, element,
                   ann_tag=tag, image_tag=images.get(image_key or ""))


# ---------------------------------------------------------------------------- mask archives
def list_masks(root: Root) -> listing.Listing:
    size = root.size(cvat.LABELMAP_FILE)
    if size is not None and size > MAX_LABELMAP_BYTES:
        raise InputError(f"{cvat.LABELMAP_FILE}: " + expected(
            f"at most {MAX_LABELMAP_BYTES} bytes", f"{size} bytes"))
    labelmap = root.read(cvat.LABELMAP_FILE) if size is not None else None
    classes = cvat.parse_labelmap_classes(labelmap)
    class_pngs = _tags(root, cvat.CLASS_DIR)
    object_pngs = _tags(root, cvat.OBJECT_DIR)
    images = _tags(root, cvat.VOC_IMAGES_DIR)
    image_of = {cvat.item_id(k[len(cvat.VOC_IMAGES_DIR) + 1:]): k for k in images}
    ids = _subset_ids(root, class_pngs)
    refs: list[listing.ItemRef] = []
    for subset, id_ in ids:
        refs.append(_mask_ref(root, subset, id_, class_pngs, object_pngs, images, image_of))
    return listing.Listing(cvat.NAME, classes, refs)


def _subset_ids(root: Root, class_pngs: dict[str, str]) -> list[tuple[str, str]]:
    lists = [k for k in root.list_files(cvat.SEGM_LIST_DIR)
             if posixpath.dirname(k) == cvat.SEGM_LIST_DIR and k.endswith(".txt")]
    if not lists:  # no subset lists: every class PNG, in one subset
        start = len(cvat.CLASS_DIR) + 1
        return [(cvat.DEFAULT_SUBSET, k[start:-len(cvat.MASK_EXT)]) for k in sorted(class_pngs)
                if k.endswith(cvat.MASK_EXT)]
    out: list[tuple[str, str]] = []
    for key in sorted(lists):
        subset = posixpath.basename(key)[:-len(".txt")]
        problem = cvat.subset_problem(subset)
        if problem:
            raise InputError(f"{key}: {problem}")
        size = root.size(key) or 0
        if size > MAX_XML_BYTES:
            raise InputError(f"{key}: " + expected(f"at most {MAX_XML_BYTES} bytes", size))
        try:
            text = root.read(key).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{key}: " + expected("UTF-8 text", "undecodable bytes")) from None
        for line in text.splitlines():
            line = line.strip()
            if line and line[0] != "#":
                out.append((subset, line))
    return out


def _mask_ref(root: Root, subset: str, id_: str, class_pngs: dict[str, str],
              object_pngs: dict[str, str], images: dict[str, str], image_of: dict[str, str]
              ) -> listing.ItemRef:
    class_key = f"{cvat.CLASS_DIR}/{id_}{cvat.MASK_EXT}"
    object_key = f"{cvat.OBJECT_DIR}/{id_}{cvat.MASK_EXT}"
    image_key = image_of.get(id_)
    name = image_key[len(cvat.VOC_IMAGES_DIR) + 1:] if image_key else id_ + cvat.MASK_EXT
    if not _safe(class_key):
        return listing.ItemRef(subset, name, None, None,
                       expected("an item id inside the archive (relative, no '..')", id_))
    image_tag = images.get(image_key or "")
    if class_key in class_pngs:
        more = (object_key,) if object_key in object_pngs else ()
        tag = "|".join([class_pngs[class_key], *(object_pngs[k] for k in more)])
        return listing.ItemRef(subset, name, class_key, image_key, ann_tag=tag, image_tag=image_tag,
                       ann_more=more)
    if object_key in object_pngs:
        return listing.ItemRef(subset, name, None, image_key, expected(
            f"{class_key} beside {object_key} (instances need their classes)", "none"))
    size = _image_size(root, image_key) if image_key else None
    if size is None:
        return listing.ItemRef(subset, name, None, image_key, expected(
            f"{class_key} or an image in {cvat.VOC_IMAGES_DIR}/ to know the size of this "
            "item without annotations", "neither"))
    element = (f"<image name={quoteattr(name)} width=\"{size[0]}\" height=\"{size[1]}\" />"
               ).encode()
    return listing.ItemRef(subset, name, None, image_key, None, element, ann_tag="empty",
                   image_tag=image_tag)


def _image_size(root: Root, key: str) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, reading only the file's first bytes."""
    try:
        head = root.fs.cat_file(root.full(key), start=0, end=HEADER_BYTES)
    except (OSError, ValueError):
        return None
    if head.startswith(PNG_SIGNATURE) and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] == b"\xff\xd8":
        size = _jpeg_size(head)
        if size is None:
            size = _jpeg_size(root.read(key))
        return size
    return None
