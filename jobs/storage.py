"""Storage through fsspec only: open roots, list, read, and write many objects concurrently.

A `Root` is a filesystem plus a base path; every key is relative and checked (no escape from
the root, SPEC 4). Roots are small picklable descriptions (`url`, `storage_options`): workers
reopen them, so credentials come from the worker's environment (AWS_* variables, profiles, pod
identity, FSSPEC_S3_ENDPOINT_URL / AWS_ENDPOINT_URL_S3) or from --storage-option, never from the
job file, and are never logged.

Reads are bounded (SPEC 4): `read`/`read_many` return at most `max_bytes` (default
`Limits.max_object_bytes`) and refuse anything else with an ItemError naming the key, so a bad
input object fails its item, not the job. On a local disk only regular files are read (a FIFO,
a device, a socket are refused; the file is opened non-blocking and checked with fstat), and a
key whose real path (symlinks resolved) leaves the root is refused. Archive members (tar, zip)
are read with a cap, so their real size counts, not the size their header declares. Object
stores are read with one ranged GET of at most max_bytes + 1 bytes (no extra HEAD). A missing
object still raises FileNotFoundError, and storage failures propagate (Dask retries).
`open_read(key)` streams one object to a caller that reads it in chunks and bounds what it
holds itself (an ImageSets list): `read`'s checks, no cap.

Writes: `write_many` sends a batch of objects with one concurrent call (s3fs batches the PUTs);
on a local filesystem it writes each file to a new temporary name beside it (O_EXCL, plain
os.open/os.write: no file object) and renames it, so a reader never sees half a file and a
failed write leaves no temporary file. A single PUT on S3 is atomic already.
`open_write(key, archive=False)` streams one large object (a merged manifest, a list, an
archive) with bounded memory: on a local disk a temporary file renamed over the key on success;
on object stores one multipart upload, completed on close and aborted on error, so a reader
never sees a partial object either way. The first part size is this module's policy, by what
the stream carries (`stream_block`): the writer holds up to one part plus the copies its upload
makes (measured: ~3.5 parts of driver memory per open stream). Line streams (manifest.jsonl,
ClearML frames.jsonl, CVAT ImageSets lists) start at `LINES_BLOCK` (16 MiB: ~+55 MB per open
stream); archives (`archive=True`: the CVAT zip, Supervisely tar pieces), whose size follows
the masks, at `ARCHIVE_BLOCK` (50 MiB, s3fs's default). S3 takes at most 10,000 parts, so on
S3 the part size doubles every 1000 parts (jobs/s3_stream.py): a stream keeps its first size
up to 15.6 GiB (lines) / 49 GiB (archives) and is capped by S3's 5 TiB object size, not by the
part count. Other object stores keep the first size (their own part caps apply).
`move(src, dst)` renames one object (a server-side copy and a delete on S3; a multipart object
is copied in its own parts, so a copy has no more parts than its original).
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import posixpath
import stat
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.tar import TarFileSystem
from fsspec.implementations.zip import ZipFileSystem

from maskcore.errors import ItemError
from maskcore.limits import DEFAULT_LIMITS
from maskcore.paths import MAX_COMPONENT_BYTES, check_relative

from .secrets import redact, redact_text  # noqa: F401  (redact: re-exported, old callers)


def parse_storage_options(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """--storage-option KEY=VALUE pairs; dotted keys nest (client_kwargs.region_name=...)."""
    import yaml

    out: dict[str, Any] = {}
    for p in pairs:
        k, eq, v = p.partition("=")
        if not eq or not k:
            raise ValueError(f"Expected --storage-option KEY=VALUE. Got {p!r} instead.")
        node = out
        parts = k.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(v)
    return out


def _split_scheme(path: str) -> tuple[str, str]:
    """('http://', 'host/a/b') for a filesystem path that is a whole URL (HTTP paths are);
    ('', path) otherwise. posixpath would collapse the '//' of the scheme."""
    scheme, sep, rest = path.partition("://")
    if sep and scheme and "/" not in scheme:
        return scheme + sep, rest
    return "", path


def norm_path(path: str) -> str:
    """posixpath.normpath that keeps a URL's scheme (`http://h/a/../b` -> `http://h/b`)."""
    scheme, rest = _split_scheme(path)
    return scheme + posixpath.normpath(rest)


