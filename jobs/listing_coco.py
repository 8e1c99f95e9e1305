"""List a COCO instances input: find the JSON file(s), split them per image on disk, find the
images.

INPUT is a JSON file, or a folder holding COCO JSONs at its top, else under `annotations/`
(COCO 2017: `annotations/instances_val2017.json` + `val2017/`). In a folder, every
`instances_*.json` is a dataset (named by `coco.dataset_name`: `instances_val2017.json` ->
`val2017`); a single JSON of another name is used as well; several JSONs none of which is
`instances_*` is an InputError (give the file itself).

Each JSON is streamed, never loaded: read once, a block of whole list elements at a time decoded
by msgspec (`_Sections`); a file that pass gives up on (NaN, odd numbers or layout) is read
again with ijson (C backend), a pass per list, and a file ijson refuses (NaN/Infinity, which
Python's json and pycocotools accept) is loaded whole. Images and annotations go into the
listing's on-disk spool: images into rows, annotations through an external sort by image id
(`jobs/external_sort.py`) into one row per image id (`_groups`: at most `max_annotation_bytes`
of it), SQLite joins each image with its group, and each item's `ann_inline` is its own small
JSON (`{"image", "annotations" in file order, "categories" it uses}`, what `coco.parse_item`
reads), built when the refs are streamed. A file whose records are plain (`_plain_images` /
`_plain_anns`) and in order - file names, their stems (as `stem + "."`: the names' order) and
integer image ids increasing, annotations' image ids never decreasing, as CVAT and most tools
export - skips the join: its decoded blocks are stored as they are (msgpack, one spool row per
block) and its refs come from one merge of them with the images folder's listing in key order
(`_sorted_refs`), the same refs the join gives (tests/jobs/test_listing_coco.py,
tests/jobs/test_listing_toolfiles.py). A file not in order whose image records are all plain
with integer ids (COCO 2017's own layout) takes no SQLite row either: `_SortJoin` sorts its
records and annotations by id (`Runs`), merge-joins them and sorts the records by name
(tests/jobs/test_listing_coco_sortjoin.py); a later record only rows take (a string id...)
has the file read again into rows (`_Restart`). The cyclic collector is paused while listing
(`_gc_paused`). Per-image problems (no id, duplicate id, file name or
output stem - the stem rule is `Item.stem` -, a name that could escape) fail that image alone;
annotations naming no image are counted and logged. An images folder inside another one of the
run is listed once (with the outer one).

Images: `file_name` (sub-folders allowed, e.g. `v1.0/a.jpg`) is resolved under the images
folder of its dataset: the first of `images/` beside the JSON, `images/` beside its folder,
`images/<dataset>/` in either place (datumaro), `<dataset>/` in either place (COCO 2017) that
holds the dataset's first image; `images_url` from the job config (absolute, or relative to the
JSON's folder) replaces the search. Each images folder is listed once (never a request per
item): an image missing from the listing fails its item with that reason. Image keys are
relative to `Listing.image_root`, the folder the JSON's folder sits in (or `images_url`).
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import gc
import hashlib
import itertools
import json
import logging
import operator
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import Any

import ijson
import msgspec

from maskcore.errors import InputError, expected
from maskcore.formats import coco
from maskcore.limits import DEFAULT_LIMITS, Limits

from . import listing
from .external_sort import Runs
from .spool import Spool
from .storage import Root, common_path, norm_path, rel_path

log = logging.getLogger("maskjob")

IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
MAX_CATEGORIES = 1 << 16
IMAGES, ANNOTATIONS, CATEGORIES = "images", "annotations", "categories"  # the lists we read
_DUMPS = {"separators": (",", ":"), "ensure_ascii": False, "allow_nan": True}
_dumps = json.JSONEncoder(**_DUMPS).encode  # json.dumps(x, **_DUMPS) without a new encoder
_encode = msgspec.json.Encoder().encode  # ~10x faster (see `_json`)


def _json(value: Any) -> bytes:
    """Compact JSON of a value ijson parsed: msgspec writes json's text (separators
    (',', ':'), UTF-8 kept) except floats in exponent form ('1e16', '1.5e-7' where json writes
    '1e+16', '1.5e-07': the same values; such an item's ann_tag changes once against a
    manifest of an older version); json's encoder for what msgspec refuses (ints beyond 64
    bits). A file loaded whole (NaN) keeps json's encoder (`_CocoFile.encode`): msgspec would
    write NaN as null."""
    try:
        return _encode(value)
    except (OverflowError, TypeError, msgspec.EncodeError):
        return _dumps(value).encode()


def _json_whole(value: Any) -> bytes:
    return _dumps(value).encode()


def _json_files(root: Root) -> list[str]:
    """Paths of the JSON files that may be COCO files: INPUT itself, the folder's top
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


def _choose(root: Root, files: list[str]) -> list[str]:
    """The COCO files of a run: the only JSON, else every `instances_*.json`."""
    if len(files) == 1:
        return files
    instances = [f for f in files if posixpath.basename(f).startswith(coco.INSTANCES_PREFIX)]
    if instances:
        return instances
    names = [posixpath.basename(f) for f in files]
    raise InputError(f"Expected one COCO JSON, or instances_*.json files, in {root.url}. Got "
                     f"{len(names)} other JSON files instead ({names[:10]}); give the JSON "
                     "file itself as INPUT.")


def _open(fs: Any, path: str) -> Any:
    """The file, read from after its UTF-8 BOM if it has one (Windows tools write one; json
    skips it, ijson and the msgspec pass would not: such a file was loaded whole)."""
    f = fs.open(path, "rb")
    if f.read(3) != codecs.BOM_UTF8:
        f.seek(0)
    return f


def _items(fs: Any, path: str, prefix: str, where: str) -> Iterator[Any]:
    try:
        with _open(fs, path) as f:
            yield from ijson.items(f, prefix, use_float=True)
    except (ijson.JSONError, ValueError) as e:  # overlong UTF-8, an int of 5000 digits
        raise InputError(f"{where}: " + expected("valid JSON", str(e).splitlines()[0])) from None


def _top_keys(fs: Any, path: str, where: str) -> Iterator[str]:
    """The keys of the file's top-level object, in order: ijson's events whose prefix is ''
    (filtered in C: ~2x the cost of a C `items` pass; only files the msgspec pass gave up on).
    Only for a file an `items` pass read whole: ijson 3.6's `parse` segfaults on an integer
    of more digits than Python converts (`items` raises ValueError)."""
    with _open(fs, path) as f:
        try:
            for _, event, value in itertools.filterfalse(operator.itemgetter(0),
                                                         ijson.parse(f)):
                if event == "map_key":
                    yield value
        except (ijson.JSONError, ValueError) as e:
            raise InputError(f"{where}: " + expected("valid JSON",
                                                     str(e).splitlines()[0])) from None


# a `\uXXXX` escape of a surrogate that is not half of a pair: yajl (ijson) writes '?' for a
# lone high one - a file_name would silently name another image - and bytes Python cannot
# decode for a lone low one; json keeps it, so such a file is loaded whole (`_load_slow`)
_LONE_SURROGATE = re.compile(  # starting with a literal '\\u': ~10x faster to scan (~200 MB/s)
    rb"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD])[c-fC-F][0-9a-fA-F]{2})")
_SCAN = 1 << 20


