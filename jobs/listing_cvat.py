"""Listing of CVAT inputs (driver side, keys only): CVAT for images 1.1 tasks and Segmentation
Mask 1.1 archives, as folders, zips (`jobs/storage.py` opens `.zip` URLs as archives; a zip
holding one top-level folder is read inside it) or any fsspec URL. One input format name,
`cvat`, for all; the layout tells them apart. An input that is none of them is an InputError.

- Task: `annotations.xml` (dataset = each image's `subset` attribute, else "default"), or
  datumaro's layout: `<subset>.xml` files beside `images/` (dataset = the file's stem), or
  INPUT naming one such XML file. The XML is streamed once with expat, keeping no element:
  each `<image>` element's bytes, cut from the file by byte offsets, go into
  `ItemRef.ann_inline` (workers never re-read the XML). Items and ONE listing of `images/`
  are spooled to disk (`jobs/spool.py`) and joined there: the image file is
  `images/<dataset>/<name>` (project exports) or `images/<name>`; an item whose image is not
  in that listing fails with that reason; a second `<image>` of a name fails. Refs stream
  sorted by (dataset, name).
- Segmentation Mask: `labelmap.txt` (optional: datumaro's VOC default), subset lists
  `ImageSets/Segmentation/<subset>.txt` (without lists: every SegmentationClass PNG, subset
  "default"), `SegmentationClass/<id>.png`, `SegmentationObject/<id>.png`, images (optional)
  `JPEGImages/<id>.<ext>`. The class PNG is the item's `ann_key`, the object PNG its
  `ann_more`. An id listed without any mask PNG is an image without annotations: its size is
  read from its image's header here (it becomes an empty `<image>` element), or it fails.
  The three folders are listed once each into the spool, the lists are read in chunks, and
  one sorted join stores the items: memory does not grow with the number of items.

Safety: names that could escape the input (absolute, `..`, backslashes) make their item fail
and are never read; an XML with a DOCTYPE/ENTITY, not in UTF-8, or declaring an absurd size,
and an archive member declaring an absurd size, are refused.
"""

from __future__ import annotations

import codecs
import hashlib
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import IO
from xml.parsers import expat as pyexpat
from xml.sax.saxutils import quoteattr

from maskcore.encode import _jpeg_size
from maskcore.errors import InputError, ItemError, expected
from maskcore.formats import cvat
from maskcore.limits import PNG_SIGNATURE
from maskcore.model import ClassTable

from . import listing
from .spool import Spool
from .storage import Root

MAX_XML_BYTES = 16 * 1024 ** 3  # an annotations.xml larger than this is refused as absurd
MAX_LABELMAP_BYTES = 16 * 1024 ** 2


XML_HEAD = 1 << 12  # bytes read to tell a CVAT XML (an <annotations> root) from another XML


def _xml_files(root: Root) -> list[str]:
    """datumaro's layout: `<subset>.xml` files at the top of INPUT, each holding <annotations>
    (one listing of the top level only), in subset order: `_task_rows` then finds the items of
    files datumaro wrote in order ('train.xml' before 'train-extra.xml')."""
    fs, path = root.fs_path
    try:
        found = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    keys = sorted(posixpath.basename(f["name"].rstrip("/")) for f in found
                  if f.get("type") == "file")
    return sorted((k for k in keys if k.lower().endswith(".xml") and not k.startswith(".")
                   and listing.is_utf8(k) and _is_cvat_xml(root, k)), key=lambda k: k[:-4])


def _is_cvat_xml(root: Root, key: str) -> bool:
    try:
        head = root.fs.cat_file(root.full(key), start=0, end=XML_HEAD)
    except (OSError, ValueError):
        return False
    return b"<annotations" in head


def _probe(root: Root) -> bool:
    return any(root.exists(k) for k in (cvat.ANNOTATIONS_FILE, cvat.LABELMAP_FILE,
                                        cvat.SEGM_LIST_DIR))


def detect(root: Root) -> bool:
    if root.path.lower().endswith(".xml"):
        return root.fs.isfile(root.path)
    return _probe(root) or bool(_xml_files(root))


