"""Storage through fsspec only: open roots, list, read, and write many objects concurrently.

A `Root` is a filesystem plus a base path; every key is relative and checked (no escape from
the root, SPEC 4). Roots are small picklable descriptions (`url`, `storage_options`): workers
reopen them, so credentials come from the worker's environment (AWS_* variables, profiles, pod
identity, FSSPEC_S3_ENDPOINT_URL / AWS_ENDPOINT_URL_S3) or from --storage-option, never from the
job file, and are never logged.

Writes: `write_many` sends a batch of objects with one concurrent call (s3fs batches the PUTs);
on a local filesystem it writes each file to a temporary name and renames it, so a reader never
sees half a file. A single PUT on S3 is atomic already.
"""

from __future__ import annotations

import os
import posixpath
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.tar import TarFileSystem
from fsspec.implementations.zip import ZipFileSystem

from maskcore.paths import check_relative

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


@dataclass(frozen=True)
class Root:
    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fs_path(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, path = _open(self.url, dict(self.storage_options))
        return fs, path

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
        return posixpath.join(self.path, check_relative(key, "key"))

    def uri(self, key: str) -> str:
        """The final URL of an object, to be written into outputs (manifests, ClearML frames,
        zarr attrs): credentials in it (URL userinfo, signed query strings) are redacted."""
        fs, path = self.fs_path
        full = posixpath.join(path, key)
        return redact_text(fs.unstrip_protocol(full))

    def read(self, key: str) -> bytes:
        fs = self.fs
        if isinstance(fs, ARCHIVE_FILESYSTEMS):  # one shared file handle: not thread-safe
            with _ARCHIVE_LOCK:
                return fs.cat_file(self.full(key))
        return fs.cat_file(self.full(key))

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several objects with one concurrent call (s3fs batches the GETs)."""
        if not keys:
            return {}
        fs = self.fs
        if isinstance(fs, ARCHIVE_FILESYSTEMS):
            return {k: self.read(k) for k in keys}
        full = {self.full(k): k for k in keys}
        got = fs.cat(list(full))
        return {full[p]: data for p, data in got.items()}

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
        base_norm = base.rstrip("/")
        for p in sorted(found):
            rel = p[len(base_norm):].lstrip("/") if p.startswith(base_norm) else p
            yield rel

    def list_tags(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """(key, tag) of every file under `prefix`, sorted; the tag (size and ETag, or size
        and mtime) changes whenever the object is replaced: incremental runs compare it."""
        fs, base = self.fs_path
        top = posixpath.join(base, prefix) if prefix else base
        try:
            found = _find(fs, top, detail=True)
        except FileNotFoundError:
            return
        base_norm = base.rstrip("/")
        for p in sorted(found):
            info = found[p]
            rel = p[len(base_norm):].lstrip("/") if p.startswith(base_norm) else p
            version = info.get("ETag") or info.get("etag") or info.get("mtime") or \
                info.get("LastModified") or ""
            yield rel, f"{info.get('size', '')}-{str(version).strip(chr(34))}"

    def write_many(self, objects: Mapping[str, bytes]) -> None:
        if not objects:
            return
        fs, _ = self.fs_path
        full = {self.full(k): v for k, v in objects.items()}
        if isinstance(fs, LocalFileSystem):
            for path, data in full.items():
                _atomic_local_write(path, data)
        else:
            fs.pipe(full)

    def write(self, key: str, data: bytes) -> None:
        self.write_many({key: data})

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.fs.rm([self.full(k) for k in keys])


def _find(fs: fsspec.AbstractFileSystem, top: str, **kwargs: Any) -> Any:
    """fs.find that leaves no listing behind in the filesystem's cache (s3fs keeps one): other
    processes write under the listed prefix afterwards (workers commit manifest parts), and
    s3fs answers info/exists/cat_file of a path from a cached listing of its parent - so an
    object written after the listing would be reported missing (FileNotFoundError)."""
    try:
        return fs.find(top, **kwargs)
    finally:
        fs.invalidate_cache()


def _atomic_local_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


_ARCHIVE_LOCK = threading.Lock()
ARCHIVE_FILESYSTEMS = (TarFileSystem, ZipFileSystem)

_FS_CACHE: dict[tuple[str, str], tuple[fsspec.AbstractFileSystem, str]] = {}


def _open(url: str, options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    key = (url, repr(sorted(options.items())))
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