def _has_lone_surrogate(fs: Any, path: str) -> bool:
    """Whether the file may hold a lone surrogate escape (an escaped backslash before 'u'
    counts too: such a file is merely loaded whole). Read a block at a time; a match in a
    block's last 12 bytes is decided with the next block."""
    with fs.open(path, "rb") as f:
        buf, start = b"", 0
        while True:
            chunk = f.read(_SCAN)
            buf += chunk
            edge = len(buf) if not chunk else len(buf) - 12
            if any(start <= m.start() < edge for m in _LONE_SURROGATE.finditer(buf)):
                return True
            if not chunk:
                return False
            keep = buf[-18:]  # 6 bytes of look-behind before the undecided 12
            buf, start = keep, max(0, edge - (len(buf) - len(keep)))


_load_whole = coco.load_document  # a file ijson refuses (NaN): json, as the split reads it


def _key(v: object) -> str | None:
    """An image id as a join key: 1 and "1" stay different ids; a string with a lone
    surrogate (a file json loaded whole) as the hex of its code units, which SQLite takes."""
    if type(v) is int:
        return str(v)
    if isinstance(v, str):
        return "s:" + v if listing.is_utf8(v) else "u:" + v.encode("utf-8", "surrogatepass").hex()
    if isinstance(v, int) and not isinstance(v, bool):
        return str(int(v))
    return None


def _ann_key(v: object) -> str | None:
    """An annotation's image_id as a join key: `_key`, or the key of the integer id a bool
    or an integral float stands for (`coco.id_alias`: the item then fails, not an empty mask)."""
    key = _key(v)
    if key is None and (alias := coco.id_alias(v)) is not None:
        return str(alias)
    return key


# ---------------------------------------------------------------------------- fast path
class _Slow(Exception):
    """The fast reader gives up on this file: the caller re-reads it with ijson."""


class _Restart(Exception):
    """A file in the sort join met a record only rows take: the caller reads it again
    (`_CocoFile.sort_join` off)."""


_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(rb"[^,}\] \t\n\r]+")
_AT_BYTE = re.compile(r"\(byte (\d+)\)")
_DIGIT_TO_0 = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_INT = b"0" * 19  # 19 digits in a row, maybe beyond 64 bits: ijson refuses, msgspec would not


def _long_int(text: bytes) -> bool:
    """Whether `text` holds a run of 19+ digits (bytes.translate + find: ~10x faster than
    a regex search over a block)."""
    return _LONG_INT in text.translate(_DIGIT_TO_0)
_decode = msgspec.json.Decoder().decode
_LISTS = (IMAGES, ANNOTATIONS, CATEGORIES)