def list_cvat(root: Root) -> listing.Listing:
    """A task (annotations.xml), datumaro's `<subset>.xml` files, the XML file itself, or a
    Segmentation Mask archive; InputError when INPUT is none of these."""
    fs, path = root.fs_path
    if path.lower().endswith(".xml") and fs.isfile(path):
        base = Root(fs.unstrip_protocol(posixpath.dirname(path)), dict(root.storage_options))
        return list_task(base, [posixpath.basename(path)], moved=True)
    base = listing.rebase(root, lambda r: _probe(r) or bool(_xml_files(r)))
    moved = base != root
    if base.exists(cvat.ANNOTATIONS_FILE):
        return list_task(base, [cvat.ANNOTATIONS_FILE], moved=moved)
    if base.exists(cvat.LABELMAP_FILE) or base.exists(cvat.SEGM_LIST_DIR) or \
            base.exists(cvat.CLASS_DIR):
        return list_masks(base, moved=moved)
    xmls = _xml_files(base)
    if xmls:
        return list_task(base, xmls, moved=moved)
    raise InputError(f"{root.url}: " + expected(
        f"a CVAT input: {cvat.ANNOTATIONS_FILE} (CVAT for images 1.1), <subset>.xml files "
        f"(datumaro), or {cvat.LABELMAP_FILE} / {cvat.SEGM_LIST_DIR}/ (Segmentation Mask 1.1)",
        "none of these"))


_safe = listing.safe_key


# ---------------------------------------------------------------------------- tasks
_END_TAG = {"image": re.compile(rb"</image\s*>").match, "meta": re.compile(rb"</meta\s*>").match}
# an empty image element's tag (well-formed: expat has read it); attribute values may hold '>'
_EMPTY_IMAGE = re.compile(rb"""<image(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*/>""")


def iter_images(stream: IO[bytes], where: str
                ) -> Iterator[ClassTable | tuple[dict[str, str], bytes]]:
    """Stream a CVAT for images 1.1 XML: yields the ClassTable (from `<meta>`) first, then
    `(image attributes, <image> element bytes as they stand in the file)` per image, in file
    order (`image_batches`, one by one)."""
    for batch in image_batches(stream, where):
        yield from batch


