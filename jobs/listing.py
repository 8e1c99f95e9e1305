"""Find the items of an input dataset: format detection, the streaming `Listing`, and the
Supervisely project listing.

Runs on the driver and keeps keys only (never pixels): an `ItemRef` is (dataset, name,
ann_key, image_key, ...). A `Listing` streams its refs sorted by (dataset, name) - ties keep
input order - so partitions are deterministic and a rerun plans the same partitions:
`iter_refs()` streams them anew on each call from an on-disk spool (`jobs/spool.py`), so the
driver's memory does not depend on the number of items; `count` is known up front. `refs`
(a list) is for small inputs and tests only. `close()` (or `with listing:`) removes the spool.
`ItemRef.to_json()` / `from_json()` is the compact one-line form plan shards store.

A Supervisely project has `meta.json` at its root (folder, `.tar`, `.tar.gz`, `.zip`, or any
fsspec URL); an archive may hold the project under one top-level folder or under `./`
(`tar -C proj .`). Datasets are top-level folders and `<dataset>/datasets/<child>` (SDK layout,
reference B.1). An image without an annotation, or an annotation without an image, is still an
item: it fails alone with that reason (the SDK would silently skip the whole dataset). The
listing is one walk of the project (os.scandir on local disk, one `find` elsewhere) streamed
into the spool, where SQLite sorts images and annotation files by (dataset, name); each
`iter_refs()` pairs them by one merge of the two sorted lists (no refs table, no JSON per ref).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from maskcore.errors import InputError, ItemError, expected
from maskcore.formats import supervisely as sly
from maskcore.formats.base import pack_parts
from maskcore.limits import DEFAULT_LIMITS, Limits, check_image_header
from maskcore.model import ClassTable, name_stem
from maskcore.paths import _plain, check_relative

from .spool import Spool
from .storage import Root, link_leaves, real_root

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once
_ENCODE = msgspec.json.Encoder().encode  # _COMPACT's text, several times faster
_DECODE = msgspec.json.Decoder().decode


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

    def to_json(self) -> str:
        """One compact JSON line: a list of the fields in order, trailing defaults left out;
        `ann_inline` as text when it is UTF-8, else as `["b64", "<base64>"]`."""
        inline: object = None
        if self.ann_inline is not None:
            try:
                inline = self.ann_inline.decode("utf-8")
            except UnicodeDecodeError:
                inline = ["b64", base64.b64encode(self.ann_inline).decode("ascii")]
        fields = [self.dataset, self.name, self.ann_key, self.image_key, self.problem, inline,
                  self.ann_tag, self.image_tag, self.previous, list(self.ann_more)]
        while len(fields) > 4 and fields[-1] in (None, []):
            fields.pop()
        try:
            return _ENCODE(fields).decode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: json writes it as it is
            return _COMPACT.encode(fields)

    @classmethod
    def from_json(cls, line: str | bytes) -> ItemRef:
        try:
            fields = _DECODE(line)
        except (msgspec.DecodeError, UnicodeEncodeError):
            fields = json.loads(line)
        return cls.from_fields(fields)

    @classmethod
    def from_fields(cls, f: Any) -> ItemRef:
        """The ItemRef of an already parsed `to_json` list."""
        if not isinstance(f, list) or not 4 <= len(f) <= 10:
            raise ValueError(f"Expected an ItemRef JSON list of 4 to 10 fields. Got {f!r:.200}.")
        f = f + [None] * (10 - len(f))
        inline = f[5]
        if isinstance(inline, list):
            inline = base64.b64decode(inline[1])
        elif inline is not None:
            inline = inline.encode("utf-8")
        return cls(f[0], f[1], f[2], f[3], f[4], inline, f[6], f[7], f[8], tuple(f[9] or ()))


# The frozen dataclass's generated __init__ sets each field by object.__setattr__ (~5 us a
# ref, the largest per-item cost of a listing pass); this one stores each field through its
# slot's descriptor, as that call does in the end (about half the time). Same signature,
# defaults and behaviour: the instance is frozen as before (tests/jobs/test_listing_ref.py).
_set_dataset, _set_name, _set_ann_key, _set_image_key, _set_problem, _set_ann_inline, \
    _set_ann_tag, _set_image_tag, _set_previous, _set_ann_more = (
        ItemRef.__dict__[f.name].__set__ for f in dataclasses.fields(ItemRef))
_DATACLASS_INIT = ItemRef.__init__  # the generated one (tests compare the two)


def _item_ref_init(self: ItemRef, dataset: str, name: str, ann_key: str | None,
                   image_key: str | None, problem: str | None = None,
                   ann_inline: bytes | None = None, ann_tag: str | None = None,
                   image_tag: str | None = None, previous: str | None = None,
                   ann_more: tuple[str, ...] = ()) -> None:
    _set_dataset(self, dataset)
    _set_name(self, name)
    _set_ann_key(self, ann_key)
    _set_image_key(self, image_key)
    _set_problem(self, problem)
    _set_ann_inline(self, ann_inline)
    _set_ann_tag(self, ann_tag)
    _set_image_tag(self, image_tag)
    _set_previous(self, previous)
    _set_ann_more(self, ann_more)


_item_ref_init.__qualname__ = "ItemRef.__init__"
ItemRef.__init__ = _item_ref_init  # type: ignore[method-assign]


def ref_key(ref: ItemRef) -> tuple[str, str]:
    return ref.dataset, ref.name


@dataclass(frozen=True, eq=False)
class Listing:
    """What the driver knows of an input: format, class list, and its items (keys only),
    streamed sorted by (dataset, name) by `iter_refs()` (see module docstring)."""

    reader: str
    classes: ClassTable
    count: int
    stream: Callable[[], Iterator[ItemRef]] = field(repr=False)
    meta_json: bytes = b""  # the Supervisely meta.json as it stands, when the input has one
    image_root: Root | None = None  # where keys resolve, when not at INPUT (COCO, archives)
    spool: Spool | None = field(default=None, repr=False)

    @classmethod
    def of(cls, reader: str, classes: ClassTable, refs: Iterable[ItemRef], **kw: object
           ) -> Listing:
        """A listing of refs held in memory (small inputs and tests), sorted stably."""
        items = sorted(refs, key=ref_key)
        return cls(reader, classes, len(items), lambda: iter(items), **kw)  # type: ignore[arg-type]

    def iter_refs(self) -> Iterator[ItemRef]:
        """The refs sorted by (dataset, name), streamed from the spool (each call anew)."""
        return self.stream()

    @property
    def refs(self) -> list[ItemRef]:
        """Every ref in one list: small inputs only (tests, small callers)."""
        return list(self.iter_refs())

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()

    def __enter__(self) -> Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- spooled refs
REFS_TABLE = "CREATE TABLE refs (dataset TEXT, name TEXT, data TEXT)"


def spool_refs(spool: Spool, refs: Iterable[ItemRef]) -> int:
    """Store refs (any order) in the spool's `refs` table and index them; returns the count."""
    spool.execute(REFS_TABLE)
    n = spool.insert("INSERT INTO refs VALUES (?, ?, ?)",
                     ((r.dataset, r.name, r.to_json()) for r in refs))
    spool.execute("CREATE INDEX refs_order ON refs (dataset, name)")
    return n