class _Sections:
    """One pass over a COCO file (a top-level object), yielding `(key, elements)` for the
    arrays at its top level, decoded by msgspec a block of whole elements at a time: a
    block ends at a '}' followed by ',' or ']', and `[` + block + `]` decodes only when that
    '}' closes an element (a cut inside a string or a nested value leaves it unterminated),
    so a wrong guess is a DecodeError and an earlier '}' is tried. Anything else (a
    top-level value that is not an object, arrays of non-objects, a lexical error such as
    NaN, a number msgspec refuses, an integer of 19+ digits - ijson refuses those beyond 64
    bits, so such a file is loaded whole -, a block beyond `MAX_BLOCK`) raises `_Slow`: the
    file is then read with ijson as before, so the fast path never decides what an input
    means, and records are written as before."""

    BLOCK = 1 << 18  # ~2-4k elements: the decoded block is a few MB of Python objects
    MAX_BLOCK = 16 << 20  # a larger element (a huge RLE) is left to ijson
    TRIES = 8

    def __init__(self, f: Any, where: str = "COCO JSON") -> None:
        self.f, self.buf, self.pos, self.eof = f, b"", 0, False
        self.where = where

    def _fill(self, need: int) -> bool:
        """At least `need` bytes after pos (False at the end of the file)."""
        while len(self.buf) - self.pos < need and not self.eof:
            chunk = self.f.read(max(need, self.BLOCK))
            self.eof = not chunk
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0
        return len(self.buf) - self.pos >= need

    def _char(self) -> bytes:
        """The next non-blank byte (b"" at the end), not consumed."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._fill(1):
                return self.buf[self.pos:self.pos + 1]

    def _token(self, pattern: re.Pattern[bytes]) -> bytes:
        size = 256
        while True:
            self._fill(size)
            m = pattern.match(self.buf, self.pos)
            if m and (m.end() < len(self.buf) or self.eof):
                self.pos = m.end()
                return m.group()
            if size > self.MAX_BLOCK or self.eof:
                raise _Slow
            size *= 4

    def _expect(self, char: bytes) -> None:
        if self._char() != char:
            raise _Slow
        self.pos += 1

    def __iter__(self) -> Iterator[tuple[str, list[Any]]]:
        self._expect(b"{")
        seen: list[str] = []
        if self._char() == b"}":
            self.pos += 1
        else:
            while True:
                if self._char() != b'"':
                    raise _Slow
                key = self._value(self._token(_STRING))
                if key in _LISTS:
                    seen.append(key)
                    coco.check_top_keys(seen, self.where)
                self._expect(b":")
                c = self._char()
                if key in _LISTS and c != b"[":
                    raise _Slow  # ijson's prefixes would match inside an object
                if c == b"[":
                    self.pos += 1
                    for elements in self._elements():
                        yield key, elements
                elif c == b'"':
                    self._value(self._token(_STRING))
                elif c == b"{":
                    self._object()
                else:
                    self._value(self._token(_SCALAR))
                c = self._char()
                self.pos += 1
                if c == b"}":
                    break
                if c != b",":
                    raise _Slow
        if self._char() != b"":
            raise _Slow  # trailing bytes: ijson words the error

    @staticmethod
    def _value(text: bytes) -> Any:
        try:
            got = _decode(text)
        except (msgspec.DecodeError, RecursionError):
            raise _Slow from None
        if _long_int(text):
            raise _Slow  # such a file is loaded whole and written with json's encoder
        return got

    def _object(self) -> None:
        """Skip a top-level object value (e.g. "info"): the shortest prefix that decodes,
        TRIES more '}' tried per round (each round reads more): an object holding many
        small ones is skipped too (trying the same first '}' each round gave up on it)."""
        size, tried = 4096, 0  # bytes after pos whose '}' were tried already
        while True:
            self._fill(size)
            end, more = self.pos + tried, True
            for _ in range(self.TRIES):
                end = self.buf.find(b"}", end, len(self.buf)) + 1
                if not end:
                    end, more = len(self.buf), False
                    break
                try:
                    _decode(self.buf[self.pos:end])
                except RecursionError:
                    raise _Slow from None
                except msgspec.DecodeError:
                    continue
                if _long_int(self.buf[self.pos:end]):
                    raise _Slow  # as in `_value`
                self.pos = end
                return
            if (self.eof and not more) or size > self.MAX_BLOCK:
                raise _Slow
            size, tried = size * 4, end - self.pos

    def _elements(self) -> Iterator[list[Any]]:
        """The elements of the array whose '[' was just read, a decoded block at a time."""
        size = self.BLOCK
        while self._char() != b"]":
            self._fill(size)
            got = self._block()
            if got is None:
                if self.eof or size > self.MAX_BLOCK:
                    raise _Slow
                size *= 2
                continue
            size = self.BLOCK
            yield got
            if self._char() == b",":
                self.pos += 1
                if self._char() == b"]":
                    raise _Slow  # a trailing comma
        self.pos += 1

    def _block(self) -> list[Any] | None:
        """Whole elements from pos up to the last '}' that decodes as their end (None: no
        such '}' in the buffer)."""
        buf, end, wrong = self.buf, len(self.buf), False
        for _ in range(self.TRIES):
            cut = buf.rfind(b"}", self.pos, end)
            if cut < 0:
                break
            end = cut
            after = _WS.match(buf, cut + 1).end()
            if after >= len(buf) or buf[after] not in b",]":
                continue
            text = b"[" + buf[self.pos:cut + 1] + b"]"
            try:
                got = _decode(text)
            except RecursionError:
                raise _Slow from None  # nested deeper than msgspec goes: ijson's call
            except msgspec.DecodeError as e:
                m = _AT_BYTE.search(str(e))
                if "truncated" in str(e) or (m and int(m.group(1)) >= len(text) - 1):
                    continue  # the cut is inside an element
                if not m:
                    raise _Slow from None  # a number msgspec refuses
                # the list ends before that byte (the cut was beyond it), or is wrong there
                end, wrong = min(end, self.pos + int(m.group(1)) - 1), True
                continue
            if _long_int(text):
                raise _Slow  # as in `_value`
            self.pos = cut + 1
            return got
        if wrong:
            raise _Slow  # no whole element before the error: NaN, a lexical error...
        return None


class _CocoFile:
    """One JSON of the run: its dataset, classes, its first image's name, and its items."""

    def __init__(self, root: Root, path: str, base: str) -> None:
        self.path = path
        self.where = posixpath.relpath(path, base) if path != base else posixpath.basename(path)
        self.dataset = coco.dataset_name(path)
        self.fs = root.fs
        self.doc: dict[str, Any] | None = None
        self.encode = _json
        self.cats: list[Any] = []
        self.by_id: dict[Any, str] = {}
        self.cat_json: list[bytes] = []
        self.cat_at: dict[Any, int] = {}
        self.first: str | None = None
        self.prefix = ""  # of image keys: the images folder relative to `Listing.image_root`
        self.orphans = 0
        # whether image ids / stems / names increase strictly in file order (so none repeats)
        # and annotations' image ids never decrease: known for blocks of plain records only,
        # decided by `_increasing`
        self.increasing = dict.fromkeys(ORDERS, True)
        self.last: dict[str, Any] = {}
        # the records are in the spool's `blocks` (`_store`), not in rows: while every
        # block is plain and in order (`in_order`), see `_sorted_refs`
        self.blocks = True
        self.stored = False  # some block was stored
        self.anns: Runs | None = None  # (image id key, category id, JSON) of rows, by key
        # a file not in order whose image records are plain with integer ids: images and
        # annotations sorted by id (integer keys), joined by `_SortJoin`, never SQLite rows
        self.join: _SortJoin | None = None
        self.sort_join = SORT_JOIN  # False after `_Restart`: the file goes to rows

    @property
    def in_order(self) -> bool:
        return all(self.increasing.values())

    def _unordered(self, spool: Spool, *, join: bool = False) -> None:
        """Some record is not plain: the file's records go into rows (`demote`), or with
        `join` (an annotation) the sort join if the file may take it."""
        self.increasing = dict.fromkeys(ORDERS, False)
        self.demote(spool, join=join)

    def demote(self, spool: Spool, *, join: bool = False) -> None:
        """Leave the in-order path: with `join` (every image record so far plain, with an
        integer id) for the sort join if allowed, else for the images / anns rows the careful
        path reads (`_image_block_rows` / `_ann_block_rows`); the blocks stored so far are
        moved there, in file order. A file in the sort join that needs rows is read again
        (`_Restart`)."""
        if self.join is not None:
            if not join:
                raise _Restart
            return
        if not self.blocks:
            return  # rows already: they stay
        self.blocks = False
        if join and self.sort_join:
            self.join = _SortJoin(spool)
        if not self.stored:
            return
        self.stored = False
        for (rowid,) in list(spool.rows("SELECT rowid FROM blocks WHERE ds = ? ORDER BY "
                                        "rowid", (self.dataset,))):
            kind, seq, ids, data, stems = spool.db.execute(
                "SELECT kind, seq, ids, data, stems FROM blocks WHERE rowid = ?", (rowid,)
            ).fetchone()
            first, texts = _unpack(data)
            if kind == IMAGE_BLOCK:
                self.image_block(spool, (first, _unpack(ids), texts, _unpack(stems)), seq)
            else:
                self.ann_block(spool, (_unpack(ids), first, texts))
        spool.execute("DELETE FROM blocks WHERE ds = ?", (self.dataset,))

    def _store(self, spool: Spool, kind: int, *, seq: int, ids: list[int], first: list[Any],
               texts: list[bytes], stems: list[str] | None = None) -> None:
        """One block of plain records in file order: `first` is the names (images, with
        their `stems`: only `demote` reads them) or the category ids (annotations), `ids` the
        image ids."""
        spool.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                      (self.dataset, kind, seq, _pack(ids), _pack((first, texts)),
                       None if stems is None else _pack(stems)))
        self.stored = True

    def _reset(self, spool: Spool) -> None:
        """Forget what a pass stored (before the file is read again)."""
        for table in ("images", "blocks"):
            spool.execute(f"DELETE FROM {table} WHERE ds = ?", (self.dataset,))
        if self.anns is not None:
            self.anns.clear()
            self.anns = None  # its keys may change kind (`ann_block`)
        if self.join is not None:
            self.join.images.clear()  # (the other sorts are filled by `join` only)
        self.join = None
        self.cats, self.orphans, self.first = [], 0, None
        self.increasing = dict.fromkeys(ORDERS, True)
        self.last = {}
        self.blocks, self.stored = True, False

    def _read_fast(self, spool: Spool) -> int:
        with _open(self.fs, self.path) as f:
            at = f.tell()  # after a UTF-8 BOM
            coco.check_encoding(f.read(4), self.where)  # before any pass or whole load
            f.seek(at)
            return self._load_fast(spool, _Sections(f, self.where))

    def load(self, spool: Spool) -> int:
        """Stream the file's images and annotations into the spool and read its categories;
        returns the number of image records. One msgspec pass (`_Sections`); a file the sort
        join cannot take after all is read again for rows (`_Restart`); a file the msgspec
        pass gives up on is read again with ijson, a pass per list (`_load_slow`)."""
        try:
            try:
                count = self._read_fast(spool)
            except _Restart:
                self._reset(spool)
                self.sort_join = False
                count = self._read_fast(spool)
        except _Slow:
            self._reset(spool)
            self.increasing = dict.fromkeys(ORDERS, False)
            self.blocks = False
            count = self._load_slow(spool)
        self._check_categories()
        try:
            doc = json.dumps({"images": [], "annotations": [], "categories": self.cats}).encode()
        except RecursionError:
            raise InputError(f"{self.where}: " + expected(
                "categories of a sane nesting depth", "RecursionError")) from None
        self.classes = coco.parse_classes(doc)  # validates ids and names (InputError)
        self.by_id = {c["id"]: c["name"] for c in self.cats}
        # each category's `[id, name]` JSON, and its position by its id as an item's
        # `used` ids may hold it (as decoded, or as the anns table keeps it: `_cid_column`)
        self.cat_json = [_dumps(pair).encode() for pair in self.by_id.items()]
        self.cat_at = {key: k for k, cid in enumerate(self.by_id)
                       for key in (cid, _cid_column(cid))}
        return count

    def _check_categories(self) -> None:
        if len(self.cats) > MAX_CATEGORIES:
            raise InputError(f"{self.where}: " + expected(
                f"at most {MAX_CATEGORIES} categories", "more"))

    def _load_fast(self, spool: Spool, sections: _Sections) -> int:
        seq = {IMAGES: 0, ANNOTATIONS: 0}
        for key, elements in sections:
            if key == IMAGES:
                plain = _plain_images(self, elements)
                if plain is None:
                    self._unordered(spool)
                    spool.insert(IMAGES_SQL, _image_rows(self, elements, seq[key]))
                elif self.in_order and self.blocks:
                    names, ids, texts, stems = plain
                    if self.first is None:
                        self.first = names[0]  # no record of such a file has a problem
                    self._store(spool, IMAGE_BLOCK, seq=seq[key], ids=ids, first=names,
                                texts=texts, stems=stems)
                else:
                    self.demote(spool, join=type(plain[1][0]) is int)
                    self.image_block(spool, plain, seq[key])
            elif key == ANNOTATIONS:
                plain = _plain_anns(self, elements)
                if plain is None:
                    self._unordered(spool, join=True)
                    self.ann_rows(spool, _ann_rows(self, elements, ints=self.join is not None))
                elif self.in_order and self.blocks:
                    ids, cids, texts = plain
                    self._store(spool, ANN_BLOCK, seq=seq[key], ids=ids, first=cids,
                                texts=texts)
                else:
                    self.demote(spool, join=True)
                    self.ann_block(spool, plain)
            elif key == CATEGORIES:
                self.cats.extend(elements)
                self._check_categories()
            if key in seq:
                seq[key] += len(elements)
        if not self.in_order:
            self.demote(spool, join=True)  # every image record stored is plain, ids int
        return seq[IMAGES]

    def image_block(self, spool: Spool, block: tuple[list[str], list[Any], list[bytes],
                                                     list[str]], start: int) -> None:
        """A block of plain image records (`_plain_images`), out of the in-order path: into
        the sort join (its ids are integers then: `demote`) or into rows."""
        if self.join is None:
            spool.insert(IMAGES_SQL, _image_block_rows(self, block, start))
            return
        names, ids, texts, _stems = block
        if self.first is None:
            self.first = names[0]  # the join's records are plain: the first has no problem
        self.join.images.add(zip(ids, itertools.count(start), names, texts))

    def ann_block(self, spool: Spool, block: tuple[list[int], list[Any], list[bytes]]
                  ) -> None:
        """A block of plain annotations (`_plain_anns`), out of the in-order path: keyed
        by the integer image id in the sort join, by `_key` for rows."""
        rows = zip(*block) if self.join is not None else _ann_block_rows(block)  # noqa: B905
        self.ann_rows(spool, rows)

    def _load_slow(self, spool: Spool) -> int:
        try:  # this pass reads the whole file: a lexical error shows here
            if _has_lone_surrogate(self.fs, self.path):
                raise InputError("a lone surrogate: ijson would change it")
            self.cats = list(itertools.islice(
                _items(self.fs, self.path, CATEGORIES + ".item", self.where),
                MAX_CATEGORIES + 1))
            if len(self.cats) <= MAX_CATEGORIES:  # that pass read all: `_top_keys` is safe
                coco.check_top_keys(_top_keys(self.fs, self.path, self.where), self.where)
        except coco.RepeatedList:
            raise
        except InputError:
            # NaN/Infinity are not JSON, but Python's json (hence pycocotools) accepts them:
            # such a file is loaded whole, as before (the item with the NaN fails alone)
            self.doc = _load_whole(self.fs.cat_file(self.path), self.where)
            self.encode = _json_whole
            self.cats = self.doc[CATEGORIES]
        self._check_categories()
        count = spool.insert(IMAGES_SQL, _image_rows(self, self.items(IMAGES)))
        self.ann_rows(spool, _ann_rows(self, self.items(ANNOTATIONS)))
        return count

    def ann_rows(self, spool: Spool, rows: Iterable[tuple[str, Any, bytes]]) -> None:
        """Annotation rows of the careful path, added in file order (`_ann_rows`)."""
        if self.anns is None:
            self.anns = Runs(spool)
        self.anns.add(rows)

    def items(self, key: str) -> Iterator[Any]:
        """The elements of the file's top-level list `key`, streamed."""
        if self.doc is not None:
            yield from self.doc[key]
        else:
            yield from _items(self.fs, self.path, key + ".item", self.where)