def image_batches(stream: IO[bytes], where: str
                  ) -> Iterator[list[ClassTable | tuple[dict[str, str], bytes]]]:
    """`iter_images` in lists: what one read of the file completed (callers work per list).
    expat reports byte offsets, so each element is cut from the input bytes, never built as
    a tree: memory is one read chunk plus the element being read (and the list of one read).

    Inside an `<image>` no start handler runs (`in_image`): expat then builds no attributes
    per shape, the largest cost of a pass. The first `</image>` closes it unless the
    bytes read since its start hold another `<image` (a nested one, or such text in a
    comment or CDATA): then `nested` counts the depth from those bytes and the element ends
    as with the start handler on. An image is cut in its end handler (its bytes are read by
    then); a `<meta>` (and an `<image>` before the labels are known) is kept as bytes and
    settled after the read's `Parse` (`settle`), which may fail on the read's bytes first."""
    parser = pyexpat.ParserCreate()
    # the handlers' state (nonlocal: cheaper than a dict per call): element depth, offset and
    # attributes of the open depth-2 element, whether <meta> was seen (`classes`) or this
    # read's list needs `settle` (`unsettled`)
    depth, begin, opened, classes, unsettled = 0, -1, None, False, False
    out: list = []  # this read's elements: (attributes, bytes) per image, bytes per <meta>
    buf = bytearray()
    base = 0  # file offset of buf[0]

    def refuse(*_: object) -> None:
        raise InputError(f"{where}: " + expected("XML without a DOCTYPE (CVAT writes none)",
                                                 "a DOCTYPE/ENTITY declaration"))

    def declared(_version: str, encoding: str | None, _standalone: int) -> None:
        if encoding and encoding.lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii"):
            raise InputError(f"{where}: " + expected("UTF-8 XML (CVAT writes UTF-8)", encoding))

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, begin, opened
        depth += 1
        if depth != 2:  # shapes and their attributes: most elements
            if depth == 1 and name != "annotations":
                raise InputError(f"{where}: " + expected(
                    "<annotations> at the root (CVAT for images 1.1)", name))
            return
        begin, opened = parser.CurrentByteIndex, attrs
        if name == "image":
            parser.StartElementHandler, parser.EndElementHandler = None, in_image
        elif name == "track":
            raise InputError(f"{where}: " + expected(
                "CVAT for images 1.1 (<image> elements)",
                "<track> elements (CVAT for video 1.1); export the task as "
                "'CVAT for images 1.1'"))

    def end(name: str) -> None:
        nonlocal depth
        if depth == 2 and (name == "image" or name == "meta"):
            at = parser.CurrentByteIndex
            m = _END_TAG[name](buf, at - base)
            cut(name, m.end() + base if m else at)
        depth -= 1

    def cut(name: str, stop: int) -> None:
        """The depth-2 element from `begin` to file offset `stop`, into `out`."""
        nonlocal unsettled
        element = bytes(buf[begin - base:stop - base])
        if name == "meta" or not classes:
            unsettled = True
        out.append(element if name == "meta" else (opened, element))

    def in_image(name: str) -> None:  # the end handler inside an <image>: depth is 2 so far
        nonlocal depth
        if name != "image":
            return
        # without a start handler expat reports an empty element's end at its start tag
        at = parser.CurrentByteIndex - base
        parser.StartElementHandler, parser.EndElementHandler = start, end
        if at == begin - base:  # the <image/> itself: it ends where its tag does
            m = _EMPTY_IMAGE.match(buf, at)
            cut(name, base + (m.end() if m else at))
            depth = 1
        elif buf.find(b"<image", begin - base + 1, at + len(b"<image")) < 0:
            if classes:  # the common case, inlined: the end tag is '</image' S? '>'
                out.append((opened, bytes(buf[begin - base:buf.find(b">", at) + 1])))
            else:
                cut(name, base + buf.find(b">", at) + 1)
            depth = 1
        else:  # a nested <image> (or such text): count as the start handler would have
            depth = 1 + nested(bytes(buf[begin - base:at])) + (
                not buf.startswith(b"</", at))  # an empty <image/> is open too
            end(name)

    def nested(head: bytes) -> int:
        """The number of elements `head` (the start of an <image> element, well-formed so
        far, with no element named image closed in it) leaves open."""
        count = pyexpat.ParserCreate()
        level = 0

        def down(_name: str, _attrs: object) -> None:
            nonlocal level
            level += 1

        def up(_name: str) -> None:
            nonlocal level
            level -= 1

        count.StartElementHandler, count.EndElementHandler = down, up
        count.Parse(head, False)
        return level

    def settle(got: list) -> list[ClassTable | tuple[dict[str, str], bytes]]:
        """A read's list with its <meta> made the ClassTable; an image before it fails."""
        nonlocal classes
        done: list[ClassTable | tuple[dict[str, str], bytes]] = []
        for element in got:
            if isinstance(element, bytes):
                classes = True
                done.append(cvat.classes_from_meta(ET.fromstring(element)))
            elif classes:
                done.append(element)
            else:
                raise InputError(f"{where}: " + expected(
                    "<meta> with the labels before the first <image>", "<image>"))
        return done

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.XmlDeclHandler = declared
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    first = True  # whether chunk is the first one
    while True:
        chunk = stream.read(1 << 20)
        if first and (chunk[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in chunk[:4]):
            # UTF-16/32 (a BOM, or NULs in '<?xm'): expat would read it, but elements cut
            # from the bytes would not parse alone
            raise InputError(f"{where}: " + expected("UTF-8 XML (CVAT writes UTF-8)",
                                                     "UTF-16 or UTF-32"))
        buf += chunk
        first = False
        try:
            parser.Parse(chunk, not chunk)
        except pyexpat.ExpatError as e:
            raise InputError(f"{where}: " + expected("well-formed XML", str(e))) from None
        if unsettled:
            out, unsettled = settle(out), False
        if out:
            yield out
            out = []
        # keep the open element, else from the last '<' (a tag expat has not finished)
        last = buf.rfind(b"<")
        keep = begin if depth >= 2 else base + (last if last >= 0 else 0)
        keep = max(min(keep, base + len(buf)), base)
        del buf[:keep - base]
        base = keep
        if not chunk:
            break
    if not classes:
        raise InputError(f"{where}: " + expected("a <meta> element with labels", "none"))


def list_task(root: Root, xmls: list[str], *, moved: bool = False) -> listing.Listing:
    """Items of CVAT XML files: `annotations.xml` (dataset = each image's subset, else
    "default") or datumaro's `<subset>.xml` files (dataset = the file's stem). Each image is
    found in ONE listing of `images/` (`images/<dataset>/<name>`, else `images/<name>`); an
    item without its image fails with that reason."""
    for key in xmls:
        size = root.size(key)
        if size is not None and size > MAX_XML_BYTES:
            raise InputError(f"{key}: " + expected(f"at most {MAX_XML_BYTES} bytes",
                                                   f"{size} bytes"))
    found: list[ClassTable] = []
    by_subset = [True]  # may an image be at images/<dataset>/<name>? (`fill` tells)

    def fill(spool: Spool) -> int:
        spool.execute("CREATE TABLE items (ds TEXT, name TEXT, ann_key TEXT, element BLOB, "
                      "tag TEXT, problem TEXT)")
        n = 0
        order: list = [True, ("", "")]  # items already in (dataset, name) order?; the last
        subsets: set[str] = set()
        tops: set[str] = set()
        for key in xmls:
            n += spool.insert_batches("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                                      _task_rows(root, key, found, key != cvat.ANNOTATIONS_FILE,
                                                 order, subsets))
        # the walk of images/ after the XML, in this thread: walked in a second thread while
        # expat parsed, it cost more CPU and more wall time on a quiet 2-core box (the two
        # threads contend for the GIL; BENCHMARKS.md, listing round 6)
        _spool_files(spool, root, tops)
        by_subset[0] = len(subsets) > TRACKED or len(tops) > TRACKED or any(
            s.split("/", 1)[0] in tops for s in subsets)
        if not order[0]:
            spool.execute("CREATE INDEX items_order ON items (ds, name)")
        return n

    spool, count = listing.fill_spool(fill)
    classes = found[0]
    return listing.Listing(cvat.NAME, classes, count, lambda: _task_refs(spool, by_subset[0]),
                           spool=spool, image_root=root if moved else None)


