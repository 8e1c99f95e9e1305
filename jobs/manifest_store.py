"""The manifest layout under OUTPUT, owned here and nowhere else.

    OUTPUT/_manifest/plan.json                the plan's fingerprint, partition size, count
                                              and TOKEN (a fresh one per adopted plan)
    OUTPUT/_manifest/plan/shard-NNNNN.jsonl   the plan: one JSON line per item, sorted by
                                              (dataset, name), partitions cut at byte offsets
    OUTPUT/_manifest/part-NNNNN-TOKEN.jsonl   one line per item, written by the partition that
                                              made it (its existence is the partition's commit)
    OUTPUT/_manifest/records/FORMAT/part-NNNNN-TOKEN.jsonl
                                              the partition's records for a format that keeps
                                              them (`PART_RECORDS`), written just before the part
    OUTPUT/_manifest/baseline.jsonl           the previous completed run's lines (--incremental)
    OUTPUT/_manifest/run                      the token of the run that adopted the output
                                              last (the fence, jobs/fence.py)
    OUTPUT/_manifest/attempts/part-NNNNN      the run token of the attempt running partition N
                                              (removed when it commits or raises)
    OUTPUT/manifest.jsonl                     all parts merged, in partition order
    OUTPUT/manifest.json                      the summary, written LAST (the export completed)

A plan line is `{"r": <ItemRef>, "p": <the item's baseline line or null>}`; the ItemRef is in
its one JSON codec, `ItemRef.to_json` (annotation bytes held inline travel as text, or base64
when they are not UTF-8). A partition is a `PlanSlice`: a shard number and a byte range
(~100 bytes on the wire); the worker reads its own lines with one ranged read.

Plan tokens: a committed part (and its records) carries the token of the plan it was made for
in its name. Only parts of the current plan's token exist for resume, finalize and the merge; a
part of another token - committed late by a task of a driver that died before the plan was
replaced - is ignored, and deleted (`sweep_parts`) when a plan is adopted and at finalize. Two
parts of the same partition never share a name across plans, so a late commit cannot replace a
current one either.

Baseline lines are data, not trust: `iter_baseline` yields only lines that parse to a dict with
string `dataset` / `item`, in strictly increasing (dataset, item) order, whose every output key is
a clean relative key inside a format tree (`<format>/...`); anything else is skipped with a
warning and is never followed, carried forward or deleted.

Functions here read and write those objects through a `Root`. A manifest line is written only
by `ManifestEntry.to_line` (maskcore.manifest) and read back in three ways, each for its own
trust level: finalize decodes committed parts into `FinalEntry` (maskcore.formats.base: typed,
only the fields finalize uses; a line that does not decode is a reported problem),
`iter_baseline` here reads a previous run's lines as data (validated, never followed), and
`jobs/verify.py` reads a `manifest.jsonl` that may have been edited (every bad line or entry is
a problem, nothing raises).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from maskcore.errors import ItemError
from maskcore.formats import FORMATS
from maskcore.paths import check_relative

from .listing import ItemRef
from .storage import Root

log = logging.getLogger(__name__)

MANIFEST_DIR = "_manifest"
PLAN_KEY = f"{MANIFEST_DIR}/plan.json"
PLAN_DIR = f"{MANIFEST_DIR}/plan"
BASELINE_KEY = f"{MANIFEST_DIR}/baseline.jsonl"
MANIFEST_LINES = "manifest.jsonl"
MANIFEST_SUMMARY = "manifest.json"
SHARD_BYTES = 8 * 1024 * 1024  # a plan shard is cut at the first partition end past this
DELETE_BATCH = 1000  # keys per bulk delete (S3 DeleteObjects takes at most 1000)
ATTEMPTS_DIR = f"{MANIFEST_DIR}/attempts"  # one marker per partition a run has started
RUN_KEY = f"{MANIFEST_DIR}/run"  # the current run's token: a dead run's tasks stop writing


RECORDS_DIR = f"{MANIFEST_DIR}/records"
_TOKEN = re.compile(r"[0-9a-f]{16}")
# a part or records object (relative to MANIFEST_DIR); a part without a token is stale too
_COMMITTED = re.compile(r"(?:records/[^/]+/)?part-(\d+)(?:-([0-9a-f]+))?\.jsonl")


def new_token() -> str:
    """A fresh plan token (16 hex digits)."""
    return uuid.uuid4().hex[:16]


def is_token(value: Any) -> bool:
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def part_key(pid: int, token: str) -> str:
    """The manifest part of partition `pid` under the plan of `token` (its commit)."""
    if not is_token(token):
        raise ValueError(f"Expected a plan token of 16 hex digits. Got {token!r} instead.")
    return f"{MANIFEST_DIR}/part-{pid:05d}-{token}.jsonl"


def records_key(fmt: str, pid: int, token: str) -> str:
    """The records of format `fmt` made by partition `pid` under the plan of `token`."""
    return f"{RECORDS_DIR}/{fmt}/{part_key(pid, token)[len(MANIFEST_DIR) + 1:]}"


def attempt_key(pid: int) -> str:
    return f"{ATTEMPTS_DIR}/part-{pid:05d}"


def start_attempt(dest: Root, pid: int, run_token: str) -> bool:
    """Record that the run `run_token` started partition `pid` (a marker holding the token).
    True when this run had started it before: that attempt's worker died in the middle of it
    (a retry after a crash), so the caller should isolate its items. A marker of another run
    (a resumed job) does not count."""
    if attempt_of(dest, pid) == run_token:
        return True
    mark_attempt(dest, pid, run_token)
    return False


def mark_attempt(dest: Root, pid: int, run_token: str) -> None:
    """Write partition `pid`'s attempt marker: the run `run_token` is running it."""
    dest.write(attempt_key(pid), run_token.encode())