IMAGES_SQL = "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
IMAGE_BLOCK, ANN_BLOCK = 0, 1  # kinds of `blocks` rows
ORDERS = ("idk", "stem", "name", "ann")  # `_CocoFile.increasing`
_pack = msgspec.msgpack.Encoder().encode  # a block: a few C calls, not a row per record
_unpack = msgspec.msgpack.Decoder().decode
GROUPS_SQL = "INSERT INTO groups VALUES (?, ?, ?, ?)"


DUP_ID, DUP = "=dup id", "=dup stem"  # problems decided in SQL, worded when streamed


def _image_rows(cf: _CocoFile, records: Iterable[Any], start: int = 0
                ) -> Iterator[tuple[Any, ...]]:
    """(dataset, name, seq, id key, record JSON, problem, ann_key, stem) of each image
    record (`start` is the first one's seq); duplicate ids, names and stems are decided
    afterwards in SQL (`_first_wins`)."""
    for k, rec in enumerate(records, start):
        raw = rec.get("file_name") if isinstance(rec, dict) else None
        name = raw if isinstance(raw, str) and raw else f"images[{k}]"
        idk = _key(rec.get("id")) if isinstance(rec, dict) else None
        problem = None
        if idk is None:
            problem = expected("an image record with an integer or string 'id'", rec)
        elif not isinstance(raw, str) or not raw:
            problem = expected("a non-empty 'file_name'", raw)
        elif not listing.is_utf8(raw):  # a lone surrogate (json keeps it): no file has that name
            name = raw.encode("utf-8", "backslashreplace").decode()
            problem = expected("a file_name in valid Unicode", name)
        elif not listing.safe_key(raw):
            problem = expected(
                "a file_name relative to the images folder (no '..', not absolute)", raw)
        text = _encoded(cf, rec)
        if isinstance(text, str):
            idk, text, problem = None, b"null", problem or expected(
                "an image record of a sane nesting depth in valid Unicode", text)
        yield (cf.dataset, name, k, idk, text, problem, cf.where,
               listing.stem(name) if problem is None else None)


def _encoded_all(values: list[Any]) -> list[bytes] | None:
    """`_json` of each value of a msgspec-decoded block, by one map in C (None: some value
    needs `_encoded`'s care, e.g. nested too deep)."""
    try:
        return list(map(_encode, values))
    except (RecursionError, OverflowError, TypeError, msgspec.EncodeError):
        return None


_STEM_ORDER = operator.add


def _plain_images(cf: _CocoFile, records: list[Any]
                  ) -> tuple[list[str], list[Any], list[bytes], list[str]] | None:
    """(file names, ids, record JSONs, stems) of a decoded block, built by maps in C, when
    every record is an object with an int (or else a string) id and a non-empty, safe
    file_name (None otherwise: then `_image_rows` decides each record); keeps
    `cf.increasing` up to date."""
    if set(map(type, records)) != {dict}:
        return None
    names = list(map(dict.get, records, itertools.repeat("file_name")))
    if set(map(type, names)) != {str} or "" in names or not all(map(listing.safe_key, names)):
        return None
    ids = list(map(dict.get, records, itertools.repeat("id")))
    kinds = set(map(type, ids))
    if kinds != {int} and kinds != {str}:
        return None
    texts = _encoded_all(records)
    if texts is None:
        return None
    stems = list(map(listing.stem, names))
    _increasing(cf, "idk", ids if kinds == {int} else None)
    # stems compared as `stem + "."`, the order their names sort in: 'img (1).jpg' comes
    # before 'img.jpg' (datumaro's / CVAT's frame order), 'img (1).' before 'img.' too, while
    # 'img (1)' > 'img'; strictly increasing, they are still all different
    _increasing(cf, "stem", list(map(_STEM_ORDER, stems, itertools.repeat("."))))
    _increasing(cf, "name", names)
    return names, ids, texts, stems