# distinct datasets, and folders at the top of images/, `list_task` keeps to tell whether an
# image may be at images/<dataset>/<name>; past that many it assumes so (bounded memory)
TRACKED = 4096


def _spool_files(spool: Spool, root: Root, tops: set[str]) -> None:
    """Table `files` (key, tag): `_image_files`, then a covering index, built by SQLite's
    sorter (cheaper than inserting the walk's unsorted keys into a b-tree one by one; the join
    never reads the table)."""
    spool.execute("CREATE TABLE files (key TEXT, tag TEXT)")
    spool.insert_batches("INSERT INTO files VALUES (?, ?)", _image_files(root, tops))
    spool.execute("CREATE INDEX files_key ON files (key, tag)")


def _image_files(root: Root, tops: set[str]) -> Iterator[list[tuple[str, str]]]:
    """Batches of (key, tag) of the files under images/ whose key is safe: on local disk a
    folder is checked once and a scandir name only for a backslash (see
    `listing.iter_folder_batches`): the walk's tuples go to SQLite as they are. `tops` gains
    the first folder under images/ of each batch in a sub-folder (up to TRACKED + 1 names)."""
    local, start = root.is_local, len(cvat.IMAGES_DIR) + 1
    for folder, files in listing.iter_folder_batches(root, cvat.IMAGES_DIR, keys=True):
        if len(folder) > start and len(tops) <= TRACKED:
            tops.add(folder[start:].split("/", 1)[0])
        if not local:
            yield [f for f in files if _safe(f[0])]
        elif _safe(folder + "x"):
            yield [f for f in files if "\\" not in f[0]]