def end_attempt(dest: Root, pid: int) -> None:
    """Forget the attempt of partition `pid`: it committed (a rerun need not wait for it), or
    it raised (Dask's ordinary retry must run it normally, not isolated); best effort, a store
    error here is not the one to report."""
    with contextlib.suppress(Exception):
        delete_keys(dest, [attempt_key(pid)])


def clear_attempts(dest: Root) -> int:
    """Remove every attempt marker (listed and deleted in bulk, a page at a time): the run is
    over."""
    return _sweep(dest, ATTEMPTS_DIR, lambda _key: True)


def attempt_of(dest: Root, pid: int) -> str | None:
    """The run token in partition `pid`'s attempt marker; None when there is none."""
    return _small(dest, attempt_key(pid))


def current_run(dest: Root) -> str | None:
    """The token of the run that adopted the output last (`adopt_run`); None if none did."""
    return _small(dest, RUN_KEY)


def adopt_run(dest: Root, run_token: str) -> set[int]:
    """Make `run_token` the output's current run, then claim the partitions other runs had
    started: their attempt markers are removed (listed a page at a time, bulk deletes) and
    their ids returned. In this order - the run key written before the markers are listed,
    while a task writes its marker before it reads the run key (jobs/fence.py) - a task of an
    older run either has its marker listed here or finds the new run key at its start."""
    dest.write(RUN_KEY, run_token.encode())
    head = f"{ATTEMPTS_DIR}/part-"
    held: set[int] = set()  # at most the partitions in flight when that run stopped

    def claim(key: str) -> bool:
        if key.startswith(head) and key[len(head):].isdigit():
            held.add(int(key[len(head):]))
        return True

    _sweep(dest, ATTEMPTS_DIR, claim)
    return held


def _small(dest: Root, key: str) -> str | None:
    try:
        return dest.read(key, max_bytes=256).decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def shard_key(n: int) -> str:
    return f"{PLAN_DIR}/shard-{n:05d}.jsonl"


def _numbered(dest: Root, prefix: str, head: str) -> set[int]:
    """Numbers N of the `head`N.jsonl objects under `prefix` (one listing)."""
    found = set()
    for page in dest.key_pages(prefix):
        for key in page:
            rel = key[len(prefix):].lstrip("/")
            if rel.startswith(head) and rel.endswith(".jsonl") and "/" not in rel:
                try:
                    found.add(int(rel[len(head):-6]))
                except ValueError:
                    continue
    return found


