"""Output keys: relative, '/'-separated, and never able to escape the output root.

`join(*parts)` builds a key from trusted layout names and untrusted names (datasets, image
names, class titles, ids with sub-folders) and refuses anything that could leave the root:
absolute paths, drive letters, backslashes, NUL, empty or '.'/'..' components.
`component(name)` makes one untrusted name safe as a single path component (class titles may
contain '/': they become '_' rather than sub-folders).

Name rules (SPEC 4, checked at plan time, before any work): `component_problem(part)` is THE
rule for "may this be one component of an output key": not empty, not '.' or '..', no '/' or
'\\', no control character (C0, DEL, C1, NUL, line or paragraph separators: a newline would
become an extra line in ImageSets lists), valid UTF-8, at most 255 bytes in UTF-8 (NAME_MAX of
common filesystems). `key_problem(key)` applies it to every component of a '/'-separated key
and names absolute keys, and keys longer than S3 allows (1024 bytes).

`Planned` is what a writer's `planned_keys` / `reserved_keys` declare without rendering
(jobs/clashes.py detects overlaps): `files` only this owner writes, `folders` only this owner
writes into (their content may be unknown before rendering), `shared` files that several
declarations may name and that are written once (sidecars such as list files or group nodes).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import NamedTuple

from .errors import ItemError, expected

_DOTS = frozenset({"", ".", ".."})


def _plain(path: str) -> bool:
    """The common clean key, decided without splitting: no empty component (no leading,
    trailing or double '/'), none starting with '.' (so none is '.' or '..'), no '\\' or NUL,
    no drive letter."""
    return bool(path) and path[0] not in "/." and "/." not in path and "//" not in path and (
        path[-1] != "/" and "\\" not in path and "\x00" not in path and path[1:2] != ":")


def check_relative(path: str, what: str = "path") -> str:
    """`path` itself if it is a clean relative key, else ItemError."""
    if _plain(path):
        return path
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or (
        len(path) > 1 and path[1] == ":"
    ) or not _DOTS.isdisjoint(path.split("/")):
        raise ItemError(expected(f"a relative {what} inside the output", path))
    return path


def join(*parts: str) -> str:
    key = "/".join(parts)
    if _plain(key):  # then no part is empty or has a '/' to strip
        return key
    return check_relative("/".join([p.strip("/") for p in parts if p]), "output key")


@lru_cache(maxsize=4096)
def folder(*parts: str) -> str:
    """`join(*parts) + '/'`, cached: the prefix of the keys of many items under one folder
    (`prefix + leaf` is a clean key when `leaf` is: plan-time clash detection builds ~10 keys
    per item this way)."""
    return join(*parts) + "/"


def component(name: str) -> str:
    out = name.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    if out in ("", ".", ".."):
        out = "_" + out
    return out


MAX_COMPONENT_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, APFS, NTFS (in UTF-16 units there)
MAX_KEY_BYTES = 1024  # the longest S3 object key
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def component_problem(part: str) -> str | None:
    """Why `part` cannot be one component of an output key, or None if it can (the rule)."""
    if not isinstance(part, str):
        return expected("a name (text)", part)
    if part in ("", ".", ".."):
        return expected("a name other than empty, '.' or '..'", part)
    if "/" in part or "\\" in part:
        return expected("a name without '/' or '\\'", part)
    if not part.isprintable():  # fast path: only unusual names look at each character
        for c in part:
            if unicodedata.category(c) in _BAD_CATEGORIES:
                return expected("a name without control characters", part)
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        return expected("a name in valid UTF-8", part)
    if size > MAX_COMPONENT_BYTES:
        return expected(f"a name of at most {MAX_COMPONENT_BYTES} bytes in UTF-8",
                        f"{size} bytes ({part[:40]}...)")
    return None


def key_problem(key: str) -> str | None:
    """Why `key` (relative, '/'-separated) cannot be an output key, or None if it can."""
    if not isinstance(key, str):
        return expected("a key (text)", key)
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        return expected("a relative key", key)
    parts = key.split("/")
    if key.isprintable() and "\\" not in key and _DOTS.isdisjoint(parts) and (
            len(key) <= MAX_COMPONENT_BYTES and key.isascii()):
        return None  # the common case, decided without looking at each component
    for part in parts:
        problem = component_problem(part)
        if problem:
            return problem
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return expected(f"a key of at most {MAX_KEY_BYTES} bytes in UTF-8",
                        f"{len(key.encode('utf-8'))} bytes")
    return None


class Planned(NamedTuple):
    """Output keys declared without rendering (see the module docstring)."""

    files: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()

    def covers(self, key: str) -> bool:
        """Whether `key` is one of the declared files or shared files, or inside a folder."""
        return key in self.files or key in self.shared or any(
            key.startswith(f + "/") for f in self.folders)