_Row = tuple[str, str, str, bytes, str, str | None]


def _task_rows(root: Root, key: str, found: list[ClassTable], by_file: bool, order: list,
               subsets: set[str]) -> Iterator[list[_Row]]:
    """The items table's rows of one XML file, a list per `image_batches` list; `order` is
    [in order so far, last (dataset, name)] over all the files: it turns False as soon as an
    item comes before the one spooled before it (then `fill` builds an index; Python's str
    order is SQLite's BINARY order).
    `subsets` gains each dataset met (up to TRACKED + 1 of them)."""
    subset_of_file = posixpath.basename(key)[: -len(".xml")]
    prev, default, md5 = order[1], cvat.DEFAULT_SUBSET, hashlib.md5
    last_subset = None
    # a local XML through `open_read`'s checks (a FIFO never blocks the listing, a link out of
    # the input is not read); an archive member as before (open_read would hold the archive's
    # lock across the yields, while the listing reads image headers from the same archive)
    opened = root.open_read(key) if root.is_local else root.fs.open(root.full(key), "rb")
    with opened as stream:
        for batch in image_batches(stream, key):
            rows = []
            add = rows.append
            for got in batch:
                if isinstance(got, ClassTable):
                    if found and got != found[0]:
                        other = cvat.ANNOTATIONS_FILE if not by_file else "the other"
                        raise InputError(f"{key}: " + expected(
                            f"the labels of {other} XML files", "other labels"))
                    found.append(got)
                    continue
                attrs, element = got
                name = attrs.get("name", "")
                subset = subset_of_file if by_file else (attrs.get("subset") or default)
                if subset != last_subset and len(subsets) <= TRACKED:
                    subsets.add(subset)
                    last_subset = subset
                problem = None
                if not name or not _safe(name):
                    problem = expected("an image name inside the task (relative, no '..')",
                                       name)
                tag = "md5:" + md5(element, usedforsecurity=False).hexdigest()
                if order[0]:  # once out of order, the index is built anyway
                    here = (subset, name)
                    if here < prev:
                        order[0] = False
                    order[1] = prev = here
                add((subset, name, key, element, tag, problem))
            yield rows


_IMAGES = f"'{cvat.IMAGES_DIR}/'"  # SQL text: the key of an item's image is built in the join


def _task_refs(spool: Spool, by_subset: bool = True) -> Iterator[listing.ItemRef]:
    """The items in (dataset, name) order (rowid order when they were spooled in that order),
    each joined with its image file by two lookups of the files' covering index (one, of
    images/<name>, when no file is in a folder images/<dataset>/: `by_subset` False)."""
    indexed = spool.scalar("SELECT 1 FROM sqlite_master WHERE name = 'items_order'")
    top, ref = cvat.IMAGES_DIR, listing.ItemRef
    last_ds = last_name = None
    first = (f"f1.tag FROM items i LEFT JOIN files f1 ON f1.key = {_IMAGES} || i.ds || '/' "
             "|| i.name" if by_subset else "NULL FROM items i")
    for ds, name, ann_key, element, tag, problem, t2, t1 in spool.rows(
            f"SELECT i.ds, i.name, i.ann_key, i.element, i.tag, i.problem, f2.tag, {first} "
            f"LEFT JOIN files f2 ON f2.key = {_IMAGES} || i.name "
            + ("ORDER BY i.ds, i.name, i.rowid" if indexed else "ORDER BY i.rowid")):
        image_key = image_tag = None
        if problem is None:
            if name == last_name and ds == last_ds:
                problem = expected("one <image> per name", f"{name!r} again in subset {ds!r}")
            elif t1 is not None:
                image_key, image_tag = f"{top}/{ds}/{name}", t1
            elif t2 is not None:
                image_key, image_tag = f"{top}/{name}", t2
            else:
                problem = expected(
                    f"the image file {top}/{ds}/{name} or {top}/{name} "
                    f"(one listing of {top}/)", "no such file")
        last_ds, last_name = ds, name
        yield ref(ds, name, ann_key, image_key, problem, element, tag, image_tag)


