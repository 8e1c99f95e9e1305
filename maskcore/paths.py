"""Output keys: relative, '/'-separated, and never able to escape the output root.

`join(*parts)` builds a key from trusted layout names and untrusted names (datasets, image
names, class titles, ids with sub-folders) and refuses anything that could leave the root:
absolute paths, drive letters, backslashes, NUL, empty or '.'/'..' components.
`component(name)` makes one untrusted name safe as a single path component (class titles may
contain '/': they become '_' rather than sub-folders).
"""

from __future__ import annotations

from .errors import ItemError, expected

_FORBIDDEN = ("\\", "\x00")


def check_relative(path: str, what: str = "path") -> str:
    """`path` itself if it is a clean relative key, else ItemError."""
    if not path or path.startswith("/") or any(c in path for c in _FORBIDDEN) or (
        len(path) > 1 and path[1] == ":"
    ):
        raise ItemError(expected(f"a relative {what} inside the output", path))
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ItemError(expected(f"a relative {what} inside the output", path))
    return path


def join(*parts: str) -> str:
    return check_relative("/".join(p.strip("/") for p in parts if p), "output key")


def component(name: str) -> str:
    out = name.replace("/", "_").replace("\\", "_").replace("\x00", "_")
    if out in ("", ".", ".."):
        out = "_" + out
    return out