def iter_spooled(spool: Spool) -> Iterator[ItemRef]:
    for (data,) in spool.rows("SELECT data FROM refs ORDER BY dataset, name, rowid"):
        yield ItemRef.from_json(data)


def fill_spool(fill: Callable[[Spool], int]) -> tuple[Spool, int]:
    """A new spool and the item count `fill(spool)` stored in it (the spool is removed when
    `fill` fails)."""
    spool = Spool()
    try:
        return spool, fill(spool)
    except BaseException:
        spool.close()
        raise


def spooled_listing(reader: str, classes: ClassTable, fill: Callable[[Spool], int],
                    **kw: object) -> Listing:
    """A Listing whose refs `fill(spool)` stored in a new spool's `refs` table."""
    spool, count = fill_spool(fill)
    if count == 0:
        spool.close()
    return Listing(reader, classes, count, lambda: iter_spooled(spool), spool=spool,
                   **kw)  # type: ignore[arg-type]


def safe_key(key: str) -> bool:
    """`check_relative` without raising (it runs once per listed file)."""
    if _plain(key):  # the common clean key: no call that may raise
        return True
    try:
        check_relative(key)
    except ItemError:
        return False
    return True


def stem(name: str) -> str:
    """The stem outputs are named by: the one rule, `maskcore.model.Item.stem`."""
    return name_stem(name)