# ---------------------------------------------------------------------------- mask archives
LIST_CHUNK = 1 << 18  # bytes of an ImageSets list decoded at a time (~20k short lines)
# characters of one line of a list: no id that long can name a file (paths are at most a few
# KB), and the line being read is what the listing holds
MAX_LIST_LINE = 1 << 20
_PNG_KINDS = ((0, cvat.CLASS_DIR), (1, cvat.OBJECT_DIR))


def list_masks(root: Root, *, moved: bool = False) -> listing.Listing:
    """A Segmentation Mask archive (see module docstring), spooled: the mask PNGs, the images
    and the subset lists' (subset, id) rows go into tables, and one sorted join (`_spool_masks`)
    stores the items in (dataset, name) order; `_mask_ref` makes each row a ref."""
    size = root.size(cvat.LABELMAP_FILE)
    if size is not None and size > MAX_LABELMAP_BYTES:
        raise InputError(f"{cvat.LABELMAP_FILE}: " + expected(
            f"at most {MAX_LABELMAP_BYTES} bytes", f"{size} bytes"))
    labelmap = root.read(cvat.LABELMAP_FILE) if size is not None else None
    classes = cvat.parse_labelmap_classes(labelmap)
    spool, count = listing.fill_spool(lambda s: _spool_masks(s, root))
    return listing.Listing(cvat.NAME, classes, count, lambda: _mask_refs(spool), spool=spool,
                           image_root=root if moved else None)


def _spool_masks(spool: Spool, root: Root) -> int:
    """Tables `pngs` (kind 0 class, 1 object; id; tag), `images` (id, name under JPEGImages/,
    tag), `ids` (subset, id; rowid: list order) and `sizes` (id, width, height of the image of
    an id that needs it), then `items`: `ids` joined with the rest, inserted sorted by
    (dataset, name, list order) so each pass reads it in rowid order. Returns the count."""
    spool.execute("CREATE TABLE pngs (kind INT, id TEXT, tag TEXT)")
    spool.execute("CREATE TABLE images (id TEXT, name TEXT, tag TEXT)")
    spool.execute("CREATE TABLE ids (subset TEXT, id TEXT)")
    spool.execute("CREATE TABLE sizes (id TEXT PRIMARY KEY, w INT, h INT)")
    for kind, top in _PNG_KINDS:
        spool.insert("INSERT INTO pngs VALUES (?, ?, ?)", _png_rows(root, kind, top))
    spool.insert("INSERT INTO images VALUES (?, ?, ?)", _image_rows(root))
    spool.execute("CREATE INDEX pngs_id ON pngs (kind, id, tag)")
    spool.execute("CREATE INDEX images_id ON images (id, name, tag)")
    # the image of an id: the last of its files in key order (a dict of the sorted listing)
    spool.execute("CREATE TABLE image_of AS SELECT id, max(name) AS name, tag FROM images "
                  "GROUP BY id")
    spool.execute("CREATE UNIQUE INDEX image_of_id ON image_of (id)")
    lists = [k for k in root.list_files(cvat.SEGM_LIST_DIR)
             if posixpath.dirname(k) == cvat.SEGM_LIST_DIR and k.endswith(".txt")]
    if lists:
        for key in sorted(lists):
            spool.insert("INSERT INTO ids VALUES (?, ?)", _list_rows(root, key))
    else:  # no subset lists: every class PNG, in one subset, in key order
        spool.execute("INSERT INTO ids SELECT ?, id FROM pngs WHERE kind = 0 "
                      f"ORDER BY id || '{cvat.MASK_EXT}'", (cvat.DEFAULT_SUBSET,))
    found = ("SELECT l.subset, l.id, (SELECT tag FROM pngs WHERE kind = 0 AND id = l.id), "
             "(SELECT tag FROM pngs WHERE kind = 1 AND id = l.id), i.name, i.tag")
    joined = " FROM ids l LEFT JOIN image_of i ON i.id = l.id"
    # the images of ids without masks: their sizes are read once, here (`_mask_ref` decides)
    spool.insert("INSERT OR IGNORE INTO sizes VALUES (?, ?, ?)", _size_rows(root, spool.rows(
        found + joined + " WHERE i.name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pngs p "
        "WHERE p.kind IN (0, 1) AND p.id = l.id) GROUP BY l.id")))
    spool.execute("CREATE TABLE items (subset TEXT, id TEXT, class_tag TEXT, object_tag TEXT, "
                  "image TEXT, image_tag TEXT, w INT, h INT)")
    spool.execute(f"INSERT INTO items {found}, s.w, s.h{joined} LEFT JOIN sizes s ON "
                  f"s.id = l.id ORDER BY l.subset, COALESCE(i.name, l.id || "
                  f"'{cvat.MASK_EXT}'), l.rowid")
    return spool.scalar("SELECT count(*) FROM items")