class PartSet(AbstractSet[int]):
    """A set of partition ids below `size`, one bit each (12.5 KB at 100k partitions, where a
    set of ints holds ~70 bytes per id); ids outside the range are never in it."""

    __slots__ = ("_bits", "_count", "_size")

    def __init__(self, size: int) -> None:
        self._size = max(size, 0)
        self._bits = bytearray((self._size + 7) // 8)
        self._count = 0

    def add(self, pid: int) -> None:
        if not 0 <= pid < self._size:
            raise IndexError(f"Expected a partition id below {self._size}. Got {pid} instead.")
        byte, bit = divmod(pid, 8)
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self._count += 1

    def __contains__(self, pid: object) -> bool:
        if not isinstance(pid, int) or not 0 <= pid < self._size:
            return False
        return bool(self._bits[pid >> 3] >> (pid & 7) & 1)

    def __iter__(self) -> Iterator[int]:
        for byte, bits in enumerate(self._bits):
            if bits:
                yield from (byte * 8 + b for b in range(8) if bits >> b & 1)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"PartSet({sorted(self)})"


def sweep_parts(dest: Root, token: str | None, n_parts: int) -> tuple[PartSet, int]:
    """(ids below `n_parts` of the partitions committed under the plan of `token`, the number
    of parts and records of every other plan - all of them when `token` is None - deleted):
    one streamed listing, stale keys deleted in bulk as they are found (`_sweep`). A part of
    the current plan at or past `n_parts` is not in the set, and is kept."""
    done = PartSet(n_parts)

    def stale(key: str) -> bool:
        m = _COMMITTED.fullmatch(key[len(MANIFEST_DIR):].lstrip("/"))
        if m is None:
            return False
        if token is None or m.group(2) != token:
            return True
        pid = int(m.group(1))
        if pid < n_parts and not key.startswith(RECORDS_DIR):
            done.add(pid)
        return False

    return done, _sweep(dest, MANIFEST_DIR, stale)


SWEEP_PASSES = 4  # listings of one prefix by `_sweep` at most


def _sweep(dest: Root, prefix: str, doomed: Callable[[str], bool]) -> int:
    """Delete the keys under `prefix` for which `doomed(key)` is true, while listing: names
    only, one page at a time, deleted in bulk batches of DELETE_BATCH - the driver holds one
    page and one batch, whatever the number of keys. A folder changed during its listing may
    skip entries (POSIX readdir leaves it open; S3 pages continue after the last key, so
    never do), so a listing in whose middle a batch was deleted is done again, up to
    SWEEP_PASSES listings; `doomed` sees every key at least once. Returns the number of
    keys deleted."""
    deleted = 0
    for _ in range(SWEEP_PASSES):
        batch: list[str] = []
        mid_listing = False
        for page in dest.key_pages(prefix):
            batch.extend(k for k in page if doomed(k))
            if len(batch) >= DELETE_BATCH:
                deleted += delete_keys(dest, batch)
                batch, mid_listing = [], True
        deleted += delete_keys(dest, batch)
        if not mid_listing:
            break
    return deleted


def plan_shards(dest: Root) -> set[int]:
    return _numbered(dest, PLAN_DIR, "shard-")


def iter_part_batches(dest: Root, n_parts: int, token: str, batch: int = 64
                      ) -> Iterator[list[tuple[int, bytes]]]:
    """The committed manifest parts of the plan of `token` in order, `batch` at a time, each
    batch fetched with one concurrent read: lists of (partition id, part bytes)."""
    for start in range(0, n_parts, batch):
        pids = range(start, min(n_parts, start + batch))
        got = dest.read_many([part_key(p, token) for p in pids])
        yield [(p, got[part_key(p, token)]) for p in pids]


# -- the plan ---------------------------------------------------------------------------------

def encode_ref(ref: ItemRef) -> str:
    """An ItemRef in a plan line: its one JSON codec, `ItemRef.to_json` (`decode_ref` inverts
    it on the parsed line)."""
    return ref.to_json()


def decode_ref(fields: Any) -> ItemRef:
    return ItemRef.from_fields(fields)


@dataclass(frozen=True, slots=True)
class PlanSlice:
    """One partition: its id and its lines in the plan (shard number, byte range)."""

    pid: int
    shard: int
    start: int
    end: int


def read_slice(dest: Root, s: PlanSlice) -> list[tuple[ItemRef, dict[str, Any] | None]]:
    """A partition's items (and each one's baseline entry, if any), read with one ranged GET."""
    fs = dest.fs
    data = fs.cat_file(dest.full(shard_key(s.shard)), start=s.start, end=s.end)
    out = []
    for line in data.split(b"\n"):  # not splitlines(): a name may hold U+2028, \x1c, \x85
        if line:
            d = json.loads(line)
            out.append((decode_ref(d["r"]), d.get("p")))
    return out


class ShardWriter:
    """Streams plan lines into shards of about `shard_bytes`, cut only between partitions;
    records each partition's byte range (20 bytes per partition on the driver)."""

    def __init__(self, dest: Root, shard_bytes: int = SHARD_BYTES) -> None:
        from array import array

        self.dest, self.shard_bytes = dest, shard_bytes
        self.buf = bytearray()
        self.size = 0
        self.shard = 0
        self.part_start = 0
        self.shard_of, self.starts, self.ends = array("i"), array("q"), array("q")

    def add(self, line: bytes) -> None:
        self.buf += line
        self.size += len(line)

    def end_partition(self) -> None:
        self.shard_of.append(self.shard)
        self.starts.append(self.part_start)
        self.ends.append(self.size)
        self.part_start = self.size
        if self.size >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            self.dest.write(shard_key(self.shard), bytes(self.buf))
            self.shard += 1
        self.buf, self.size, self.part_start = bytearray(), 0, 0

    def close(self) -> int:
        """Write the last shard; returns the number of shards."""
        self._flush()
        return self.shard

    def slice(self, pid: int) -> PlanSlice:
        return PlanSlice(pid, self.shard_of[pid], self.starts[pid], self.ends[pid])

    @property
    def n_parts(self) -> int:
        return len(self.shard_of)


# -- the baseline -----------------------------------------------------------------------------

def snapshot_baseline(dest: Root) -> bool:
    """Copy a completed run's manifest.jsonl to `_manifest/baseline.jsonl` (streaming copy), so
    an incremental run that crashes and is rerun compares against the same baseline. Returns
    whether a baseline exists."""
    if dest.exists(MANIFEST_SUMMARY) and dest.exists(MANIFEST_LINES):
        fs = dest.fs
        if dest.is_local:
            os.makedirs(os.path.dirname(dest.full(BASELINE_KEY)), exist_ok=True)
        fs.copy(dest.full(MANIFEST_LINES), dest.full(BASELINE_KEY))
        fs.invalidate_cache()
    return dest.exists(BASELINE_KEY)


def _valid_output_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    try:
        check_relative(key)
    except ItemError:
        return False
    head = key.split("/", 1)[0]
    return "/" in key and head in FORMATS


def _lines(f: Any, chunk: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    """The lines of a binary file read in large blocks (fsspec's readline is slow)."""
    rest = b""
    while True:
        block = f.read(chunk)
        if not block:
            break
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


_DECODER = json.JSONDecoder()


def _check_baseline_line(d: Any, last: tuple[str, str] | None
                         ) -> tuple[str | None, tuple[str, str] | None, list[str]]:
    """(reason it is invalid or None, its (dataset, item), its output keys)."""
    if not isinstance(d, dict):
        return "not a JSON object", None, []
    key = (d.get("dataset"), d.get("item"))
    if not (isinstance(key[0], str) and isinstance(key[1], str)):
        return "no dataset/item strings", None, []
    outs = d.get("outputs", [])
    if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
        return "outputs that are not a list of objects", None, []
    keys = [o.get("key") for o in outs]
    if not all(_valid_output_key(k) for k in keys):
        return "an output key that is not a clean key inside a format tree", None, []
    if last is not None and key <= last:
        return "out of (dataset, item) order or repeated", None, []
    return None, key, keys  # type: ignore[return-value]


def iter_baseline(dest: Root, warn_limit: int = 5) -> Iterator[tuple[tuple[str, str], str,
                                                                      list[str]]]:
    """((dataset, item), line, output keys) of every valid baseline line, in order. Invalid,
    escaping or out-of-order lines are skipped with a warning (the first `warn_limit` named)."""
    try:
        path = dest.full(BASELINE_KEY)
        f = open(path, "rb") if dest.is_local else (  # noqa: SIM115 - closed below
            dest.fs.open(path, "rb", block_size=8 * 1024 * 1024))
    except FileNotFoundError:
        return
    bad = 0
    last: tuple[str, str] | None = None
    with f:
        for n, raw in enumerate(_lines(f), start=1):
            try:
                text = raw.decode("utf-8").strip()
                if not text:
                    continue
                why, key, keys = _check_baseline_line(_DECODER.decode(text), last)
            except ValueError:  # not UTF-8, not JSON
                why, key, keys = "not JSON", None, []
            if why is not None or key is None:
                bad += 1
                if bad <= warn_limit:
                    log.warning("ignoring line %d of the previous manifest: %s", n, why)
                continue
            last = key
            yield key, text, keys
    if bad:
        log.warning("ignored %d invalid lines of the previous manifest (their items are "
                    "exported again; their outputs are never deleted)", bad)


def delete_keys(dest: Root, keys: Iterable[str], batch: int = DELETE_BATCH) -> int:
    """Delete objects in bulk calls of `batch` keys (S3: one DeleteObjects per batch); keys
    already gone are fine. No exists() per key. Returns the number of keys asked."""
    n = 0
    chunk: list[str] = []
    for k in keys:
        chunk.append(k)
        if len(chunk) >= batch:
            n += _delete_batch(dest, chunk)
            chunk = []
    if chunk:
        n += _delete_batch(dest, chunk)
    return n


def _delete_batch(dest: Root, keys: list[str]) -> int:
    if dest.is_local:  # LocalFileSystem.rm stops at the first missing file
        for k in keys:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                os.remove(dest.full(k))
        return len(keys)
    with contextlib.suppress(FileNotFoundError):
        dest.delete(keys)
    return len(keys)