# ---------------------------------------------------------------------------- listing files
def iter_tags(root: Root, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key, tag) of every file under `prefix`, in no particular order, streamed: an
    os.scandir walk on local disk (tags as `Root.list_tags` gives them), else
    `Root.list_tags` (s3fs returns one listing of the prefix already)."""
    for _folder, files in iter_folder_batches(root, prefix, keys=True):
        yield from files


def iter_folder_tags(root: Root, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """`iter_tags` as (folder key ending in '/' or "", file name, tag): the files of a local
    folder come one after another (callers decide per folder, not per file)."""
    for folder, files in iter_folder_batches(root, prefix):
        for name, tag in files:
            yield folder, name, tag


WALK_BATCH = 4096  # files per batch of `iter_folder_batches` (bounds what a batch holds)


def iter_folder_batches(root: Root, prefix: str = "", *, keys: bool = False
                        ) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """`iter_folder_tags` in batches: (folder key ending in '/' or "", [(file name, tag),
    ...]) with at most WALK_BATCH files of that one folder per batch (a folder may come in
    several batches): callers decide once per batch and build rows in C (comprehensions,
    `executemany`) instead of once per file. On local disk the names are scandir's (never
    empty, '.', '..', nor holding '/' or NUL); elsewhere keys as `Root.list_tags` gives them.
    `keys`: each file as (its key: folder + name, tag), built by the walk (no second tuple
    per file for callers that store keys)."""
    _fs, base = root.fs_path
    if not root.is_local:
        last, batch = None, []
        for key, tag in root.list_tags(prefix):
            if not key.isascii():  # a tar member's name that is not UTF-8
                key = _text(key)
            folder, slash, name = key.rpartition("/")
            folder += slash
            if folder != last or len(batch) >= WALK_BATCH:
                if batch:
                    yield last, batch  # type: ignore[misc]
                last, batch = folder, []
            batch.append((key if keys else name, tag))
        if batch:
            yield last, batch  # type: ignore[misc]
        return
    top = os.path.join(base, prefix) if prefix else base
    try:
        real = real_root(base)
    except OSError:
        return
    if prefix and link_leaves(real, top):
        folder, slash, name = prefix.rstrip("/").rpartition("/")
        yield folder + slash, [(folder + slash + name if keys else name, LINK_OUT)]
        return
    if not os.path.isdir(top):
        if prefix and os.path.isfile(top):
            st = os.stat(top)
            folder, slash, name = prefix.rpartition("/")
            yield folder + slash, [(prefix if keys else name, _tag(st))]
        return
    stack = [(top, prefix.rstrip("/") + "/" if prefix else "", ())]
    while stack:
        path, rel, above = stack.pop()
        for batch in _scan_folder(path, rel, above, stack, real, keys):
            yield rel, batch


# the tag of a symlink whose target is outside the root: listed without a stat through it (a
# size and time that are not the input's), never entered nor read - its item fails at the
# read ("a link that leads outside it", `storage._read_local`)
LINK_OUT = "link-outside"


def _tag(st: os.stat_result) -> str:
    """A local file's tag: "<size>-<mtime>", the mtime as `repr` of the float `st_mtime`
    (the text manifests hold: an incremental run compares it with the previous one)."""
    return f"{st.st_size}-{st.st_mtime}"


_BY_FD = os.scandir in os.supports_fd  # scandir(fd): stat by dir_fd + name
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8: no lone surrogate (Python's escape of a file
    name's undecodable bytes, or a JSON `\\ud800`), which SQLite and UTF-8 refuse."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(name: str) -> str:
    """A file name as listings keep it: a name that is not UTF-8 (from scandir or a tar
    member) gets its bytes as backslash escapes - a backslash name, which no listing pairs,
    reads or writes."""
    if is_utf8(name):
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _scan_folder(path: str, rel: str, above: tuple[tuple[int, int], ...],
                 stack: list[tuple[str, str, tuple[tuple[int, int], ...]]], real: str,
                 keys: bool = False) -> Iterator[list[tuple[str, str]]]:
    """The files of one local folder in batches of (name, `_tag`) (`keys`: (rel + name,
    tag)); its sub-folders go onto `stack`. The folder is scanned through a descriptor where
    the OS allows: each `stat` is then an `fstatat` of the bare name, not a lookup of the
    whole path. Symlinked folders are followed, except to a folder of `above` (the (device,
    inode) of the folders the walk came through: a loop); a folder that cannot be opened
    (gone, no permission, too many links) is left out. A symlink leading outside the root
    (`real`, its real path) is one file tagged `LINK_OUT`, never stat'ed through nor
    entered."""
    try:
        fd = os.open(path, _DIR_FLAGS) if _BY_FD else None
    except OSError:
        return
    try:
        st = os.stat(path if fd is None else fd)
        here = (st.st_dev, st.st_ino)
        if here in above:
            raise OSError("a loop")
        above += (here,)
        entries = os.scandir(path if fd is None else fd)
    except OSError:
        if fd is not None:
            os.close(fd)
        return
    is_dir = stat.S_ISDIR
    pre = rel if keys else ""
    batch: list[tuple[str, str]] = []
    append = batch.append
    try:
        with entries:
            for e in entries:
                raw = e.name
                name = raw if raw.isascii() else _text(raw)
                try:
                    if e.is_symlink() and link_leaves(real, os.path.join(path, raw)):
                        tag = LINK_OUT
                    elif e.is_dir():  # the entry's type: no stat unless a symlink
                        stack.append((os.path.join(path, raw), rel + name + "/", above))
                        continue
                    else:
                        st = e.stat()  # the one syscall per file (Linux scandir gives no size)
                        if is_dir(st.st_mode):  # a directory replaced a file meanwhile
                            continue
                        tag = f"{st.st_size}-{st.st_mtime}"  # `_tag`, inlined
                except OSError:
                    continue
                append((pre + name, tag))
                if len(batch) >= WALK_BATCH:
                    yield batch
                    batch = []
                    append = batch.append
    finally:
        if fd is not None:
            os.close(fd)
    if batch:
        yield batch


def rebase(root: Root, marker: str | Callable[[Root], bool]) -> Root:
    """The root to list: `root` itself when `marker` (a key, or a probe) is found there, else
    the one top-level folder of an archive that holds it (`proj/`, or `./` as written by
    `tar -C proj .`); a `.tar.gz`/`.tgz` URL is opened as a tar archive."""
    probe = marker if callable(marker) else (lambda r: r.exists(marker))
    url = root.url
    opts = dict(root.storage_options)
    if url.endswith((".tar.gz", ".tgz")) and "::" not in url:
        root = Root(f"tar://::{url}", opts)
        url = root.url
    if probe(root):
        return root
    fs, path = root.fs_path
    kind = {".tar": "tar", ".zip": "zip", ".tgz": "tar", ".tar.gz": "tar"}
    if "::" in url and url.startswith(("tar://", "zip://")):
        scheme, _, rest = url.partition("://")
        inner, _, target = rest.partition("::")
        if inner:
            return root
    else:
        scheme = next((v for k, v in kind.items() if url.endswith(k)), "")
        target = url
    if not scheme:
        return root
    try:
        tops = [p for p in fs.ls(path, detail=True) if p.get("type") == "directory"]
    except (FileNotFoundError, NotADirectoryError):
        return root
    names = [posixpath.basename(p["name"].rstrip("/")) or "." for p in tops]
    if "./" in [p["name"] for p in tops] or names == ["."]:
        names = ["."]
    if len(names) != 1:
        return root
    candidate = Root(f"{scheme}://{names[0]}::{target}", opts)
    return candidate if probe(candidate) else root


# ---------------------------------------------------------------------------- supervisely
def detect_format(root: Root) -> str:
    for name, probe in DETECTORS:
        if probe(root) or probe(rebase(root, probe)):
            return name
    raise InputError(
        f"Expected a dataset at {root.url}: a Supervisely project (meta.json at the root). "
        "Got no such file instead; name the format with --input-format if it is another."
    )


def list_supervisely(root: Root) -> Listing:
    base = rebase(root, sly.META_FILE)
    try:
        meta = base.read(sly.META_FILE)
    except FileNotFoundError:
        raise InputError(f"Expected {sly.META_FILE} at the root of {root.url}. Got none.") from None
    spool, count = fill_spool(lambda s: _spool_supervisely(s, base))
    return Listing(sly.NAME, sly.parse_meta(meta), count, lambda: _supervisely_refs(spool),
                   spool=spool, meta_json=meta, image_root=base if base != root else None)


def _supervisely_files(root: Root) -> Iterator[tuple[int, str, str, str]]:
    """(kind, dataset, name, tag) of each image (kind 0, name: its file name, key
    `_img_key`) and annotation (kind 1, name: its file name without '.json', key `_ann_key`)
    file of the project."""
    last, kind, ds, ok = None, -1, "", False
    local = root.is_local  # scandir names: never empty, '.', '..', nor with '/' or NUL
    for folder, fname, tag in iter_folder_tags(root):
        if folder != last:  # decided once per folder: the files of a folder come together
            last, ok = folder, False
            ds, _, sub = folder[:-1].rpartition("/")
            if ds and sub in (sly.IMG_DIR, sly.ANN_DIR) and safe_key(folder[:-1]):
                ok = next(iter(sly.dataset_dirs([ds])), None) is not None
                kind = 0 if sub == sly.IMG_DIR else 1
        if not ok:
            continue
        unsafe = ("\\" in fname) if local else not safe_key(folder + fname)
        if unsafe:
            continue  # a key that could escape (tar members): never read, never written
        if kind == 0:
            yield 0, ds, fname, tag
        elif fname.endswith(".json"):
            yield 1, ds, fname[: -len(".json")], tag


def _img_key(ds: str, name: str) -> str:
    return f"{ds}/{sly.IMG_DIR}/{name}"


def _ann_key(ds: str, name: str) -> str:
    return f"{ds}/{sly.ANN_DIR}/{name}.json"


_NO_ANN = "no annotation file in ann/ for this image"


def _spool_supervisely(spool: Spool, root: Root) -> int:
    """The project's images and annotation files in two tables, each with a covering index
    in (dataset, name) order (`_supervisely_refs` merges them); returns the item count."""
    spool.execute("CREATE TABLE files (kind INT, ds TEXT, name TEXT, tag TEXT)")
    spool.insert("INSERT INTO files VALUES (?, ?, ?, ?)", _supervisely_files(root))
    spool.execute("CREATE INDEX files_order ON files (kind, ds, name, tag)")
    orphans = sum(1 for ds, name in spool.rows(
        "SELECT a.ds, a.name FROM files a WHERE a.kind = 1 AND NOT EXISTS "
        "(SELECT 1 FROM files i WHERE i.kind = 0 AND i.ds = a.ds AND i.name = a.name)")
        if _legacy_owner(spool, ds, name) is None)
    return orphans + spool.scalar("SELECT count(*) FROM files WHERE kind = 0")


def _has(spool: Spool, kind: int, ds: str, name: str) -> bool:
    return spool.scalar("SELECT 1 FROM files WHERE kind = ? AND ds = ? AND name = ?",
                        (kind, ds, name)) is not None


def _legacy_owner(spool: Spool, ds: str, stem: str) -> str | None:
    """The image that takes the legacy annotation `<stem>.json` when no image is named
    `<stem>`: the first image `<stem>.<ext>` (in name order) without `<stem>.<ext>.json`."""
    for (other,) in spool.rows("SELECT name FROM files WHERE kind = 0 AND ds = ? AND "
                               "name >= ? AND name < ? ORDER BY name",
                               (ds, stem + ".", stem + "/")):  # the names starting '<stem>.'
        if "." not in other[len(stem) + 1:] and not _has(spool, 1, ds, other):
            return other
    return None


def _supervisely_refs(spool: Spool) -> Iterator[ItemRef]:
    """Images joined with their annotation by `sly.ann_names_for` (`a.jpg.json`, else legacy
    `a.json` when no image is named `a` and no earlier image took it), and the annotations
    left over (items without an image): one merge of the two sorted lists, in (dataset,
    name) order; the rare image without its `a.jpg.json` asks the spool (`_legacy_owner`)."""
    order = "SELECT ds, name, tag FROM files WHERE kind = ? ORDER BY ds, name"
    anns = spool.rows(order, (1,))
    ann = next(anns, None)

    def orphan() -> Iterator[ItemRef]:  # `ann` names no image: an item, unless legacy
        if _legacy_owner(spool, ann[0], ann[1]) is None:
            yield ItemRef(ann[0], ann[1], _ann_key(ann[0], ann[1]), None, ann_tag=ann[2])

    for ds, name, tag in spool.rows(order, (0,)):
        key = _img_key(ds, name)
        while ann is not None and (ann[0], ann[1]) < (ds, name):
            yield from orphan()
            ann = next(anns, None)
        if ann is not None and ann[0] == ds and ann[1] == name:
            yield ItemRef(ds, name, _ann_key(ds, name), key, ann_tag=ann[2], image_tag=tag)
            ann = next(anns, None)
            continue
        legacy = sly.ann_names_for(name)[1][: -len(".json")]
        got = None
        if legacy != name and not _has(spool, 0, ds, legacy) and \
                _legacy_owner(spool, ds, legacy) == name:
            got = spool.db.execute("SELECT tag FROM files WHERE kind = 1 AND ds = ? AND "
                                   "name = ?", (ds, legacy)).fetchone()
        if got is not None:
            yield ItemRef(ds, name, _ann_key(ds, legacy), key, ann_tag=got[0], image_tag=tag)
        else:
            yield ItemRef(ds, name, None, key, _NO_ANN, image_tag=tag)
    while ann is not None:
        yield from orphan()
        ann = next(anns, None)


# Detection order matters: the first probe that answers True names the input format.
def _detect_cvat(root: Root) -> bool:
    from . import listing_cvat
    return listing_cvat.detect(root)


def _detect_coco(root: Root) -> bool:
    from .listing_coco import detect_coco
    return detect_coco(root)


def _list_cvat(root: Root) -> Listing:
    from . import listing_cvat
    return listing_cvat.list_cvat(root)


def _list_coco(root: Root, images_url: str | None = None, *,
               limits: Limits = DEFAULT_LIMITS) -> Listing:
    from .listing_coco import list_coco
    return list_coco(root, images_url=images_url, limits=limits)


DETECTORS: list[tuple[str, Callable[[Root], bool]]] = [
    ("supervisely", lambda root: root.exists(sly.META_FILE)),
    ("cvat", _detect_cvat),
    ("coco", _detect_coco),  # last: any JSON file or folder of JSONs
]
LISTERS: dict[str, Callable[..., Listing]] = {
    "supervisely": list_supervisely,
    "cvat": _list_cvat,
    "coco": _list_coco,
}
TAKES_IMAGES_URL = ("coco",)  # listers whose images may live elsewhere (config images_url)
TAKES_LIMITS = ("coco",)  # listers that build annotation text (bounded by the job's limits)


def read_annotation(root: Root, ref: ItemRef) -> bytes:
    """An item's annotation bytes: inline, its object, or with `ann_more` all its objects
    packed (`pack_parts`: a Segmentation Mask item is a class PNG and an object PNG)."""
    if ref.ann_inline is not None:
        return ref.ann_inline
    data = root.read(ref.ann_key or "")
    if ref.ann_more:
        data = pack_parts([data, *(root.read(k) for k in ref.ann_more)])
    return data


HEAD_BYTES = 1 << 16  # an image header (JPEG: markers before the frame) fits, as a rule


def read_image_size(root: Root, key: str, limits: Limits) -> tuple[int, int]:
    """(width, height) of the image at `key` from its header, checked against `limits`
    (`check_image_header`, before anything is decoded), for an item whose annotation lacks
    its size (SPEC 3). Reads the first `HEAD_BYTES`, the whole object (bounded as by `read`)
    only when a longer header needs it. ItemError naming the key when there is no such file."""
    try:
        head = root.read_head(key, HEAD_BYTES)
        try:
            return check_image_header(head, limits, what=f"image {key}")
        except ItemError:
            if len(head) < HEAD_BYTES:
                raise
        return check_image_header(root.read(key), limits, what=f"image {key}")
    except FileNotFoundError:
        raise ItemError(expected("the image size in the annotation or an image file to read "
                                 "it from", f"no size and no image file {key}")) from None


def list_input(root: Root, input_format: str = "auto", images_url: str | None = None, *,
               limits: Limits = DEFAULT_LIMITS) -> Listing:
    """The listing of INPUT (InputError when the input is not understood, including an input
    of the named format that holds no item: never an "ok" run over nothing). `limits`: the
    job's (a COCO image whose annotation text exceeds `max_annotation_bytes` fails alone)."""
    fmt = detect_format(root) if input_format == "auto" else input_format
    if fmt not in LISTERS:
        raise InputError(f"Expected an input format in {sorted(LISTERS)}. Got {fmt!r} instead.")
    if images_url is not None and fmt not in TAKES_IMAGES_URL:
        raise InputError(f"Expected images_url only for {list(TAKES_IMAGES_URL)} inputs. Got "
                         f"it for a {fmt} input instead.")
    kw: dict[str, Any] = {} if images_url is None else {"images_url": images_url}
    if fmt in TAKES_LIMITS:
        kw["limits"] = limits
    got = LISTERS[fmt](root, **kw)
    if got.count == 0:
        got.close()
        raise InputError(f"Expected at least one item in the {fmt} input {root.url}. Got none: "
                         "the input holds no item of that format (check the layout and "
                         "--input-format).")
    return got
