"""Output clashes, found at plan time before any work (SPEC 4: no silent overwrite).

Every writer declares, without rendering, the keys an item will use (`planned_keys(dataset,
name, opts)`) and the sidecars it writes at finalize (`reserved_keys(opts)`), as
`maskcore.paths.Planned` (files, folders, shared files); the job adds its own (`manifest.*`,
`_manifest/`, `preview.html`). An item CLASHES when, in any requested format:
- one of its files or folders is also a file or folder of another item or a sidecar (same key:
  `a.png` + `a.jpg` share the stem `a`; two CVAT subsets holding `x.jpg`), or a shared file
  (a list file, a zarr group node);
- one of its keys lies inside another item's file or folder, or inside a sidecar file (an image
  `x` beside a folder `x/`; a dataset named `meta.json`), or another item's key or a sidecar
  lies inside one of its files or folders (a zarr group inside another item's array).
Shared files may be declared any number of times (a group node is made once, or is an item's
own group node).

The rule (one, documented in the README): every item of a clash fails, with a reason naming
the key and the other items (up to three, then a count); sidecars are not items and stay.
A renaming was considered and refused: whether `a.jpg` would be renamed depends on whether
`a.bmp` exists, so adding one image would move another image's outputs between nightly runs,
and a renamed mask no longer matches its image by stem in the tools that read these formats.
Items whose dataset, name or any planned key breaks the name rules (`paths.key_problem`:
control characters, components over 255 bytes, '..', absolute, ...) fail with that reason too,
and take no part in the detection. Items that already carry a problem from listing are skipped.

Speed: a PLAIN name (`maskcore.formats.base.plain_name`: printable ASCII, no '/', '\\' or
':', not starting with '.') takes the writers' `key_template(dataset, opts)`, made once per
dataset: its rows are made per batch of items (one join and one replace per key of the
template), with one stem per item for all formats; the other names take `planned_keys` (the
templates are checked against it on hostile names in the tests).

Bounded memory at any scale: the keys are sorted externally as ONE str per row (the key, NUL,
its tag in hex: str compares only), '/' stored as '\\x01' so a folder's contents sort right
after it, in runs of a bounded number of rows sorted in memory, spilled to a temporary folder
as UTF-8 lines and merged (MAX_RUNS at a time) in blocks taken in the order of their first
rows; ONE ordered pass with a stack of the declared ancestors of the current key finds every
clash, and looks only at the keys next to a same or nested key (`_interesting`). Every item's
name goes to a file in the same folder, and only the failing items' names into an SQLite
database there with the reasons and clash rows (bounded page cache). The report streams the
problems back in input order (`annotate`) or answers one item (`problem`).

    with detect_clashes(refs, formats=spec.formats, options=options) as report:
        refs = list(report.annotate(refs))
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import sqlite3
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from heapq import heapify, heappop, heappush
from itertools import chain, compress, groupby, islice
from operator import itemgetter, or_
from types import TracebackType
from typing import Any, NamedTuple

from maskcore.errors import ItemError, expected
from maskcore.formats import FORMATS
from maskcore.formats.base import NAME_MARK, STEM_MARK, plain_name
from maskcore.paths import MAX_COMPONENT_BYTES, Planned, key_problem

from . import scratch
from .listing import ItemRef
from .manifest_store import MANIFEST_DIR, MANIFEST_LINES, MANIFEST_SUMMARY
from .preview import PREVIEW_FILE

SEP = "\x01"  # stands for '/' in stored keys (control characters never pass the name rules)
FILE, FOLDER, SHARED = 0, 1, 2
SIDECARS = 0  # owner of the sidecars; items are 1, 2, ... in input order
NAMED = 3  # other items named in a reason
BATCH = 50_000
ROW_BYTES = 120  # memory of one row (a str, see `_row`) in a run being sorted, roughly
RUN_BLOCK = 2048  # rows per block of a spilled run (the merge holds ~2 per run)
MAX_RUNS = 32  # runs merged at once (open files, merge memory); more make a level more
KIND_SHIFT = 40  # a row's tag is kind << KIND_SHIFT | owner: rows sort by key, kind, owner
OWNER_MASK = (1 << KIND_SHIFT) - 1
JOB_RESERVED = Planned(files=(MANIFEST_LINES, MANIFEST_SUMMARY, PREVIEW_FILE),
                       folders=(MANIFEST_DIR,))
# relations between an item's key and the other side, for the reasons
SAME, SAME_SIDECAR, IN_FILE, IN_FOLDER, HOLDS = range(5)


def _stored(text: str) -> str | bytes:
    """`text` as the database keeps it: bytes (surrogates passed) if SQLite cannot take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _loaded(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def _display(dataset: str, name: str) -> str:
    shown = f"{dataset}/{name}"
    return shown if len(shown) <= 120 else shown[:117] + "..."


class ClashReport:
    """The items that fail at plan time, with their reasons (read from the database)."""

    def __init__(self, db: sqlite3.Connection, folder: str, *, items: int, problems: int,
                 spilled_bytes: int = 0) -> None:
        self._db, self._folder = db, folder
        self.items, self.problems = items, problems
        self.spilled_bytes = spilled_bytes  # most temporary disk the sorted runs took at once

    def problem(self, dataset: str, name: str) -> str | None:
        row = self._db.execute("SELECT reason FROM result WHERE dataset = ? AND name = ? "
                               "ORDER BY id LIMIT 1", (_stored(dataset), _stored(name))
                               ).fetchone()
        return row[0] if row else None

    def failures(self) -> Iterator[tuple[int, str, str, str]]:
        """(position in the refs from 0, dataset, name, reason), in input order."""
        for i, ds, name, reason in self._db.execute(
                "SELECT id, dataset, name, reason FROM result ORDER BY id"):
            yield i - 1, _loaded(ds), _loaded(name), reason

    def annotate(self, refs: Iterable[ItemRef]) -> Iterator[ItemRef]:
        """`refs` (the same sequence, in the same order, as given to `detect_clashes`), each
        failing one with its `problem` set and no `previous` line (never carried forward)."""
        pending = self.failures()
        nxt = next(pending, None)
        for pos, ref in enumerate(refs):
            if nxt is not None and nxt[0] == pos:
                if (ref.dataset, ref.name) != nxt[1:3]:
                    raise ValueError("Expected the refs given to detect_clashes, in the same "
                                     f"order. Got {ref.dataset}/{ref.name} at position {pos}.")
                yield dataclasses.replace(ref, problem=nxt[3], previous=None)
                nxt = next(pending, None)
            else:
                yield ref

    def close(self) -> None:
        self._db.close()
        scratch.remove(self._folder)

    def __enter__(self) -> ClashReport:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                 ) -> None:
        self.close()


