"""The spooled Segmentation Mask 1.1 listing (`jobs.listing_cvat.list_masks`): its refs equal,
field for field and in order, those of the in-memory listing it replaced (kept below as the
reference) on hostile layouts, and its Python memory does not grow with the item count."""

from __future__ import annotations

import os
import posixpath
import tracemalloc
import zipfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np
import pytest

from jobs import listing, listing_cvat
from jobs.listing_cvat import _image_size, list_masks
from jobs.storage import Root
from maskcore.errors import InputError, ItemError, expected
from maskcore.formats import cvat

_safe = listing.safe_key


# ---------------------------------------------------------------------------- the reference
# The listing as it was (every key set in dicts, each list read whole), copied unchanged but
# for names: what the spooled listing must reproduce.
def old_list_masks(root: Root) -> list[listing.ItemRef]:
    class_pngs = _old_tags(root, cvat.CLASS_DIR)
    object_pngs = _old_tags(root, cvat.OBJECT_DIR)
    images = _old_tags(root, cvat.VOC_IMAGES_DIR)
    image_of = {cvat.item_id(k[len(cvat.VOC_IMAGES_DIR) + 1:]): k for k in images}
    ids = _old_subset_ids(root, class_pngs)
    refs = [_old_mask_ref(root, subset, id_, class_pngs, object_pngs, images, image_of)
            for subset, id_ in ids]
    return sorted(refs, key=listing.ref_key)


def _old_tags(root: Root, prefix: str) -> dict[str, str]:
    return {k: t for k, t in root.list_tags(prefix)
            if _safe(k) and (k.isascii() or listing.is_utf8(k))}


def _old_subset_ids(root: Root, class_pngs: dict[str, str]) -> list[tuple[str, str]]:
    lists = [k for k in root.list_files(cvat.SEGM_LIST_DIR)
             if posixpath.dirname(k) == cvat.SEGM_LIST_DIR and k.endswith(".txt")]
    if not lists:
        start = len(cvat.CLASS_DIR) + 1
        return [(cvat.DEFAULT_SUBSET, k[start:-len(cvat.MASK_EXT)]) for k in sorted(class_pngs)
                if k.endswith(cvat.MASK_EXT)]
    out: list[tuple[str, str]] = []
    for key in sorted(lists):
        subset = posixpath.basename(key)[:-len(".txt")]
        problem = cvat.subset_problem(subset)
        if problem:
            raise InputError(f"{key}: {problem}")
        try:
            text = root.read(key).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{key}: " + expected("UTF-8 text", "undecodable bytes")) from None
        for line in cvat.text_lines(text):
            line = line.strip()
            if line and line[0] != "#":
                out.append((subset, line))
    return out


def _old_mask_ref(root, subset, id_, class_pngs, object_pngs, images, image_of):
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
        return listing.ItemRef(subset, name, class_key, image_key, ann_tag=tag,
                               image_tag=image_tag, ann_more=more)
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


# ---------------------------------------------------------------------------- layouts
PNG = cv2.imencode(".png", np.zeros((6, 8, 3), np.uint8))[1].tobytes()
JPEG = cv2.imencode(".jpg", np.zeros((5, 7, 3), np.uint8))[1].tobytes()


def put(root: Path, key: str | bytes, data: bytes = PNG) -> None:
    path = os.path.join(os.fsencode(root), os.fsencode(key))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


CLASS_IDS = ["a", "b", "dup", "sp ace", "üñí", "sub/x", "x.y", "d/", "d/.png", "a.b",
             "a-b", "objboth"]
LISTS = {
    "train": (b"# a comment\r\na\r\n  b  \r\n\r\ndup\rdup\n sp ace\n\xc3\xbc\xc3\xb1\xc3\xad\n"
              b"../etc/passwd\n/abs\na\\b\na\x0cb\nghost\nnoann\nnoann2\nbadimg\nobjonly\n"
              b"sub/x\nx.y\nd/\nd/.png\na.b\na-b\n#dup\n\t# spaced comment\nlast-no-newline"),
    "val": b"a\ndup\nnoann\n\xef\xbb\xbfbom\nobjboth\n\xc2\x85nel\xe2\x80\xa8ls\n",
    "test": b"",
}