def _image_block_rows(cf: _CocoFile, block: tuple[list[str], list[Any], list[bytes],
                                                     list[str]], start: int
                      ) -> Iterator[tuple[Any, ...]]:
    """The `_image_rows` of a block of plain records (`_plain_images`: names, ids, JSONs,
    stems), built in C."""
    names, ids, texts, stems = block
    idks = map(str, ids) if type(ids[0]) is int else map("s:".__add__, ids)
    return zip(itertools.repeat(cf.dataset), names, itertools.count(start), idks, texts,
               itertools.repeat(None), itertools.repeat(cf.where),
               stems)


def _increasing(cf: _CocoFile, column: str, values: list[Any] | None) -> None:
    """Keep `cf.increasing[column]` only while the values (None: not comparable) increase
    (strictly, but for ORDERS' non-strict "ann") from the last block's on (in C)."""
    if values is None:
        cf.increasing[column] = False
    if not cf.increasing[column] or not values:
        return
    last = cf.last.get(column)
    lt = operator.le if column == "ann" else operator.lt
    cf.increasing[column] = (last is None or lt(last, values[0])) and all(
        map(lt, values, itertools.islice(values, 1, None)))
    cf.last[column] = values[-1]


def _plain_anns(cf: _CocoFile, anns: list[Any]
                ) -> tuple[list[int], list[Any], list[bytes]] | None:
    """(image ids, category ids, annotation JSONs) of a decoded block built in C, when every
    annotation is an object with an int image_id and an int or string category_id (None
    otherwise: then `_ann_rows` decides each); keeps `cf.increasing["ann"]` up to date."""
    if set(map(type, anns)) != {dict}:
        return None
    ids = list(map(dict.get, anns, itertools.repeat("image_id")))
    cids = list(map(dict.get, anns, itertools.repeat("category_id")))
    if set(map(type, ids)) != {int} or not set(map(type, cids)) <= {int, str}:
        return None
    texts = _encoded_all(anns)
    if texts is None:
        return None
    _increasing(cf, "ann", ids)
    return ids, cids, texts


def _ann_block_rows(block: tuple[list[int], list[Any], list[bytes]]
                    ) -> Iterator[tuple[Any, ...]]:
    """The `_ann_rows` of a block of plain annotations (`_plain_anns`), built in C."""
    ids, cids, texts = block
    return zip(map(str, ids), cids, texts)  # noqa: B905 (equal lengths)


TOO_DEEP = b""  # an annotation `_encoded` could not write: its image fails (`_refs`)


def _encoded(cf: _CocoFile, value: Any) -> bytes | str:
    """The record's JSON, else why the encoders cannot write it (hostile): nested too
    deep, or a lone surrogate (a file json loaded whole)."""
    try:
        return cf.encode(value)
    except (RecursionError, UnicodeEncodeError) as e:
        return type(e).__name__


_INT64 = range(-1 << 63, 1 << 63)


def _cid_column(cid: Any) -> Any:
    """A category id as the anns table keeps it: SQLite integers are 64-bit, so a larger one
    is kept as its decimal text (`_refs` matches it so); a string SQLite cannot take (a lone
    surrogate) names no category (ids are integers): None."""
    if type(cid) is int:
        return cid if cid in _INT64 else str(cid)
    return cid if not isinstance(cid, str) or listing.is_utf8(cid) else None


def _first_wins(spool: Spool, cfs: list[_CocoFile]) -> bool:
    """The rules of `coco.split_dataset`: a later record of an id fails (its annotations go
    to the first); of the records left, the first of each output stem wins and the others
    fail (same file name, or same stem). Returns whether some id repeats. Ids or stems
    that increase strictly in every file (`_increasing`) are known not to repeat."""
    spool.execute("CREATE INDEX images_id ON images (ds, idk, seq)")
    dup_ids = not all(cf.increasing["idk"] for cf in cfs) and _repeats(spool, "idk")
    if dup_ids:  # the UPDATEs visit every row: only when there is a repeat
        spool.execute("UPDATE images SET problem = ? WHERE idk IS NOT NULL AND seq > "
                      "(SELECT min(j.seq) FROM images j WHERE j.ds = images.ds AND "
                      "j.idk = images.idk)", (DUP_ID,))
    if all(cf.increasing["stem"] for cf in cfs):
        return dup_ids
    spool.execute("CREATE INDEX images_stem ON images (ds, stem, seq)")
    if _repeats(spool, "stem"):
        spool.execute("UPDATE images SET problem = ? WHERE problem IS NULL AND seq > "
                      "(SELECT min(j.seq) FROM images j WHERE j.ds = images.ds AND "
                      "j.stem = images.stem AND j.problem IS NULL)", (DUP,))
    return dup_ids


def _repeats(spool: Spool, column: str) -> bool:
    """Whether two image records of a dataset share `column` (one scan of its index)."""
    return spool.scalar(f"SELECT 1 FROM images WHERE {column} IS NOT NULL GROUP BY ds, "
                        f"{column} HAVING count(*) > 1 LIMIT 1") is not None


def _worded(spool: Spool, ds: str, name: str, rec: bytes | None, problem: str) -> str:
    if problem == DUP_ID:  # (rec None: longer than the item cap, not read)
        return expected("unique image ids", "a repeated id" if rec is None else
                        json.loads(rec)["id"])
    if problem == DUP:
        first = spool.scalar("SELECT name FROM images WHERE ds = ? AND stem = ? AND "
                             "problem IS NULL", (ds, listing.stem(name)))
        if first == name:
            return expected("unique file names", name)
        return expected("one image per file stem (masks are named <stem>.png)",
                        f"{name} and {first}")
    return problem


def _ann_rows(cf: _CocoFile, anns: Iterable[Any], *, ints: bool = False
             ) -> Iterator[tuple[Any, ...]]:
    """(image id key, category id, annotation JSON) of each annotation; with `ints` (the
    sort join: every image id is an integer) the key is the integer image id, and an
    annotation of another id is an orphan already."""
    for ann in anns:
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        # (sort join: a bool or an integral float joins the id it stands for, coco.id_alias)
        idk = (iid if type(iid) is int else coco.id_alias(iid)) if ints else _ann_key(iid)
        if idk is None:
            cf.orphans += 1
            continue
        cid = ann.get("category_id")
        text = _encoded(cf, ann)
        yield (idk, _cid_column(cid) if _key(cid) else None,
               TOO_DEEP if isinstance(text, str) else text)


def _images_dir(fs: Any, json_path: str, dataset: str, first: str | None) -> str:
    """The first candidate images folder that holds `first` (else one that exists)."""
    here = posixpath.dirname(json_path)
    parent = posixpath.dirname(here) or here
    candidates = list(dict.fromkeys([
        posixpath.join(here, IMAGES_DIR), posixpath.join(parent, IMAGES_DIR),
        posixpath.join(here, IMAGES_DIR, dataset), posixpath.join(parent, IMAGES_DIR, dataset),
        posixpath.join(here, dataset), posixpath.join(parent, dataset),
    ]))
    chosen = None
    if first is not None:
        chosen = next((c for c in candidates if fs.isfile(posixpath.join(c, first))), None)
    if chosen is None:
        chosen = next((c for c in candidates if fs.isdir(c)), candidates[0])
    return chosen