def _open_db(folder: str, cache_mib: int) -> sqlite3.Connection:
    """The database of the failing items: an eighth of `cache_mib` of page cache (it holds
    only failing items, written in id order; sorts spill to temporary files)."""
    db = sqlite3.connect(os.path.join(folder, "clashes.sqlite"), isolation_level=None)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE",
                   "locking_mode = EXCLUSIVE", f"cache_size = -{cache_mib * 1024 // 8}"):
        db.execute(f"PRAGMA {pragma}")
    db.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, dataset TEXT, name TEXT);
        CREATE TABLE bad (id INTEGER PRIMARY KEY, reason TEXT);
        CREATE TABLE clash (item INTEGER, other INTEGER, key TEXT, other_key TEXT,
                            relation INTEGER, more INTEGER);
        CREATE TABLE result (id INTEGER PRIMARY KEY, dataset TEXT, name TEXT, reason TEXT);
    """)
    return db


_dataset_problem = lru_cache(maxsize=1024)(key_problem)  # refs come grouped by dataset


Planner = tuple[str, Any, Any]  # (format, its planned_keys, its options)


def _plan_item(ref: ItemRef, planners: list[Planner]) -> list[Planned] | str:
    """The item's declarations in every format, or the reason it cannot be planned (its
    keys are checked by `_keys_problem`)."""
    for what, problem in (("dataset", _dataset_problem(ref.dataset)),
                          ("image name", key_problem(ref.name))):
        if problem:
            return f"{what}: {problem}"
    planned = []
    for f, planned_keys, opts in planners:
        try:
            planned.append(planned_keys(ref.dataset, ref.name, opts))
        except ItemError as e:
            return f"{f}: {e}"
        except Exception as e:  # a name no writer can place: this item only
            return f"{f}: " + expected("a name the writer can place", f"{type(e).__name__}: "
                                       f"{str(e)[:200]}")
    return planned


def _keys_problem(keys: list[str]) -> str | None:
    """Why one of an item's `keys` cannot be an output key, or None. Built by the writers
    from a valid dataset and name, so only lengths can be wrong: every key of at most
    MAX_COMPONENT_BYTES ASCII characters passes at once."""
    if max(map(len, keys), default=0) <= MAX_COMPONENT_BYTES and "".join(keys).isascii():
        return None
    for key in keys:
        problem = key_problem(key)
        if problem:
            return f"output key {key[:200]!r}: {problem}"
    return None


def detect_clashes(refs: Iterable[ItemRef], *, formats: Sequence[str],
                   options: Mapping[str, Any], workdir: str | None = None,
                   cache_mib: int = 64) -> ClashReport:
    """Find the items that must fail at plan time (see the module docstring); one pass over
    `refs`, memory bounded by `cache_mib` whatever their number (the rest is on disk under
    `workdir`, default the system's temporary folder; removed by `ClashReport.close`)."""
    folder = scratch.make("maskjob-clashes-", workdir)
    try:
        db = _open_db(folder, cache_mib)
        keys = _KeyRuns(folder, max_rows=cache_mib * 2**20 // ROW_BYTES)
        names = _Names(folder)
        items = _insert(db, keys, names, refs, formats=formats, options=options)
        _scan(db, keys.blocks())
        keys.remove()
        db.execute("BEGIN")
        names.load(db)
        db.execute("COMMIT")
        problems = _reasons(db)
    except BaseException:
        scratch.remove(folder)
        raise
    return ClashReport(db, folder, items=items, problems=problems,
                       spilled_bytes=keys.peak_bytes)


# A row is ONE str: the key ('/' stored as SEP) + NUL + its tag in TAG_HEX hex digits, so rows
# sort as (key, tag) pairs do (no key holds NUL: a shorter key sorts first) with str compares
# only (list.sort compares 1-byte strings with memcmp), and a run is its rows joined by '\n'.
Row = str
TAG_HEX = 11  # kind << KIND_SHIFT | owner < 16 ** TAG_HEX
TAG_LEN = TAG_HEX + 1


def _row(key: str, tag: int) -> Row:
    return f"{key}\x00{tag:0{TAG_HEX}x}"


def _unrow(row: Row) -> tuple[str, int]:
    return row[:-TAG_LEN], int(row[-TAG_HEX:], 16)


class _KeyRuns:
    """Rows sorted externally: add them, then read them in order (key, then kind, then
    owner) with `blocks`. At most `max_rows` are held; more are spilled as sorted runs and
    merged."""

    def __init__(self, folder: str, *, max_rows: int) -> None:
        self.folder, self.max_rows = folder, max(max_rows, RUN_BLOCK)
        self.spilled = 0
        self.bytes = self.peak_bytes = 0  # of the runs on disk
        self.rows: list[Row] = []
        self.runs: list[tuple[int, str]] = []  # (level: how many merges made it, file)

    def add(self, keys: list[str], tags: list[int]) -> None:
        """Rows of `keys` (with '/') and their tags; empties both lists."""
        self.add_text([_row(k.replace("/", SEP), t) for k, t in zip(keys, tags, strict=True)])
        keys.clear(), tags.clear()

    def add_text(self, text: list[str]) -> None:
        """Rows given as text (one or more per string, joined by '\\n'); empties `text`."""
        if text:
            self.rows += "\n".join(text).split("\n")
            text.clear()
        if len(self.rows) >= self.max_rows:
            self._spill()

    def _spill(self) -> None:
        self.rows.sort()
        self.runs.append((0, self._write(self.rows)))
        self.rows.clear()
        # MAX_RUNS runs of one level become one of the next (each row is rewritten once per
        # level: log(runs) / log(MAX_RUNS) times in all)
        while len(self.runs) >= MAX_RUNS and len({lv for lv, _ in self.runs[-MAX_RUNS:]}) == 1:
            level, group = self.runs[-1][0], [p for _, p in self.runs[-MAX_RUNS:]]
            del self.runs[-MAX_RUNS:]
            merged = _merged(group, step=self.max_rows // 4)
            self.runs.append((level + 1, self._write(chain.from_iterable(merged))))
            for path in group:
                self._delete(path)

    def _write(self, rows: Iterable[Row]) -> str:
        path = os.path.join(self.folder, f"keys-{self.spilled:05d}.rows")
        self.spilled += 1
        with open(path, "wb") as f:
            it = iter(rows)
            while block := list(islice(it, RUN_BLOCK)):
                data = "\n".join(block).encode("utf-8", "surrogatepass")
                f.write(len(data).to_bytes(8, "little") + data)
                self.bytes += 8 + len(data)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        return path

    def _delete(self, path: str) -> None:
        self.bytes -= os.path.getsize(path)
        os.remove(path)

    def blocks(self) -> Iterator[list[Row]]:
        """Every row, in order, in lists."""
        if not self.runs:
            self.rows.sort()
            return iter([self.rows])
        if self.rows:
            self._spill()
        return _merged([p for _, p in self.runs], step=self.max_rows // 4)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        """Every row as (key, tag), in order."""
        return map(_unrow, chain.from_iterable(self.blocks()))

    def remove(self) -> None:
        self.rows.clear()
        for _, path in self.runs:
            self._delete(path)
        self.runs.clear()


def _blocks(path: str) -> Iterator[bytes]:
    """The blocks of a spilled run, in order, as stored (UTF-8 rows joined by '\\n')."""
    with open(path, "rb") as f:
        while size := int.from_bytes(f.read(8), "little"):
            yield f.read(size)


def _first(block: bytes) -> Row:
    end = block.find(b"\n")
    return block[:end if end >= 0 else None].decode("utf-8", "surrogatepass")


def _merged(paths: list[str], *, step: int) -> Iterator[list[Row]]:
    """The rows of sorted runs, in order, in lists. Blocks are loaded in the order of their
    first rows (a heap of each run's next block), about `step` rows at a time; then every
    row below the first row of the next block to load is in memory: those are sorted (timsort
    merges the sorted pieces in C, O(log pieces) per row) and given out. What stays is at most
    the end of one block per run. Python works per block, not per row."""
    readers = [_blocks(p) for p in paths]
    heap = [(_first(b), i, b) for i, r in enumerate(readers) if (b := next(r, None))]
    heapify(heap)
    pending: list[Row] = []
    while heap:
        loaded = 0
        while heap and loaded < step:
            _, i, block = heappop(heap)
            rows = block.decode("utf-8", "surrogatepass").split("\n")
            pending += rows
            loaded += len(rows)
            if nxt := next(readers[i], None):
                heappush(heap, (_first(nxt), i, nxt))
        pending.sort()
        cut = bisect_left(pending, heap[0][0]) if heap else len(pending)
        yield pending[:cut]
        del pending[:cut]


class _Template(NamedTuple):
    """How the rows of the PLAIN items (`base.plain_name`) of one dataset are made in every
    format, from the writers' `key_template`s, for a batch of items at once (`_plain_rows`).
    Keys hold SEP already (a plain name has no '/')."""

    by_stem: tuple[tuple[str, str], ...]  # (prefix, mid): prefix + stem + mid + owner
    by_name: tuple[tuple[str, str], ...]  # the same with the name
    shared_by_stem: tuple[tuple[str, str], ...]  # (prefix, suffix): prefix + stem + suffix
    shared: str  # rows of the keys shared by every item of the dataset ('' if none)
    n_rows: int  # rows of one item
    odd_stems: frozenset[str]
    longest: int  # the longest plain name all of whose keys stay <= MAX_COMPONENT_BYTES


OWNER_HEX = KIND_SHIFT // 4
_OWNER = "\x05"  # stands for the owner's tag in a batch of rows being made


def _template(dataset: str, planners: list[Planner]) -> _Template | None:
    """The dataset's `_Template`, or None when its items take `_plan_item` (a dataset that
    breaks the rules, a writer that refuses it, a key that is not ASCII text)."""
    if _dataset_problem(dataset):
        return None
    parts: tuple[list[tuple[str, str]], ...] = ([], [], [])
    shared, odd, extra = [], set(), 0
    for f, _planned_keys, opts in planners:
        try:
            t = FORMATS[f].key_template(dataset, opts)
        except Exception:  # the writer refuses the dataset: its items say why
            return None
        odd |= t.odd_stems
        for kind, keys in ((FILE, t.planned.files), (FOLDER, t.planned.folders),
                           (SHARED, t.planned.shared)):
            for key in keys:
                marks = key.count(STEM_MARK), key.count(NAME_MARK)
                rest = key.replace(STEM_MARK, "").replace(NAME_MARK, "")
                if sum(marks) > 1 or not (rest.isascii() and rest.isprintable()):
                    return None
                key = key.replace("/", SEP)
                extra = max(extra, len(key) - sum(marks))
                if not sum(marks):  # shared by every item of the dataset
                    shared.append(_row(key, SHARED << KIND_SHIFT | SIDECARS))
                    continue
                prefix, _mark, suffix = key.partition(NAME_MARK if marks[1] else STEM_MARK)
                if kind == SHARED and marks[0]:
                    parts[2].append((prefix, _row(suffix, SHARED << KIND_SHIFT | SIDECARS)))
                elif kind == SHARED:
                    return None
                else:
                    parts[marks[1]].append(
                        (prefix, f"{suffix}\x00{kind:0{TAG_HEX - OWNER_HEX}x}"))
    return _Template(*map(tuple, parts), "\n".join(shared), sum(map(len, parts)),
                     frozenset(odd), MAX_COMPONENT_BYTES - extra)


def _plain_rows(t: _Template, stems: list[str], names: list[str], out: list[str]) -> None:
    """Append to `out` the rows of a batch of plain items of `t`'s dataset: `stems` and
    `names` hold each item's stem and name + _OWNER + its owner in OWNER_HEX hex digits
    (one join and one replace per key of the template); empties both lists."""
    if not stems:
        return
    for pieces, values in ((t.by_stem, stems), (t.by_name, names)):
        for prefix, mid in pieces:
            out.append(prefix + ("\n" + prefix).join(values).replace(_OWNER, mid))
    for prefix, suffix in t.shared_by_stem:
        out.append(prefix + (suffix + "\n" + prefix).join(
            [s.partition(_OWNER)[0] for s in stems]) + suffix)
    stems.clear(), names.clear()


def _insert(db: sqlite3.Connection, store: _KeyRuns, names_file: _Names,
            refs: Iterable[ItemRef], *, formats: Sequence[str], options: Mapping[str, Any]
            ) -> int:
    text: list[str] = []
    reserved = [JOB_RESERVED] + [FORMATS[f].reserved_keys(options[f]) for f in formats]
    for p in reserved:
        for kind, declared in ((FILE, p.files), (FOLDER, p.folders), (SHARED, p.shared)):
            text += [_row(k.replace("/", SEP), kind << KIND_SHIFT | SIDECARS)
                     for k in declared]
    names: list[tuple[int, str, str]] = []
    bad: list[tuple[int, str]] = []
    shared_seen: set[str] = set()
    templates: dict[str, _Template | None] = {}  # by dataset, bounded
    declared: set[str] = set()  # datasets whose shared rows are in
    plain: _Template | None = None  # of the plain items in `stems`, `plain_names`
    stems: list[str] = []
    plain_names: list[str] = []
    db.execute("BEGIN")
    n = rows = 0  # rows: made or to make, not yet given to `store`
    planners = [(f, FORMATS[f].planned_keys, options[f]) for f in formats]
    for n, ref in enumerate(refs, start=1):
        name, dataset = ref.name, ref.dataset
        names.append((n, dataset, name))
        if ref.problem is not None:
            continue
        t = templates.get(dataset, False)
        if t is False:
            if len(templates) >= 1024:
                templates.clear(), declared.clear()
            t = templates[dataset] = _template(dataset, planners)
        if t is not None and len(name) <= t.longest and plain_name(name):
            head, dot, _ext = name.rpartition(".")  # model.name_stem of a name without '/'
            stem = head if dot and head else name
            if stem not in t.odd_stems:
                if t is not plain:
                    if plain is not None:
                        _plain_rows(plain, stems, plain_names, text)
                    plain = t
                    if dataset not in declared:
                        declared.add(dataset)
                        if t.shared:
                            text.append(t.shared)
                            rows += t.shared.count("\n") + 1
                owner = f"{_OWNER}{n:0{OWNER_HEX}x}"
                stems.append(stem + owner)
                if t.by_name:
                    plain_names.append(name + owner)
                rows += t.n_rows
                if rows >= BATCH or len(names) >= BATCH:
                    _plain_rows(t, stems, plain_names, text)
                    _flush(db, names_file, names, bad)
                    store.add_text(text)
                    rows = 0
                continue
        before = len(text)
        problem = _add_item(n, ref, planners=planners, text=text, shared_seen=shared_seen)
        if problem:
            bad.append((n, problem))
        rows += len(text) - before
        if rows >= BATCH or len(names) >= BATCH:
            if plain is not None:
                _plain_rows(plain, stems, plain_names, text)
            _flush(db, names_file, names, bad)
            store.add_text(text)
            rows = 0
    if plain is not None:
        _plain_rows(plain, stems, plain_names, text)
    _flush(db, names_file, names, bad)
    store.add_text(text)
    db.execute("COMMIT")
    return n


def _add_item(n: int, ref: ItemRef, *, planners: list[Planner], text: list[str],
              shared_seen: set[str]) -> str | None:
    """Append item `n`'s rows to `text` (shared keys once: `shared_seen` holds the last ones,
    refs come sorted), or return why it cannot be planned (no rows)."""
    planned = _plan_item(ref, planners)
    if isinstance(planned, str):
        return planned
    keys: list[str] = []
    tags: list[int] = []
    shared: list[str] = []
    for p in planned:
        if p.files:
            keys += p.files
            tags += [n] * len(p.files)  # FILE << KIND_SHIFT | n
        if p.folders:
            keys += p.folders
            tags += [FOLDER << KIND_SHIFT | n] * len(p.folders)
        shared += p.shared
    problem = _keys_problem(keys + shared)
    if problem:
        return problem
    for k in shared:
        if k not in shared_seen:
            if len(shared_seen) > 10_000:
                shared_seen.clear()
            shared_seen.add(k)
            keys.append(k)
            tags.append(SHARED << KIND_SHIFT | SIDECARS)
    text += map(_row, [k.replace("/", SEP) for k in keys], tags)
    return None


def _flush(db: sqlite3.Connection, store: _Names, names: list[tuple[int, str, str]],
           bad: list[tuple[int, str]]) -> None:
    store.add(names)
    db.executemany("INSERT INTO bad VALUES (?, ?)", bad)
    bad.clear()


class _Names:
    """Every item's (id, dataset, name), in batches in a file (marshal: the dataset, one
    object for many items, is written once per batch); `load` puts those of the failing items
    in the database (the others are never read: names are not in memory, nor all in SQLite)."""

    HEAD = struct.Struct("<QQQ")  # first id, count, bytes of the batch

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, "names.marshal")
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed by `load` (or the folder)

    def add(self, names: list[tuple[int, str, str]]) -> None:
        """Store a batch of consecutive ids; empties `names`."""
        if names:
            data = marshal.dumps(names, 4)
            self.file.write(self.HEAD.pack(names[0][0], len(names), len(data)) + data)
            names.clear()

    def load(self, db: sqlite3.Connection) -> None:
        """Copy the names of the items in `bad` and `clash` to the `items` table."""
        self.file.close()
        wanted = db.execute("SELECT id FROM bad UNION SELECT item FROM clash UNION "
                            "SELECT other FROM clash WHERE other != ? ORDER BY 1", (SIDECARS,))
        ids = (i for (i,) in wanted)  # sorted by SQLite (on disk past its cache)
        nxt = next(ids, None)
        with open(self.path, "rb") as f:
            while nxt is not None and (head := f.read(self.HEAD.size)):
                first, count, size = self.HEAD.unpack(head)
                if nxt >= first + count:
                    f.seek(size, os.SEEK_CUR)
                    continue
                batch, rows = marshal.loads(f.read(size)), []
                while nxt is not None and nxt < first + count:
                    rows.append(batch[nxt - first])
                    nxt = next(ids, None)
                try:
                    db.executemany("INSERT INTO items VALUES (?, ?, ?)", rows)
                except UnicodeEncodeError:  # a lone surrogate (a JSON escape): as bytes
                    db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)",
                                   [(n, _stored(ds), _stored(name)) for n, ds, name in rows])
        os.remove(self.path)


def _node(path: str, rows: list[Row]) -> list[Any]:
    """[path, path + SEP, file owners, folder owners, shared, hits, n_hits] (see `_scan`)."""
    owners: tuple[list[int], list[int]] = ([], [])
    shared = False
    for row in rows:
        tag = int(row[-TAG_HEX:], 16)
        kind, owner = tag >> KIND_SHIFT, tag & OWNER_MASK
        if kind == SHARED:
            shared = True
        elif owner not in owners[kind]:
            owners[kind].append(owner)
    return [path, path + SEP, owners[FILE], owners[FOLDER], shared, [], 0]


def _scan(db: sqlite3.Connection, blocks: Iterable[list[Row]]) -> None:
    """One ordered pass over every key: same keys, and keys inside another's file or folder.

    A node (`_node`) is made only for a key declared more than once, inside a declared key, or
    holding the next key; the stack holds the declared keys that are folders of the current
    one (nearest last); `hits` are (owner, key) of others' keys found inside a node, reported
    when it leaves the stack. Most keys are alone and nothing is inside them: the loop only
    compares them with their neighbours."""
    out: list[tuple[int, int, str, str, int, int]] = []
    stack: list[list[Any]] = []

    def record(item: int, other: int, *, key: str, other_key: str, relation: int, more: int
               ) -> None:
        if item != SIDECARS:
            out.append((item, other, key.replace(SEP, "/"), other_key.replace(SEP, "/"),
                        relation, more))
            if len(out) >= BATCH:
                db.executemany("INSERT INTO clash VALUES (?, ?, ?, ?, ?, ?)", out)
                out.clear()

    def close(node: list[Any]) -> None:  # report the owners of a key that others write inside
        if node[6]:
            for owner in node[2] + node[3]:
                for other, key in node[5]:
                    if other != owner:
                        record(owner, other, key=node[0], other_key=key, relation=HOLDS,
                               more=node[6])

    def check(node: list[Any]) -> None:  # against its declared folders, and same-key owners
        path, files, folders, shared = node[0], node[2], node[3], node[4]
        exclusive = files + [o for o in folders if o not in files]
        mine = [*exclusive, SIDECARS] if shared and SIDECARS not in exclusive else exclusive
        for anc in stack:
            for owner in mine:
                if anc[4] and owner != SIDECARS:
                    record(owner, SIDECARS, key=path, other_key=anc[0], relation=IN_FILE,
                           more=1)
                others = [o for o in anc[2] if o != owner]
                others += [o for o in anc[3] if o != owner and o not in anc[2]]
                for o in others[:NAMED]:
                    record(owner, o, key=path, other_key=anc[0],
                           relation=IN_FILE if o in anc[2] else IN_FOLDER, more=len(others))
                if others or (anc[4] and owner != SIDECARS):
                    anc[6] += 1
                    if len(anc[5]) <= NAMED:
                        anc[5].append((owner, path))
        if len(exclusive) > 1:
            for owner in exclusive:
                others = [o for o in exclusive if o != owner]
                for o in others[:NAMED]:
                    record(owner, o, key=path, other_key=path, relation=SAME,
                           more=len(others))
        if shared:
            for owner in exclusive:
                record(owner, SIDECARS, key=path, other_key=path, relation=SAME_SIDECAR,
                       more=1)

    cur, group = "", []  # the current key and its rows
    for path, row in chain(_interesting(blocks, stack), (("", ""),)):  # "" ends the pass
        if path == cur:
            group.append(row)
            continue
        if group:
            if stack or len(group) > 1:
                node = _node(cur, group)
                if stack or len(node[2]) + len(node[3]) > 1 or (node[4] and (node[2] or node[3])):
                    check(node)
                if path.startswith(node[1]):  # a key inside it follows: it is an ancestor
                    stack.append(node)
                elif node[6]:
                    close(node)
            elif path.startswith(cur) and path[len(cur)] == SEP:
                stack.append(_node(cur, group))
            while stack and not path.startswith(stack[-1][1]):
                close(stack.pop())
        cur, group = path, [row]
    db.executemany("INSERT INTO clash VALUES (?, ?, ?, ?, ?, ?)", out)


def _interesting(blocks: Iterable[list[Row]], stack: list[Any]) -> Iterator[tuple[str, Row]]:
    """(key, row) of the rows `_scan` must see: all while its `stack` is not empty, else
    only those whose key starts the next row's key or ends the previous one's (the same key,
    or a folder of it), and the first and last of each block. The others are alone: no other
    key is the same or inside them (sorted: a key inside one follows it at once), and they
    are inside no declared key (the stack is empty), so `_scan` would do nothing with them.
    One comparison in C per row (`map(str.startswith, ...)`), Python only for the few kept;
    the merged lists are taken RUN_BLOCK rows at a time (the keys made here stay few)."""
    for block in (b[i:i + RUN_BLOCK] for b in blocks for i in range(0, len(b), RUN_BLOCK)):
        paths = [row[:-TAG_LEN] for row in block]
        n = len(paths)
        related = [True, *map(str.startswith, paths[1:], paths[:-1]), True]
        last = -1
        for i in compress(range(n), map(or_, related, related[1:])):
            while stack and last + 1 < i:  # inside a declared key: every row counts
                last += 1
                yield paths[last], block[last]
            last = i
            yield paths[i], block[i]
        while stack and last + 1 < n:
            last += 1
            yield paths[last], block[last]


_TEXT = {
    SAME: "{key}, also an output of {others}",
    IN_FILE: "{key}, inside {other_key}: a file of {others}",
    IN_FOLDER: "{key}, inside {other_key}/: a folder of {others}",
    HOLDS: "{key}, which {others} need as a folder ({other_key})",
}
_SIDECAR_TEXT = {
    SAME_SIDECAR: "{key}, also a file maskjob writes at finalize",
    IN_FILE: "{key}, inside {other_key}: a file maskjob writes at finalize",
    HOLDS: "{key}, which the file {other_key} maskjob writes at finalize needs as a folder",
}


def _reason(rows: list[tuple[Any, ...]]) -> str:
    """One line from an item's clash rows (the first key it clashes on, up to NAMED others)."""
    _, other, key, other_key, relation = rows[0][:5]
    if other == SIDECARS:
        detail = _SIDECAR_TEXT.get(relation, _SIDECAR_TEXT[IN_FILE]).format(
            key=key, other_key=other_key)
    else:
        same = [r for r in rows if r[2] == key and r[4] == relation and r[1] != SIDECARS]
        shown = list(dict.fromkeys(_display(r[6], r[7]) for r in same))[:NAMED]
        total = max(max(r[5] for r in same), len(shown))
        others = ", ".join(shown)
        if relation == HOLDS:  # counted in keys: one item may have several inside
            others += f" ({total} keys inside in all)" if total > len(shown) else ""
        elif total > len(shown):
            others += f" and {total - len(shown)} more items"
        detail = _TEXT[relation].format(key=key, other_key=other_key, others=others)
    n_keys = len({r[2] for r in rows})
    if n_keys > 1:
        detail += f" (and {n_keys - 1} more of its keys)"
    return ("Expected outputs that no other item or sidecar uses (no silent overwrite: every "
            f"item of a clash fails). Got {detail} instead.")


def _reasons(db: sqlite3.Connection) -> int:
    """Fill `result` (id, dataset, name, reason) with every item that fails; its size."""
    db.execute("BEGIN")
    db.execute("INSERT INTO result SELECT b.id, i.dataset, i.name, b.reason FROM bad b "
               "JOIN items i ON i.id = b.id")
    rows = db.execute(
        "SELECT c.item, c.other, c.key, c.other_key, c.relation, c.more, i.dataset, i.name "
        "FROM clash c LEFT JOIN items i ON i.id = c.other ORDER BY c.item, c.rowid")
    batch: list[tuple[int, str]] = []
    for item, group in groupby(rows, key=itemgetter(0)):
        batch.append((item, _reason(list(group))))
        if len(batch) >= BATCH:
            _insert_reasons(db, batch)
    _insert_reasons(db, batch)
    db.execute("CREATE INDEX result_name ON result (dataset, name)")
    db.execute("COMMIT")
    return int(db.execute("SELECT count(*) FROM result").fetchone()[0])


def _insert_reasons(db: sqlite3.Connection, batch: list[tuple[int, str]]) -> None:
    db.executemany("INSERT OR IGNORE INTO result SELECT id, dataset, name, ? FROM items "
                   "WHERE id = ?", [(reason, item) for item, reason in batch])
    batch.clear()