def _png_rows(root: Root, kind: int, top: str) -> Iterator[tuple[int, str, str]]:
    """(kind, id, tag) of each `<top>/<id>.png` whose key is safe and UTF-8 (other files can
    be no item's mask: a name that is not is never read, as in `iter_folder_batches`)."""
    start, ext = len(top) + 1, cvat.MASK_EXT
    for key, tag in _files(root, top):
        if key.endswith(ext) and key.startswith(top + "/"):
            yield kind, key[start:-len(ext)], tag


def _image_rows(root: Root) -> Iterator[tuple[str, str, str]]:
    """(item id, name under JPEGImages/, tag) of each image whose key is safe and UTF-8."""
    top = cvat.VOC_IMAGES_DIR + "/"
    item_id = cvat.item_id
    for key, tag in _files(root, cvat.VOC_IMAGES_DIR):
        if key.startswith(top):
            name = key[len(top):]
            yield item_id(name), name, tag


def _files(root: Root, prefix: str) -> Iterator[tuple[str, str]]:
    """(key, tag) of the files under `prefix` whose keys are safe and UTF-8, streamed in
    batches (`listing.iter_folder_batches`: on local disk names that are not UTF-8 come as
    backslash escapes, which are not safe)."""
    for folder, files in listing.iter_folder_batches(root, prefix):
        yield from [(k, t) for k, t in ((folder + n, t) for n, t in files)
                    if _safe(k) and (k.isascii() or listing.is_utf8(k))]


def _list_rows(root: Root, key: str) -> Iterator[tuple[str, str]]:
    """(subset, id) of each id of one ImageSets list, in line order, read LIST_CHUNK bytes at a
    time with datumaro's line rules (`cvat.text_lines`: '\n', '\r\n', '\r'; each line
    stripped; blank lines and '#' comments skipped). A line longer than MAX_LIST_LINE is an
    InputError (the list was read whole before: refused above `Limits.max_object_bytes`)."""
    subset = posixpath.basename(key)[:-len(".txt")]
    problem = cvat.subset_problem(subset)
    if problem:
        raise InputError(f"{key}: {problem}")
    size = root.size(key) or 0
    if size > MAX_XML_BYTES:
        raise InputError(f"{key}: " + expected(f"at most {MAX_XML_BYTES} bytes", size))
    decode = codecs.getincrementaldecoder("utf-8")().decode
    rest = ""  # the line the last chunk ended in
    with root.open_read(key) as f:
        while True:
            chunk = f.read(LIST_CHUNK)
            try:
                text = rest + decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                raise InputError(f"{key}: " + expected("UTF-8 text", "undecodable bytes")
                                 ) from None
            lines = cvat.text_lines(text)
            # a '\r\n' cut between two chunks reads as '\r' then '\n': one blank line more,
            # and blank lines are skipped
            rest = lines.pop() if chunk else ""
            if len(rest) > MAX_LIST_LINE or max(map(len, lines), default=0) > MAX_LIST_LINE:
                raise InputError(f"{key}: " + expected(
                    f"lines of at most {MAX_LIST_LINE} characters (one item id each)",
                    "a longer line"))
            for line in lines:  # datumaro's reading: id ' ' is none, 'a\x0cb' one
                line = line.strip()
                if line and line[0] != "#":
                    yield subset, line
            if not chunk:
                return