def list_coco(root: Root, images_url: str | None = None, *,
              limits: Limits = DEFAULT_LIMITS) -> listing.Listing:
    files = _json_files(root)
    if not files:
        raise InputError(f"Expected a COCO instances JSON at {root.url} (the file, or a folder "
                         "holding it, also under annotations/). Got none instead.")
    fs, base = root.fs_path
    chosen = _choose(root, files)
    cfs = [_CocoFile(root, p, base) for p in chosen]
    datasets = [cf.dataset for cf in cfs]
    if len(set(datasets)) != len(datasets):
        raise InputError(f"{root.url}: " + expected("COCO files naming different datasets",
                                                    datasets))
    json_dir = posixpath.dirname(chosen[0])
    fixed = None
    if images_url:  # absolute, or relative to the JSON's folder
        fixed = Root(images_url if "://" in images_url or images_url.startswith("/") else
                     fs.unstrip_protocol(norm_path(posixpath.join(json_dir,
                                                                           images_url))),
                     dict(root.storage_options))
    spool = Spool()
    cap = limits.max_annotation_bytes
    try:
        with _gc_paused():
            count, image_root = _fill(spool, root, cfs, fixed=fixed, cap=cap)
    except BaseException:
        spool.close()
        raise
    return listing.Listing(coco.NAME, cfs[0].classes, count, lambda: _refs(spool, cfs, cap),
                           spool=spool, image_root=image_root)


IDS_SQL = "SELECT DISTINCT idk FROM images WHERE ds = ? AND idk IS NOT NULL"  # + ORDER BY idk


def _fill(spool: Spool, root: Root, cfs: list[_CocoFile], *, fixed: Root | None, cap: int
          ) -> tuple[int, Root]:
    """Stream every file into the spool, list each images folder once; returns the count and
    the root image keys are relative to (the common folder of the images folders). The
    annotations of a file read into rows are grouped per image id (`_groups`)."""
    fs = root.fs
    spool.execute("CREATE TABLE images (ds TEXT, name TEXT, seq INT, idk TEXT, rec BLOB, "
                  "problem TEXT, ann_key TEXT, stem TEXT)")
    # inserted in key order (`_groups`): appended to one B-tree, read by one lookup per image
    spool.execute("CREATE TABLE groups (ds TEXT, idk TEXT, over INT, data BLOB, "
                  "PRIMARY KEY (ds, idk)) WITHOUT ROWID")
    spool.execute("CREATE TABLE files (key TEXT, tag TEXT)")
    spool.execute("CREATE TABLE blocks (ds TEXT, kind INT, seq INT, ids BLOB, data BLOB, "
                  "stems BLOB)")
    count = sum(cf.load(spool) for cf in cfs)
    for cf in cfs[1:]:
        if cf.classes != cfs[0].classes:
            raise InputError(f"{cf.where}: " + expected(
                f"the categories of {cfs[0].where} (one class list per run)", "other ones"))
    folders = {}
    # no repeated id: no record is DUP_ID, and the image ids are read from images_id alone
    ids, dup = (IDS_SQL + " AND problem IS NOT ? ORDER BY idk", (DUP_ID,)) if _first_wins(
        spool, cfs) else (IDS_SQL + " ORDER BY idk", ())
    for cf in cfs:
        if cf.join is not None:
            cf.join.join(cf, cap)
        elif cf.anns is not None and not cf.blocks:
            spool.insert(GROUPS_SQL, _groups(cf, cf.anns.merged(), cap=cap, ids=spool.rows(
                ids, (cf.dataset, *dup))))
    for cf in cfs:
        if cf.blocks or cf.join is not None:  # `cf.first` is its first record
            folders[cf.dataset] = "" if fixed else _images_dir(fs, cf.path, cf.dataset, cf.first)
            continue
        # a file's records are inserted in seq order (the ijson re-read after a DELETE
        # too): rowid order is seq order, and the scan stops at the first match
        cf.first = spool.scalar("SELECT name FROM images WHERE ds = ? AND problem IS NULL "
                                "ORDER BY rowid LIMIT 1", (cf.dataset,))
        folders[cf.dataset] = "" if fixed else _images_dir(fs, cf.path, cf.dataset, cf.first)
    if fixed is not None:
        image_root = fixed
    else:
        top = common_path(list(folders.values()))
        image_root = Root(fs.unstrip_protocol(top), dict(root.storage_options))
        folders = {ds: rel_path(f, top) for ds, f in folders.items()}
    prefixes = {ds: "" if f in ("", ".") else f + "/" for ds, f in folders.items()}
    for cf in cfs:
        cf.prefix = prefixes[cf.dataset]
    listed: list[str] = []
    for prefix in sorted(set(prefixes.values())):  # each images folder listed once
        if any(map(prefix.startswith, listed)):
            continue  # a folder inside one listed already: its files are there (once)
        listed.append(prefix)
        spool.insert("INSERT INTO files VALUES (?, ?)",
                     listing.iter_tags(image_root, prefix.rstrip("/")))
    spool.execute("CREATE INDEX images_order ON images (ds, name, seq)")
    spool.execute("CREATE INDEX files_key ON files (key, tag)")
    for cf in cfs:
        if cf.blocks:
            cf.orphans += _sorted_orphans(spool, cf.dataset)
        if cf.orphans:
            log.warning("%s: %d annotations name no image of the file; they are not exported",
                        cf.where, cf.orphans)
    return count, image_root


def _blocks(spool: Spool, ds: str, kind: int) -> Iterator[tuple[list[Any], list[Any]]]:
    """(image ids, names or category ids + JSONs) of each stored block, in file order: one
    block read at a time (not `Spool.rows`' batches of rows: a block is thousands of records)."""
    cur = spool.db.execute("SELECT ids, data FROM blocks WHERE ds = ? AND kind = ? ORDER BY "
                           "rowid", (ds, kind))
    try:
        for ids, data in cur:
            yield _unpack(ids), data
    finally:
        cur.close()


def _sorted_orphans(spool: Spool, ds: str) -> int:
    """The annotations (image ids never decreasing) whose image id no record (ids
    increasing) has: one merge of the stored blocks, a set of one block of ids at a time."""
    images = (ids for ids, _data in _blocks(spool, ds, IMAGE_BLOCK))
    have = next(images, None)
    known = set(have or ())
    orphans = 0
    for ids, _data in _blocks(spool, ds, ANN_BLOCK):
        i = 0
        while i < len(ids):
            while have is not None and have[-1] < ids[i]:  # blocks wholly below: passed
                have = next(images, None)
                known = set(have or ())
            if have is None:
                orphans += len(ids) - i
                break
            j = bisect.bisect_right(ids, have[-1], i)  # ids[i:j] end within this block
            orphans += j - i - sum(map(known.__contains__, ids[i:j]))
            i = j
    return orphans


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (restored after, if it was on): a listing makes
    no reference cycles (refcounts free what it drops), and the collector's full passes,
    triggered by the millions of short-lived containers it decodes and sorts, cost ~25% of
    its CPU (`benchmarks/bench_listing.py --coco-order coco2017`)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


REFS_BATCH = 2048  # refs made with the collector paused (`_refs`): a few MB


def _refs(spool: Spool, cfs: list[_CocoFile], cap: int) -> Iterator[listing.ItemRef]:
    """`_all_refs`, made a batch at a time with the collector paused (`_gc_paused`); the
    caller's code between two refs runs with it on."""
    refs = _all_refs(spool, cfs, cap)
    while True:
        with _gc_paused():
            batch = list(itertools.islice(refs, REFS_BATCH))
        if not batch:
            return
        yield from batch