def hostile(root: Path, *, lists: bool = True) -> Path:
    """Missing PNGs and images, duplicate ids within and across subsets, ids with '..',
    spaces, unicode, '\\x0c', comments, CRLF/CR lines, several images for one id, names
    that are not UTF-8."""
    put(root, "labelmap.txt", b"background:0,0,0::\ncar:255,0,0::\n")
    for id_ in CLASS_IDS:
        put(root, f"SegmentationClass/{id_}.png")
    for id_ in ("a", "objonly", "objboth", "sp ace"):
        put(root, f"SegmentationObject/{id_}.png")
    put(root, b"SegmentationClass/\xff.png")
    put(root, b"SegmentationObject/\xfe.png")
    put(root, "SegmentationClass/notes.txt", b"x")
    for key, data in (("a.jpg", JPEG), ("a.png", PNG), ("a.bmp", b"x"), ("sp ace.jpeg", JPEG),
                      ("noann.png", PNG), ("noann2.jpg", JPEG), ("badimg.jpg", b"junk"),
                      ("x.y.jpg", JPEG), ("d/.png", PNG), ("bom.jpg", JPEG),
                      ("sub/x.jpg", JPEG), ("üñí.JPG", JPEG), ("only-image.jpg", JPEG)):
        put(root, f"JPEGImages/{key}", data)
    put(root, b"JPEGImages/\xffx.jpg", JPEG)
    if lists:
        for subset, text in LISTS.items():
            put(root, f"ImageSets/Segmentation/{subset}.txt", text)
        put(root, "ImageSets/Segmentation/sub/nested.txt", b"a\n")
        put(root, "ImageSets/Segmentation/readme.md", b"a\n")
    return root


def new_refs(root: Root) -> list[listing.ItemRef]:
    with list_masks(root) as got:
        refs = list(got.iter_refs())
        assert got.count == len(refs)
        assert list(got.iter_refs()) == refs  # each pass anew, the same
        return refs


def zipped(folder: Path, dest: Path) -> Root:
    """The folder as a zip (its names that are not UTF-8 left out: zip names are text)."""
    with zipfile.ZipFile(dest, "w") as z:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if path.is_file() and listing.is_utf8(name):
                z.write(path, name)
    return Root(str(dest))


# ---------------------------------------------------------------------------- equality
@pytest.mark.parametrize("lists", [True, False])
def test_refs_equal_the_in_memory_listing_on_hostile_layouts(tmp_path, lists):
    root = Root(str(hostile(tmp_path / "in", lists=lists)))
    old = old_list_masks(root)
    assert new_refs(root) == old
    assert len(old) == (sum(1 for text in LISTS.values() for line in cvat.text_lines(
        text.decode()) if line.strip() and line.strip()[0] != "#") if lists else len(CLASS_IDS))
    problems = {r.name: r.problem for r in old}
    if lists:  # the layout exercises what it claims to
        assert problems["a.png"] is None and "neither" in problems["badimg.jpg"]
        assert "instances need their classes" in problems["objonly.png"]
        assert "inside the archive" in problems["../etc/passwd.png"]
        assert [r.name for r in old if r.dataset == "train"].count("dup.png") == 2
        assert any(r.ann_inline for r in old)


def test_refs_equal_the_in_memory_listing_in_a_zip_archive(tmp_path):
    root = zipped(hostile(tmp_path / "in"), tmp_path / "in.zip")
    assert new_refs(root) == old_list_masks(root)


@pytest.mark.s3
def test_refs_equal_the_in_memory_listing_on_s3(s3_bucket, tmp_path):
    """`Root.list_tags` pages instead of the scandir walk, the lists streamed from S3."""
    from tests.e2e.helpers import new_fs, upload_folder

    folder = hostile(tmp_path / "in")
    for path in list(folder.rglob("*")):
        if path.is_file() and not listing.is_utf8(str(path)):  # S3 keys are text
            path.unlink()
    upload_folder(new_fs(), folder, f"s3://{s3_bucket}/in")
    root = Root(f"s3://{s3_bucket}/in")
    old = old_list_masks(root)
    assert new_refs(root) == old and len(old) > 20


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_list_lines_cut_anywhere_between_chunks_read_the_same(tmp_path, monkeypatch, chunk):
    """CRLF pairs and multi-byte UTF-8 characters cut by a chunk boundary."""
    monkeypatch.setattr(listing_cvat, "LIST_CHUNK", chunk)
    root = Root(str(hostile(tmp_path / "in")))
    assert new_refs(root) == old_list_masks(root)