def _size_rows(root: Root, rows: Iterator[tuple[str, ...]]
               ) -> Iterator[tuple[str, int | None, int | None]]:
    """(id, width, height) of the image of each joined row whose ref needs its size (`None`s
    when the header tells none): `_mask_ref` asks for it or not."""
    asked: list[tuple[int, int] | None] = []  # what `size` read for the current row

    def size(key: str) -> tuple[int, int] | None:
        asked.append(_image_size(root, key))
        return asked[-1]

    for subset, id_, class_tag, object_tag, image, image_tag in rows:
        asked.clear()
        _mask_ref(subset, id_, class_tag, object_tag, image, image_tag, size)
        if asked:
            got = asked[-1]
            yield id_, got and got[0], got and got[1]


def _mask_refs(spool: Spool) -> Iterator[listing.ItemRef]:
    """The stored items in (dataset, name) order, each made a ref by `_mask_ref`."""
    for subset, id_, class_tag, object_tag, image, image_tag, w, h in spool.rows(
            "SELECT * FROM items ORDER BY rowid"):
        yield _mask_ref(subset, id_, class_tag, object_tag, image, image_tag,
                        lambda _key, w=w, h=h: None if w is None else (w, h))


def _mask_ref(subset: str, id_: str, class_tag: str | None, object_tag: str | None,
              image: str | None, image_tag: str | None,
              size: Callable[[str], tuple[int, int] | None]) -> listing.ItemRef:
    """The ref of id `id_` of `subset`, given what the listing found: the tags of its class and
    object PNGs, its image (name under JPEGImages/) and tag, and `size(image key)`, read only
    for an id without masks."""
    class_key = f"{cvat.CLASS_DIR}/{id_}{cvat.MASK_EXT}"
    object_key = f"{cvat.OBJECT_DIR}/{id_}{cvat.MASK_EXT}"
    image_key = f"{cvat.VOC_IMAGES_DIR}/{image}" if image is not None else None
    name = image if image is not None else id_ + cvat.MASK_EXT
    if not _safe(class_key):
        return listing.ItemRef(subset, name, None, None,
                               expected("an item id inside the archive (relative, no '..')", id_))
    if class_tag is not None:
        more = (object_key,) if object_tag is not None else ()
        tag = class_tag if object_tag is None else f"{class_tag}|{object_tag}"
        return listing.ItemRef(subset, name, class_key, image_key, ann_tag=tag,
                               image_tag=image_tag, ann_more=more)
    if object_tag is not None:
        return listing.ItemRef(subset, name, None, image_key, expected(
            f"{class_key} beside {object_key} (instances need their classes)", "none"))
    got = size(image_key) if image_key else None
    if got is None:
        return listing.ItemRef(subset, name, None, image_key, expected(
            f"{class_key} or an image in {cvat.VOC_IMAGES_DIR}/ to know the size of this "
            "item without annotations", "neither"))
    element = (f"<image name={quoteattr(name)} width=\"{got[0]}\" height=\"{got[1]}\" />"
               ).encode()
    return listing.ItemRef(subset, name, None, image_key, None, element, ann_tag="empty",
                           image_tag=image_tag)


def _image_size(root: Root, key: str) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, reading only the file's first bytes (the
    whole file, bounded, for a longer JPEG header) through `Root`'s checked reads: a link
    leading outside the input, a folder or an oversized file tells no size (None)."""
    try:
        head = root.read_head(key, listing.HEAD_BYTES)
        if head.startswith(PNG_SIGNATURE) and len(head) >= 24:
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(head) or _jpeg_size(root.read(key))
    except (OSError, ValueError, ItemError):
        return None
    return None