def _all_refs(spool: Spool, cfs: list[_CocoFile], cap: int) -> Iterator[listing.ItemRef]:
    """Every file's refs, in (dataset, name) order: from the stored blocks of a file whose
    records are in order (`_sorted_refs`), from the sort join (`_sort_joined_refs`), else
    from the SQLite join (`_joined_refs`). An image whose per-image JSON would exceed `cap`
    (the worker's `max_annotation_bytes`, which would refuse it) fails here."""
    cats: dict[tuple[str, frozenset[Any]], bytes] = {}  # the categories of a set of ids
    for cf in sorted(cfs, key=operator.attrgetter("dataset")):
        if cf.blocks:
            yield from _sorted_refs(spool, cf, cats, cap)
        elif cf.join is not None:
            yield from _sort_joined_refs(spool, cf, cats, cap)
        else:
            yield from _joined_refs(spool, cf, cats, cap)


def _sorted_refs(spool: Spool, cf: _CocoFile, cats: dict[tuple[str, frozenset[Any]], bytes],
                 cap: int) -> Iterator[listing.ItemRef]:
    """The refs of a file whose records are plain and in order (`_CocoFile.in_order`):
    names increasing are (dataset, name) order, each image's annotations follow each other
    (image ids increasing, theirs never decreasing) and the files are read in key order,
    so one merge of the three gives what `_joined_refs`' join gives, without it."""
    ds, prefix = cf.dataset, cf.prefix
    files = _Tags(spool, prefix)
    anns = _ann_stream(spool, ds)
    try:
        aid, cid, ann = next(anns, _END)
        for block_ids, data in _blocks(spool, ds, IMAGE_BLOCK):
            names, texts = _unpack(data)
            for name, iid, rec in zip(names, block_ids, texts):  # noqa: B905 (same lengths)
                key = prefix + name
                while aid is not None and aid < iid:  # an orphan (`_sorted_orphans`)
                    aid, cid, ann = next(anns, _END)
                group: list[bytes] = []
                used = set()
                while aid == iid:
                    group.append(ann)
                    used.add(cid)
                    aid, cid, ann = next(anns, _END)
                if len(rec) + sum(map(len, group)) + len(group) > cap:  # (held in a block)
                    yield listing.ItemRef(cf.dataset, name, cf.where, None,
                                          _over(cap, len(rec), map(len, group)))
                    continue
                yield _ref(cf, name, rec, (group, used, key, files.tag(key)), cats, cap)
    finally:
        files.close()
        anns.close()


_END = (None, None, None)


class _Tags:
    """The tags of the files of image keys asked in increasing order (None: no such file):
    one merge with the files table in key order (SQLite orders text as Python orders valid
    UTF-8), not a lookup per image."""

    def __init__(self, spool: Spool, prefix: str) -> None:
        self.rows = spool.rows("SELECT key, tag FROM files WHERE key >= ? ORDER BY key",
                               (prefix,))
        self.key, self.got = next(self.rows, (None, None))

    def tag(self, key: str) -> str | None:
        while self.key is not None and self.key < key:
            self.key, self.got = next(self.rows, (None, None))
        return self.got if self.key == key else None

    def close(self) -> None:
        self.rows.close()


def _ann_stream(spool: Spool, ds: str) -> Iterator[tuple[int, Any, bytes]]:
    for ids, data in _blocks(spool, ds, ANN_BLOCK):
        cids, texts = _unpack(data)
        yield from zip(ids, cids, texts)  # noqa: B905 (equal lengths)


def _ref(cf: _CocoFile, name: str, rec: bytes,
         found: tuple[list[bytes], set[Any], str, str | None],
         cats: dict[tuple[str, frozenset[Any]], bytes], cap: int) -> listing.ItemRef:
    """The ref of an image record without a problem of its own: `found` = (its
    annotations' JSONs in file order, their category ids (as decoded, or as the anns table
    keeps them: `_cid_column`), its image key, the tag of that file or None when the
    folder's listing has no such file)."""
    anns, used, image_key, image_tag = found
    ds = cf.dataset
    if TOO_DEEP in anns:
        return listing.ItemRef(ds, name, cf.where, None, expected(
            "annotations of a sane nesting depth in valid Unicode",
            "RecursionError or a lone surrogate"))
    ckey = (ds, frozenset(used))
    got = cats.get(ckey)
    if got is None:
        if len(cats) > 4096:
            cats.clear()
        at = cf.cat_at  # the categories used, in file order: a lookup per id used
        got = cats[ckey] = b"[" + b",".join(map(cf.cat_json.__getitem__, sorted(
            {at[cid] for cid in used if cid in at}))) + b"]"
    inline = b"".join((b'{"image":', rec, b',"annotations":[', b",".join(anns),
                       b'],"categories":', got, b"}"))
    if len(inline) > cap:  # its categories tipped it over
        return listing.ItemRef(ds, name, cf.where, None, _too_big(cap, f"{len(inline)} bytes"))
    tag = hashlib.md5(inline, usedforsecurity=False).hexdigest()
    if image_tag is None:
        return listing.ItemRef(ds, name, cf.where, None, expected(
            f"the image file {image_key} (one listing of its folder)", "no such file"),
            ann_inline=inline, ann_tag=tag)
    return listing.ItemRef(ds, name, cf.where, image_key, ann_inline=inline, ann_tag=tag,
                           image_tag=image_tag)


def _too_big(cap: int, got: str) -> str:
    return expected(f"an image's annotations (its per-image JSON) of at most {cap} bytes "
                    "(limits.max_annotation_bytes)", got)


def _over(cap: int, rec: int, sizes: Iterable[int]) -> str:
    """Why an image whose record is `rec` bytes and annotations `sizes` bytes long is over
    `cap`, in `_joined_refs`' words."""
    if rec > cap:
        return _too_big(cap, "a longer image record")
    total, n = rec, 0
    for size in sizes:
        total += size + 1
        n += 1
        if total > cap:
            break
    return _too_many(cap, n)


def _too_many(cap: int, n: int) -> str:
    """The words for an image that the `n`-th of its annotations took past `cap`."""
    return _too_big(cap, f"more ({n}+ annotations)")


def _groups(cf: _CocoFile, rows: Iterator[Any], *, cap: int, ids: Iterator[tuple[str]]
            ) -> Iterator[tuple[Any, ...]]:
    """The `GROUPS_SQL` row of each image id of a file's annotation rows (sorted by id,
    file order kept): the category ids and JSONs of the first ones whose
    JSONs (and a comma each) fit in `cap` - `over` when more follow (the image fails:
    `_joined_refs`), so a group never holds more than `cap`. The annotations of an id no
    image has (`ids`: the ids of the file's images, increasing as SQLite orders text, which
    is Python's order of valid UTF-8) are counted in `cf.orphans` and not stored."""
    ds = cf.dataset
    have = next(ids, None)
    for idk, group in itertools.groupby(rows, _GROUP_KEY):
        while have is not None and have[0] < idk:
            have = next(ids, None)
        if have is None or have[0] != idk:
            cf.orphans += sum(1 for _ in group)
            continue
        cids, texts, over = _capped(group, cap)
        yield ds, idk, over, _pack((cids, texts))


def _capped(group: Iterable[Any], cap: int) -> tuple[list[Any], list[bytes], int]:
    """(category ids, JSONs, over) of the first annotation rows (key, category id, JSON) of
    a group whose JSONs (and a comma each) fit in `cap`; `over` is 1 when more follow (the
    rest of the group is not read)."""
    cids, texts, total = [], [], 0
    for _idk, cid, text in group:
        total += len(text) + 1
        if total > cap:
            return cids, texts, 1
        cids.append(cid)
        texts.append(text)
    return cids, texts, 0


_GROUP_KEY = operator.itemgetter(0)