def test_a_list_that_is_not_utf8_or_named_badly_is_an_input_error(tmp_path):
    root = hostile(tmp_path / "in")
    put(root, "ImageSets/Segmentation/zz.txt", b"a\n" * 1000 + b"\xff\n")
    with pytest.raises(InputError, match=r"zz\.txt: .*UTF-8 text"):
        list_masks(Root(str(root)))
    os.remove(root / "ImageSets/Segmentation/zz.txt")
    put(root, "ImageSets/Segmentation/cat_train.txt", b"a\n")
    with pytest.raises(InputError, match=r"cat_train\.txt: .*without '_'"):
        list_masks(Root(str(root)))


def test_a_list_that_links_outside_the_input_is_never_read(tmp_path):
    root = hostile(tmp_path / "in")
    (tmp_path / "secret.txt").write_text("hunter2\n")
    os.symlink(tmp_path / "secret.txt", root / "ImageSets/Segmentation/leak.txt")
    with pytest.raises(ItemError, match="leads outside"):
        list_masks(Root(str(root)))


def test_an_image_linked_outside_the_input_never_gives_its_size(tmp_path):
    """An id without masks takes its size from its image's header; a JPEGImages/ link leading
    outside the input is not read for it (its size was the outside file's)."""
    root = tmp_path / "in"
    put(root, "labelmap.txt", b"background:0,0,0::\ncar:255,0,0::\n")
    put(root, "ImageSets/Segmentation/train.txt", b"noann\ninside\n")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(cv2.imencode(".jpg", np.zeros((123, 77, 3), np.uint8))[1].tobytes())
    put(root, "JPEGImages/inside.jpg", JPEG)
    os.symlink(outside, root / "JPEGImages/noann.jpg")
    refs = {r.name: r for r in new_refs(Root(str(root)))}
    assert b'width="7" height="5"' in refs["inside.jpg"].ann_inline
    assert refs["noann.jpg"].problem and "to know the size" in refs["noann.jpg"].problem
    assert refs["noann.jpg"].ann_inline is None


# ---------------------------------------------------------------------------- memory
def _archive(root: Path, n: int) -> Root:
    """n items: class PNGs, every other one with an object PNG and an image, one list."""
    put(root, "labelmap.txt", b"background:0,0,0::\ncar:255,0,0::\n")
    for folder in ("SegmentationClass", "SegmentationObject", "JPEGImages"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        (root / "SegmentationClass" / f"item{i:06d}.png").write_bytes(b"x")
        if i % 2:
            (root / "SegmentationObject" / f"item{i:06d}.png").write_bytes(b"x")
            (root / "JPEGImages" / f"item{i:06d}.jpg").write_bytes(b"x")
    put(root, "ImageSets/Segmentation/train.txt",
        "".join(f"item{i:06d}\n" for i in range(n)).encode())
    return Root(str(root))


def _peak(list_refs) -> int:
    tracemalloc.start()
    try:
        list_refs()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _new_pass(root: Root) -> None:
    with list_masks(root) as got:
        assert sum(1 for _ in got.iter_refs()) == got.count


def test_memory_does_not_grow_with_the_number_of_items(tmp_path, monkeypatch):
    """What the listing holds is bounded by its batch sizes (rows per executemany/fetchmany,
    files per walk batch, bytes per list chunk), made small here so that 1k items exceed
    them: from 1k to 20k items the peak stays flat, where the old listing's grows 20-fold."""
    from jobs import spool

    monkeypatch.setattr(spool, "BATCH", 256)
    monkeypatch.setattr(listing, "WALK_BATCH", 256)
    monkeypatch.setattr(listing_cvat, "LIST_CHUNK", 4096)
    small = _archive(tmp_path / "small", 1000)
    large = _archive(tmp_path / "large", 20000)
    _peak(lambda: _new_pass(small))  # warm up imports and caches
    new = [_peak(lambda: _new_pass(small)), _peak(lambda: _new_pass(large))]
    old = [_peak(lambda: old_list_masks(small)), _peak(lambda: old_list_masks(large))]
    print("tracemalloc peaks, 1k / 20k items: new", new, "old", old)
    assert new[1] < new[0] * 1.2 + 64 * 1024, new
    assert old[1] > old[0] * 10, old  # the measure sees a listing that grows
