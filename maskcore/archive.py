"""Streaming tar archives, optionally cut into byte-level pieces, written through outputs that
the caller opens (pure: no storage library here; jobs/ passes `open_piece`).

    sink = PieceSink(open_piece, split=500 * MiB)   # open_piece(n) -> context manager of a file
    tar = TarStream(sink, mtime=...)
    tar.add_file("ds/img/a.jpg", data); ...; pieces = tar.close()  # [(size, "md5:<hex>"), ...]

The tar is what Python's tarfile writes in stream mode (`w|`, POSIX pax, UTF-8 names, padded
to a 10240-byte record), which GNU tar, bsdtar, 7-zip and the Supervisely SDK read. Pieces are
the SDK's `archive_directory(split=...)` pieces: consecutive byte ranges of that one tar, each
exactly `split` bytes but the last; they are NOT tars on their own and must be concatenated
before extraction (`cat name.tar.* | tar -x`). No piece is ever empty, and a tar that fits in
one piece is one piece (the caller names it like an unsplit tar, as the SDK does).

Memory: the sink never holds more than tarfile's 10 KiB record buffer; each output's own
buffering (a multipart upload part) is the caller's choice.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import IO, Any

from .errors import ConfigError, expected

MiB = 1 << 20
UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
         "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
         "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
MIN_PIECE = 1024


def parse_size(value: Any, key: str) -> int:
    """A byte size: an integer, or a number with a binary unit as the Supervisely SDK reads
    them (`500MiB`, `500Mb`, `500M`, `1.5G`: K/M/G/T = 1024^1..4, any case, `B`/`iB`
    optional); at least MIN_PIECE bytes. ConfigError naming `key` otherwise."""
    if isinstance(value, bool):
        raise ConfigError(expected("a size such as 500MiB or a number of bytes", value), key=key)
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.match(value) if isinstance(value, str) else None
        unit = m.group(2).upper() if m else ""
        if m is None or unit not in UNITS:
            raise ConfigError(expected("a size such as 500MiB, 100KiB or a number of bytes",
                                       value), key=key)
        size = int(float(m.group(1)) * UNITS[unit])
    if size < MIN_PIECE:
        raise ConfigError(expected(f"a size of at least {MIN_PIECE} bytes", value), key=key)
    return size


class PieceSink(io.RawIOBase):
    """A write-only file cutting what it gets into pieces of `split` bytes (None: one piece),
    each streamed to `open_piece(n)` (n from 1), opened only when a byte is due for it.
    `close()` commits the last piece; `abort(exc)` discards the open one. `pieces` holds
    (size, "md5:<hex>") of each committed piece."""

    def __init__(self, open_piece: Callable[[int], AbstractContextManager[IO[bytes]]], *,
                 split: int | None = None) -> None:
        super().__init__()
        self._open_piece, self.split = open_piece, split
        self.pieces: list[tuple[int, str]] = []
        self._ctx: AbstractContextManager[IO[bytes]] | None = None
        self._file: IO[bytes] | None = None
        self._size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while len(view):
            if self._file is None:
                self._ctx = self._open_piece(len(self.pieces) + 1)
                self._file = self._ctx.__enter__()
                self._size, self._md5 = 0, hashlib.md5(usedforsecurity=False)
            room = len(view) if self.split is None else self.split - self._size
            chunk = view[:room]
            self._file.write(chunk)
            self._md5.update(chunk)
            self._size += len(chunk)
            view = view[len(chunk):]
            if self.split is not None and self._size >= self.split:
                self._commit()
        return total

    def _commit(self) -> None:
        assert self._ctx is not None
        ctx, self._ctx, self._file = self._ctx, None, None
        ctx.__exit__(None, None, None)
        self.pieces.append((self._size, "md5:" + self._md5.hexdigest()))

    def close(self) -> None:
        if not self.closed and self._file is not None:
            self._commit()
        super().close()

    def abort(self, exc: BaseException) -> None:
        """Discard the piece being written (its upload is aborted); committed ones stay."""
        if self._ctx is not None:
            ctx, self._ctx, self._file = self._ctx, None, None
            ctx.__exit__(type(exc), exc, exc.__traceback__)
        super().close()


class TarStream:
    """Members appended one at a time to a tar streamed into `sink` (see the module docstring).
    Files get mode 0644, folders 0755, owner 0:0, the given `mtime`.

    Each member is its header (`TarInfo.tobuf`: ustar, with a pax extended header when a name
    is long or not ASCII - what tarfile's `w|` mode writes) then its bytes and zero padding to
    512, written straight to the sink: no copy through tarfile's 10 KiB stream buffer (a
    third of the archiving CPU, BENCHMARKS)."""

    def __init__(self, sink: PieceSink, *, mtime: int) -> None:
        self.sink, self.mtime = sink, mtime
        self.members = 0
        self.offset = 0

    def _add(self, name: str, kind: bytes, mode: int, data: bytes = b"") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, len(data), self.mtime
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if data:
            self._write(data)
            if len(data) % tarfile.BLOCKSIZE:
                self._write(tarfile.NUL * (tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))
        self.members += 1

    def _write(self, data: bytes) -> None:
        self.sink.write(data)
        self.offset += len(data)

    def add_dir(self, name: str) -> None:
        self._add(name, tarfile.DIRTYPE, 0o755)

    def add_file(self, name: str, data: bytes) -> None:
        self._add(name, tarfile.REGTYPE, 0o644, data)

    def close(self) -> list[tuple[int, str]]:
        """End the archive (two zero blocks, then zeros to a whole 10240-byte record, as
        tarfile does), commit the last piece; (size, checksum) of every piece."""
        end = self.offset + 2 * tarfile.BLOCKSIZE
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + (-end) % tarfile.RECORDSIZE))
        self.sink.close()
        return self.sink.pieces

    def abort(self, exc: BaseException) -> None:
        self.sink.abort(exc)