def common_path(paths: list[str]) -> str:
    """posixpath.commonpath that keeps a URL's scheme (all paths on one filesystem)."""
    split = [_split_scheme(p) for p in paths]
    return split[0][0] + posixpath.commonpath([rest for _, rest in split])


def rel_path(path: str, start: str) -> str:
    """posixpath.relpath of two paths of one filesystem, URL schemes kept out of the way."""
    return posixpath.relpath(_split_scheme(path)[1], _split_scheme(start)[1])


LIST_PAGE = 1000  # keys per page of `Root.key_pages` (an S3 ListObjectsV2 page)


@dataclass(frozen=True)
class Root:
    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fs_path(self) -> tuple[fsspec.AbstractFileSystem, str]:
        # asked for several times per object read or written: the cache key is made once per
        # Root (a plain attribute, not a field), the filesystem stays in the module's cache
        key = self.__dict__.get("_fs_key")
        if key is None:
            key = _fs_key(self.url, self.storage_options)
            object.__setattr__(self, "_fs_key", key)
        got = _FS_CACHE.get(key)
        return got if got is not None else _open(self.url, dict(self.storage_options))

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self.fs_path[0]

    @property
    def path(self) -> str:
        return self.fs_path[1]

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def full(self, key: str) -> str:
        return _join(self.path, check_relative(key, "key"))

    def uri(self, key: str) -> str:
        """The final URL of an object, to be written into outputs (manifests, ClearML frames,
        zarr attrs): credentials in it (URL userinfo, signed query strings) are redacted."""
        fs, path = self.fs_path
        full = _join(path, key)
        if type(fs) is LocalFileSystem and os.sep == "/" and full.startswith("/"):
            # LocalFileSystem.unstrip_protocol's own result for an absolute POSIX path,
            # without its protocol and path normalisation calls (~4 us, twice per item)
            return redact_text("file://" + (full.rstrip("/") or "/"))
        return redact_text(fs.unstrip_protocol(full))

    def read(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """One object's bytes, at most `max_bytes` (see module docstring); ItemError if the
        object is bigger, not a regular file, or a link out of the root."""
        cap = MAX_OBJECT_BYTES if max_bytes is None else max_bytes
        fs, base = self.fs_path
        path = self.full(key)
        if isinstance(fs, LocalFileSystem):
            return _read_local(base, path, key, cap)
        if isinstance(fs, ARCHIVE_FILESYSTEMS):  # one shared file handle: not thread-safe
            with _ARCHIVE_LOCK:
                return _read_member(fs, path, key, cap)
        try:
            got: bytes | BaseException = fs.cat_file(path, start=0, end=cap + 1)
        except OSError as e:
            got = e
        return _checked(fs, path, key, cap, got)

    def read_many(self, keys: list[str], *, max_bytes: int | None = None) -> dict[str, bytes]:
        """Several objects with one concurrent call (s3fs batches the GETs), each bounded as
        by `read`."""
        if not keys:
            return {}
        fs = self.fs
        if isinstance(fs, (LocalFileSystem, *ARCHIVE_FILESYSTEMS)):
            return {k: self.read(k, max_bytes=max_bytes) for k in keys}
        cap = MAX_OBJECT_BYTES if max_bytes is None else max_bytes
        full = {self.full(k): k for k in keys}
        paths = list(full)
        got = fs.cat_ranges(paths, [0] * len(paths), [cap + 1] * len(paths), on_error="return")
        return {full[p]: _checked(fs, p, full[p], cap, data)
                for p, data in zip(paths, got, strict=True)}

    def read_head(self, key: str, n: int) -> bytes:
        """The first `n` bytes of one object (all of a shorter one), with `open_read`'s checks:
        one ranged GET on an object store, never a read-ahead block."""
        fs = self.fs
        if isinstance(fs, (LocalFileSystem, *ARCHIVE_FILESYSTEMS)):
            with self.open_read(key) as f:
                return f.read(n)
        return fs.cat_file(self.full(key), start=0, end=n)

    @contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        """A binary file streaming one object (a large text read in chunks), without `read`'s
        cap but with its other checks: on a local disk a regular file inside the root, in an
        archive a file member (the archive's shared handle is locked until the block exits: read
        nothing else of the archive inside it)."""
        fs, base = self.fs_path
        path = self.full(key)
        if isinstance(fs, LocalFileSystem):
            fd, _size = _open_local(base, path, key)
            with os.fdopen(fd, "rb") as f:  # O_NONBLOCK: no effect on a regular file
                yield f
        elif isinstance(fs, ARCHIVE_FILESYSTEMS):
            with _ARCHIVE_LOCK:
                kind = fs.info(path).get("type", "file")  # FileNotFoundError if missing
                if kind != "file":
                    raise ItemError(f"{key}: Expected a file in the archive. Got a {kind} "
                                    "instead.")
                with fs.open(path, "rb") as f:
                    yield f
        else:
            with fs.open(path, "rb") as f:
                yield f

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.full(key))

    def size(self, key: str) -> int | None:
        try:
            return int(self.fs.size(self.full(key)))
        except FileNotFoundError:
            return None

    def list_files(self, prefix: str = "") -> Iterator[str]:
        """Keys (relative to the root) of every file under `prefix`, sorted."""
        fs, base = self.fs_path
        top = posixpath.join(base, prefix) if prefix else base
        try:
            found = _find(fs, top)
        except FileNotFoundError:
            return
        for p in sorted(found):
            yield _relative(p, base)

    def list_tags(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """(key, tag) of every file under `prefix`, sorted; the tag (size and ETag, or size
        and mtime) changes whenever the object is replaced: incremental runs compare it."""
        fs, base = self.fs_path
        top = posixpath.join(base, prefix) if prefix else base
        if _is_s3(fs) and hasattr(fs, "_iterdir"):  # streamed: one page held at a time
            last = None
            for p, tag in _walk_s3(fs, top, LIST_PAGE, tags=True):
                if last is not None and p <= last:  # ListObjectsV2 lists in UTF-8 order
                    raise OSError(f"{fs.unstrip_protocol(top)}: the store listed {p!r} after "
                                  f"{last!r}: expected keys in order (S3's ListObjectsV2)")
                last = p
                yield _relative(p, base), tag
            if last is not None:
                return
        try:  # (or `top` is one object, or there is nothing)
            found = _find(fs, top, detail=True)
        except FileNotFoundError:
            return
        for p in sorted(found):
            yield _relative(p, base), _tag(found[p])

    def key_pages(self, prefix: str = "", *, page: int = LIST_PAGE) -> Iterator[list[str]]:
        """The keys (relative to the root) of every file under `prefix`, in lists of at most
        `page` keys, in no set order: names only, so the caller holds one page, never the
        listing of the whole prefix (see `list_files`, sorted, for small prefixes). S3: one
        ListObjectsV2 page at a time, nothing put in s3fs's listing cache; local disk: an
        os.scandir walk that follows no links; other stores: their `find`. A prefix that does
        not exist has no keys."""
        fs, base = self.fs_path
        top = posixpath.join(base, check_relative(prefix, "prefix")) if prefix else base
        if isinstance(fs, LocalFileSystem):
            paths: Iterator[str] = _walk_local(top)
        elif _is_s3(fs) and hasattr(fs, "_iterdir"):  # s3fs's page iterator (private API)
            paths = _walk_s3(fs, top, page)
        else:
            try:
                paths = iter(_find(fs, top))
            except FileNotFoundError:
                return
        keys = (_relative(p, base) for p in paths)
        while chunk := list(itertools.islice(keys, page)):
            yield chunk

    def write_many(self, objects: Mapping[str, bytes]) -> None:
        if not objects:
            return
        fs, base = self.fs_path
        full = {_join(base, check_relative(k, "key")): v for k, v in objects.items()}
        if isinstance(fs, LocalFileSystem):
            for path, data in full.items():
                _atomic_local_write(path, data)
        else:
            fs.pipe(full)

    def write(self, key: str, data: bytes) -> None:
        self.write_many({key: data})

    @contextmanager
    def open_write(self, key: str, *, archive: bool = False) -> Iterator[IO[bytes]]:
        """A binary file streaming one object to `key` (see the module docstring): committed
        when the block exits normally, discarded when it raises. `archive`: the object is an
        archive (bigger parts, `stream_block`), not lines."""
        fs, _ = self.fs_path
        path = self.full(key)
        if isinstance(fs, LocalFileSystem):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            tmp = _temp_name(path, uuid.uuid4().int)
            try:
                with open(tmp, "wb") as f:
                    yield f
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        block = stream_block(archive=archive)
        if _is_s3(fs):  # parts that grow: never S3's 10,000-part cap (jobs/s3_stream.py)
            from .s3_stream import open_growing

            f: Any = open_growing(fs, path, start=block)
        else:
            f = fs.open(path, "wb", block_size=block)
        try:
            yield f
        except BaseException:
            discard = getattr(f, "discard", None)  # fsspec buffered files: abort the upload
            if discard is not None:
                discard()
            raise
        f.close()

    def move(self, src: str, dst: str) -> None:
        """Rename one object (replacing `dst`). On S3 a multipart object is copied part by part
        as it was uploaded (s3fs's `preserve_etag`): s3fs's own copy cuts 50 MiB parts, so it
        could not copy an object over 500 GiB (10,000 parts) that a stream wrote."""
        fs, _ = self.fs_path
        path = self.full(src)
        if isinstance(fs, LocalFileSystem):
            os.replace(path, self.full(dst))
        elif _is_s3(fs) and "-" in str(fs.info(path).get("ETag", "")):  # a multipart object
            # fs.mv is copy + rm, but drops the copy's arguments
            fs.copy(path, self.full(dst), on_error="raise", preserve_etag=True)
            fs.rm(path)
        else:
            fs.mv(path, self.full(dst))

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.fs.rm([self.full(k) for k in keys])


# First multipart part sizes of `Root.open_write` on object stores (the module docstring); on
# S3 they grow from there (jobs/s3_stream.py), so no stream meets the 10,000-part cap.
LINES_BLOCK = 16 * 2**20  # manifest.jsonl ~16M items before its parts grow, frames.jsonl ~30M
ARCHIVE_BLOCK = 50 * 2**20  # a zip or a tar piece of masks


def stream_block(*, archive: bool) -> int:
    """The first multipart part size of a streamed object: ARCHIVE_BLOCK for an archive,
    LINES_BLOCK for anything else (the driver's line streams)."""
    return ARCHIVE_BLOCK if archive else LINES_BLOCK


def _join(base: str, key: str) -> str:
    """posixpath.join(base, key) for str paths, without its generic checks (~0.7 us, once per
    object read or written)."""
    if key.startswith("/"):
        return key
    return base + key if not base or base.endswith("/") else f"{base}/{key}"


def _relative(path: str, base: str) -> str:
    """A listed filesystem path as a key relative to the root at `base`."""
    base_norm = base.rstrip("/")
    return path[len(base_norm):].lstrip("/") if path.startswith(base_norm) else path


def _walk_local(top: str) -> Iterator[str]:
    """Paths of the files under the folder `top` (os.scandir, one folder open at a time
    besides the stack of folders still to visit; links are listed, not followed). A folder
    removed during the walk, or a missing `top`, is skipped."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    else:
                        yield e.path
        except (FileNotFoundError, NotADirectoryError):
            continue


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    s3fs = sys.modules.get("s3fs")  # imported already whenever an S3 root exists
    return s3fs is not None and isinstance(fs, s3fs.S3FileSystem)


def _tag(info: Mapping[str, Any]) -> str:
    """A listed object's tag (`Root.list_tags`): size and ETag, or size and mtime."""
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or \
        info.get("LastModified") or ""
    return f"{info.get('size', '')}-{str(version).strip(chr(34))}"


def _walk_s3(fs: Any, top: str, page: int, *, tags: bool = False) -> Iterator[Any]:
    """Paths (bucket/key) of the objects under the folder `top` (with `tags`: (path, tag)),
    in the store's listing order, ListObjectsV2 pages pulled one `page` at a time from
    s3fs's own page iterator (each page through its retrying `_call_s3`); folder placeholder
    objects (keys ending in '/') are no files. A missing bucket has no objects, as for
    `find`."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(top)
    pages = fs._iterdir(bucket, delimiter="", prefix=f"{key.rstrip('/')}/" if key else "")
    try:
        while True:
            try:
                names, more = sync(fs.loop, _take_names, pages, page, tags)
            except FileNotFoundError:
                return
            yield from names
            if not more:
                return
    finally:
        sync(fs.loop, pages.aclose)


async def _take_names(pages: Any, n: int, tags: bool) -> tuple[list[Any], bool]:
    """The names (or (name, tag)) of the next `n` listed objects (info dicts dropped at once;
    folder placeholders left out), and whether the listing may go on."""
    names: list[Any] = []
    seen = 0
    async for info in pages:
        if not info["name"].endswith("/"):
            names.append((info["name"], _tag(info)) if tags else info["name"])
        seen += 1
        if seen >= n:
            return names, True
    return names, False


def _find(fs: fsspec.AbstractFileSystem, top: str, **kwargs: Any) -> Any:
    """fs.find that leaves no listing behind in the filesystem's cache (s3fs keeps one): other
    processes write under the listed prefix afterwards (workers commit manifest parts), and
    s3fs answers info/exists/cat_file of a path from a cached listing of its parent - so an
    object written after the listing would be reported missing (FileNotFoundError)."""
    try:
        return fs.find(top, **kwargs)
    finally:
        fs.invalidate_cache()


MAX_OBJECT_BYTES = DEFAULT_LIMITS.max_object_bytes


def _too_big(key: str, cap: int, got: str) -> ItemError:
    return ItemError(f"{key}: Expected an input object of at most {cap} bytes "
                     f"(limits.max_object_bytes). Got {got} instead.")


def _realpath_root(base: str) -> str:
    """The real path of an input root: resolved once per (path, the folder it leads to now),
    so a re-pointed symlink (`current` -> a new version) is resolved again."""
    info = os.stat(base)
    return _realpath_of(base, info.st_dev, info.st_ino)


@functools.lru_cache(maxsize=1024)
def _realpath_of(base: str, _dev: int, _ino: int) -> str:
    return os.path.realpath(base)


def _real_parent(path: str) -> str:
    """`path` with its folder's links resolved (cached like `_realpath_root`); the last
    component as it is (opened with O_NOFOLLOW: a link there is resolved by the caller)."""
    folder, name = _split(path)
    try:
        return _join(_realpath_root(folder), name)
    except OSError:  # a missing or odd folder: the open names the problem, as for any path
        return os.path.realpath(path)


def _split(path: str) -> tuple[str, str]:
    """os.path.split of a POSIX path, by one rfind when the folder part needs no trailing
    slashes stripped (the paths of keys under a root)."""
    i = path.rfind("/")
    if i > 0 and path[i - 1] != "/" and os.sep == "/":
        return path[:i], path[i + 1:]
    return os.path.split(path)


def real_root(base: str) -> str:
    """The real path of a local root (links resolved, cached): what `link_leaves` compares."""
    return _realpath_root(base)


def link_leaves(top: str, path: str) -> bool:
    """Whether the local `path` (under the root whose real path is `top`), links resolved,
    is outside the root: such a file is never read (`_read_local`) nor stat'ed by a listing
    (its size and time are not the input's to disclose)."""
    return _outside(top, os.path.realpath(path))


def _outside(top: str, real: str) -> bool:
    """Whether the resolved path `real` is outside the root whose real path is `top`."""
    return real != top and not real.startswith(top.rstrip(os.sep) + os.sep)


def _read_local(base: str, path: str, key: str, cap: int) -> bytes:
    """A regular file inside the root (its real path, links resolved), read with a cap."""
    fd, size = _open_local(base, path, key)
    try:
        if size > cap:
            raise _too_big(key, cap, f"{size} bytes")
        data = _read_fd(fd, size, cap)  # O_NONBLOCK: no effect on a regular file
    finally:
        os.close(fd)
    if len(data) > cap:
        raise _too_big(key, cap, "a file still growing past that")
    return data


def _open_local(base: str, path: str, key: str) -> tuple[int, int]:
    """(descriptor, size) of a regular file inside the root (its real path, links resolved):
    ItemError for a link leading outside it or anything but a regular file."""
    top = _realpath_root(base)
    flags = _READ_FLAGS
    try:
        real = _inside(top, _real_parent(path), key)
        try:  # non-blocking: opening a FIFO never waits for a writer
            fd = os.open(real, flags)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            # the file is a link: resolved
            fd = os.open(_inside(top, os.path.realpath(path), key), flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES, errno.EPERM,
                       errno.ENAMETOOLONG, errno.ENOTDIR):
            raise ItemError(f"{key}: Expected a readable regular file. Got "
                            f"{os.strerror(e.errno or 0)} instead.") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ItemError(f"{key}: Expected a regular file. Got {_file_kind(info.st_mode)} "
                            "instead.")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | \
    getattr(os, "O_CLOEXEC", 0)


def _inside(top: str, real: str, key: str) -> str:
    """`real` (resolved already: no second realpath per read), unless it is outside the root
    whose real path is `top` (ItemError)."""
    if _outside(top, real):
        raise ItemError(f"{key}: Expected an input file inside the input folder. Got a "
                        "link that leads outside it instead.")
    return real


def _read_fd(fd: int, size: int, cap: int) -> bytes:
    """Until the end of the file, at most cap + 1 bytes (the file may grow between fstat and
    read). Plain os.read calls sized by `size`: a buffered file object would cost a few system
    calls of its own per file (fstat, ioctl, lseek) and allocate a cap + 1 buffer."""
    chunks, total = [], 0
    while total <= cap:
        chunk = os.read(fd, min(cap + 1 - total, max(size + 1 - total, 1 << 16)))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_regular_file(path: str, cap: int) -> bytes:
    """A local file the user named (a job file), outside any Root: opened without blocking (a
    FIFO has no writer to wait for), a regular file only (a FIFO, a device such as /dev/zero,
    a socket are refused before any read), at most `cap` bytes. ItemError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ItemError(f"{path}: Expected a regular file. Got {_file_kind(info.st_mode)} "
                            "instead.")
        data = _read_fd(fd, info.st_size, cap)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise ItemError(f"{path}: Expected a file of at most {cap} bytes. Got more instead.")
    return data


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _read_member(fs: fsspec.AbstractFileSystem, path: str, key: str, cap: int) -> bytes:
    """An archive member, read with a cap: its real size counts, not the declared one (a
    sparse tar member or a lying zip header inflates past what it says)."""
    info = fs.info(path)  # FileNotFoundError for a missing member
    if info.get("type", "file") != "file":
        raise ItemError(f"{key}: Expected a file in the archive. Got a {info.get('type')} "
                        "instead.")
    declared = info.get("size")
    if isinstance(declared, int) and declared > cap:
        raise _too_big(key, cap, f"a member of {declared} bytes")
    try:
        with fs.open(path, "rb") as f:
            data = f.read(cap + 1)
    except FileNotFoundError:
        raise
    except Exception as e:  # a corrupt member, a link to nowhere: this item's problem
        raise ItemError(f"{key}: Expected a readable archive member. Got "
                        f"{type(e).__name__} instead.") from None
    if len(data) > cap:
        raise _too_big(key, cap, "a member that unpacks to more")
    return data


def _checked(fs: fsspec.AbstractFileSystem, path: str, key: str, cap: int,
             got: bytes | BaseException) -> bytes:
    """The result of a ranged read of at most cap + 1 bytes."""
    if isinstance(got, BaseException):
        if isinstance(got, OSError) and got.errno == errno.EINVAL and \
                "not satisfiable" in str(got) and fs.size(path) == 0:
            return b""  # S3 answers 416 to a range on an empty object
        raise got
    if len(got) > cap:
        raise _too_big(key, cap, "more")
    return got


_FOLDERS: set[str] = set()  # folders this process made or found (makedirs once, not per file)


def _atomic_local_write(path: str, data: bytes) -> None:
    """`data` under `path`, never half of it: written to a new temporary name beside it
    (O_EXCL: never someone else's file), then renamed over `path`; on any failure the
    temporary file is removed."""
    folder = _split(path)[0] or "."
    if folder not in _FOLDERS:
        _make_folders(folder)
    try:
        tmp = _write_temp(path, data)
    except FileNotFoundError:  # the folder was removed since (a cleanup, a rerun)
        _FOLDERS.clear()
        _make_folders(folder)
        tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _make_folders(folder: str) -> None:
    """`folder` and its missing parents, each remembered in _FOLDERS: one mkdir per new level
    (os.makedirs stats each level first). Below the nearest remembered parent, the levels are
    made top-down (zarr's `class/c/0` under a remembered item folder: 2 mkdir calls, not 4
    with 2 failing); without one, bottom-up, parents only when the mkdir says they are
    missing. A file in the way raises (FileExistsError / NotADirectoryError), as makedirs
    does."""
    below = []  # folder and its parents up to the nearest remembered one, deepest first
    level = folder
    while level not in _FOLDERS:
        below.append(level)
        level = os.path.dirname(level)
        if not level or level == below[-1] or len(below) > _TOP_DOWN_LEVELS:
            _make_folders_up(folder)  # nothing remembered on the way
            return
    for level in reversed(below):
        try:
            os.mkdir(level)
        except FileExistsError:
            if not os.path.isdir(level):
                raise
        except FileNotFoundError:  # the remembered parent was removed since
            _FOLDERS.clear()
            _make_folders_up(folder)
            return
        _remember(level)


_TOP_DOWN_LEVELS = 16


def _remember(folder: str) -> None:
    if len(_FOLDERS) > 65536:
        _FOLDERS.clear()
    _FOLDERS.add(folder)


def _make_folders_up(folder: str) -> None:
    """`_make_folders` bottom-up: mkdir `folder`, its parents only when it says they are
    missing."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        if not os.path.isdir(folder):
            raise
    except FileNotFoundError:
        parent = os.path.dirname(folder)
        if not parent or parent == folder:
            raise
        _make_folders_up(parent)
        with suppress(FileExistsError):  # made by another process meanwhile
            os.mkdir(folder)
    _remember(folder)


_TEMP_TRIES = 8


def _write_temp(path: str, data: bytes) -> str:
    """A new file `<path>.<8 hex digits>.tmp` holding `data` (its name returned): the digits
    count up from a random start per process, and a name that exists already is skipped."""
    for attempt in range(1, _TEMP_TRIES + 1):
        tmp = _temp_name(path, next(_TEMP_IDS))
        try:
            fd = os.open(tmp, _NEW_FILE, 0o666)
            break
        except FileExistsError:
            if attempt == _TEMP_TRIES:
                raise
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)  # a network filesystem may report a write error only here
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def _temp_name(path: str, n: int) -> str:
    """`<path>.<8 hex digits of n>.tmp`, or `.<8 hex digits>.tmp` beside it when that name
    would be longer than a file name may be (a key's last part of up to 255 bytes is a legal
    output: its temporary file must be too)."""
    tmp = f"{path}.{n & 0xFFFFFFFF:08x}.tmp"
    size = len(tmp) - tmp.rfind(os.sep) - 1
    if size > MAX_COMPONENT_BYTES // 4 and len(os.fsencode(tmp[-size:])) > MAX_COMPONENT_BYTES:
        tmp = os.path.join(os.path.dirname(path), f".{n & 0xFFFFFFFF:08x}.tmp")
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    n = os.write(fd, data)
    if n < len(data):  # a short write (a signal, a full pipe): write the rest
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


def _remove_quietly(path: str) -> None:
    with suppress(OSError):
        os.remove(path)


# os.open + os.write, not open(): a file object costs fstat, ioctl and lseek calls per file
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_TEMP_IDS = itertools.count(int.from_bytes(os.urandom(4), "big"))


def _reseed_temp_ids() -> None:  # a forked child must not count from its parent's number
    global _TEMP_IDS
    _TEMP_IDS = itertools.count(int.from_bytes(os.urandom(4), "big"))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_temp_ids)


_ARCHIVE_LOCK = threading.Lock()
ARCHIVE_FILESYSTEMS = (TarFileSystem, ZipFileSystem)

_FS_CACHE: dict[tuple[str, str], tuple[fsspec.AbstractFileSystem, str]] = {}


def _fs_key(url: str, options: Mapping[str, Any]) -> tuple[str, str]:
    return url, repr(sorted(options.items()))


def _open(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    key = _fs_key(url, options)
    if key not in _FS_CACHE:
        if url.endswith((".tar", ".zip")) and "::" not in url and \
                not url.startswith(("tar://", "zip://")):
            fs = fsspec.filesystem(url[-3:], fo=url, target_options=options or None)
            _FS_CACHE[key] = (fs, "")
        else:
            fs, path = fsspec.core.url_to_fs(url, **options)
            if isinstance(fs, LocalFileSystem):
                path = os.path.abspath(path)
            _FS_CACHE[key] = (fs, path.rstrip("/") if path != "/" else path)
    return _FS_CACHE[key]