def _joined_refs(spool: Spool, cf: _CocoFile, cats: dict[tuple[str, frozenset[Any]], bytes],
                 cap: int) -> Iterator[listing.ItemRef]:
    """The refs of a file read into rows: images joined with their file and their group of
    annotations (`_groups`). The driver never holds more than `cap` of one image: a group
    holds at most that, and a record longer than `cap` is never read from the spool (its
    length is)."""
    files = _Tags(spool, cf.prefix)
    try:
        yield from _joined(spool, cf, cats, cap, files)
    finally:
        files.close()


def _joined(spool: Spool, cf: _CocoFile, cats: dict[tuple[str, frozenset[Any]], bytes],
            cap: int, files: _Tags) -> Iterator[listing.ItemRef]:
    rows = spool.rows(
        f"SELECT i.name, CASE WHEN length(i.rec) <= {int(cap)} THEN i.rec END, "
        "i.problem, g.data, g.over FROM images i "
        "LEFT JOIN groups g ON i.problem IS NULL AND g.ds = i.ds AND g.idk = i.idk "
        "WHERE i.ds = ? ORDER BY i.name, i.seq", (cf.dataset,))
    for name, rec, problem, data, over in rows:
        if problem is not None:
            yield listing.ItemRef(cf.dataset, name, cf.where, None,
                                  _worded(spool, cf.dataset, name, rec, problem))
            continue
        group = _unpack(data) if data is not None else None  # (a LEFT JOIN's null: none)
        yield _grouped_ref(cf, name, rec, (group, over), (cats, cap, files))


def _grouped_ref(cf: _CocoFile, name: str, rec: bytes | None,
                 group: tuple[tuple[list[Any], list[bytes]] | None, int],
                 ctx: tuple[dict[tuple[str, frozenset[Any]], bytes], int, _Tags]
                 ) -> listing.ItemRef:
    """The ref of an image record without a problem of its own (None: longer than `cap`,
    never read) and its group ((category ids, JSONs) of its first annotations, None when it
    has none; `over`: more followed, `_capped`)."""
    cats, cap, files = ctx
    if rec is None:
        return listing.ItemRef(cf.dataset, name, cf.where, None,
                               _too_big(cap, "a longer image record"))
    data, over = group
    anns, used, total = [], set(), len(rec)
    if data is not None:
        for cid, ann in zip(*data):  # noqa: B905 (equal lengths)
            total += len(ann) + 1
            if total > cap:
                break
            anns.append(ann)
            used.add(cid)
        else:
            total += over * (cap + 1)  # the next one: over `cap` with no record at all
    if total > cap:
        return listing.ItemRef(cf.dataset, name, cf.where, None,
                               _too_many(cap, len(anns) + 1))
    image_key = cf.prefix + name
    return _ref(cf, name, rec, (anns, used, image_key, files.tag(image_key)), cats, cap)


# ------------------------------------------------------------ files not in order: sort join
SORT_JOIN = True  # tests turn it off to compare with the rows + SQLite join
OUT_RUN = 1 << 13  # rows per run of `_SortJoin.out` (an image with its annotations each)


class _SortJoin:
    """A file not in order whose image records are all plain with integer ids (COCO 2017's
    own layout): no SQLite row, no index. Its records (id, seq, name, JSON) and its
    annotation rows (`_CocoFile.anns`: image id, category id, JSON) are each sorted by
    integer image id (`Runs`), then `join` merges the two: the first record of an id gets
    the id's annotations (`_capped`), a later one fails (`_first_wins`' rule), annotations
    of no record are orphans; each record goes to `out`, sorted by (name, seq), and the
    stem of each record without a problem to `stems`, sorted by (stem, seq): a later record of a
    stem fails (`losers`, by (name, seq)). `_sort_joined_refs` reads `out` and `losers`,
    kept sorted, as often as asked. The driver holds a run of each at most."""

    def __init__(self, spool: Spool) -> None:
        self.images = Runs(spool)  # (id, seq, name, JSON)
        self.out = Runs(spool, OUT_RUN)  # ((name, seq), JSON | None, problem, group, over)
        self.stems = Runs(spool)  # ((stem, seq), name)
        self.losers = Runs(spool)  # ((name, seq), problem)
        self.stem_rows: list[tuple[tuple[str, int], str]] = []

    def join(self, cf: _CocoFile, cap: int) -> None:
        self.out.add(self._records(cf, cap))
        self.stems.add(self.stem_rows)
        for _stem, rows in itertools.groupby(self.stems.merged(), _stem_key):
            first = next(rows)[1]
            self.losers.add(((name, seq), expected("unique file names", name) if name == first
                             else expected("one image per file stem (masks are named "
                                           "<stem>.png)", f"{name} and {first}"))
                            for (_stem, seq), name in rows)  # noqa: B031 (the rest)

    def _records(self, cf: _CocoFile, cap: int) -> Iterator[tuple[Any, ...]]:
        """The `out` rows of the records (by id) joined with the annotations (by image id);
        the `stems` rows go to `stem_rows`, added a batch at a time."""
        anns = itertools.groupby(cf.anns.merged() if cf.anns is not None else (), _GROUP_KEY)
        aid, group = next(anns, (None, None))
        stem, self.stem_rows = listing.stem, []
        for iid, records in itertools.groupby(self.images.merged(), _GROUP_KEY):
            while aid is not None and aid < iid:
                cf.orphans += sum(1 for _ in group)
                aid, group = next(anns, (None, None))
            found, over = None, 0
            if aid == iid:
                cids, texts, over = _capped(group, cap)
                found = (cids, texts)
                aid, group = next(anns, (None, None))
            _iid, seq, name, rec = next(records)
            yield (name, seq), rec if len(rec) <= cap else None, None, found, over
            self.stem_rows.append(((stem(name), seq), name))
            if len(self.stem_rows) >= STEM_BATCH:
                self.stems.add(self.stem_rows)
                self.stem_rows = []
            for _iid, seq, name, rec in records:  # noqa: B031 (the rest)
                yield (name, seq), None, expected(
                    "unique image ids", iid if len(rec) <= cap else "a repeated id"), None, 0
        while aid is not None:
            cf.orphans += sum(1 for _ in group)
            aid, group = next(anns, (None, None))


STEM_BATCH = 4096


def _stem_key(row: tuple[tuple[str, int], str]) -> str:
    return row[0][0]


def _sort_joined_refs(spool: Spool, cf: _CocoFile,
                      cats: dict[tuple[str, frozenset[Any]], bytes], cap: int
                      ) -> Iterator[listing.ItemRef]:
    """The refs of a file in the sort join (`_SortJoin`), in (name, seq) order."""
    assert cf.join is not None
    files = _Tags(spool, cf.prefix)
    losers = cf.join.losers.kept()
    try:
        lost, why = next(losers, (None, None))
        ds, where = cf.dataset, cf.where
        for (name, seq), rec, problem, group, over in cf.join.out.kept():
            if lost is not None and lost[1] == seq:
                problem = why
                lost, why = next(losers, (None, None))
            if problem is not None:
                yield listing.ItemRef(ds, name, where, None, problem)
            elif rec is not None and group is not None and not over and len(rec) + sum(
                    map(len, group[1])) + len(group[1]) <= cap and TOO_DEEP not in group[1]:
                # the usual image: all its annotations fit (their JSONs joined in C, as
                # `_ref` would join them)
                key = cf.prefix + name
                yield _ref(cf, name, rec, ([b",".join(group[1])], frozenset(group[0]), key,
                                           files.tag(key)), cats, cap)
            else:
                yield _grouped_ref(cf, name, rec, (group, over), (cats, cap, files))
    finally:
        files.close()
