"""One error hierarchy for maskjob.

Messages follow "Expected X. Got Y instead." and name the item or the config key, so a line in
the manifest or on the terminal is enough to find and fix the problem. Y is rendered by `shown`,
a bounded repr: a hostile value (huge, deeply nested, self-referencing) is cut *before* it is
rendered, never stringified whole.

- `ItemError`: one bad item (broken JSON, unknown class, invalid geometry, bad image). The job
  records it in the manifest and goes on with the other items.
- `ConfigError`: a bad job configuration. The job stops before any work (exit code 2).
- `InputError`: the input as a whole cannot be read (no project, unknown format). Exit code 2.
"""

from __future__ import annotations

import reprlib


class MaskjobError(Exception):
    """Base class of every error maskjob raises on purpose."""


class ItemError(MaskjobError):
    """A single item cannot be exported; `where` names the object inside the item, if any."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(MaskjobError):
    """The job configuration is invalid; `key` is the dotted path of the offending key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else message)


class InputError(MaskjobError):
    """The input dataset as a whole cannot be used."""


SHOWN_CHARS = 120


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxtuple = r.maxlist = r.maxarray = r.maxdict = r.maxset = r.maxfrozenset = 8
    r.maxdeque = 8
    r.maxstring = r.maxother = SHOWN_CHARS
    r.maxlong = 40
    return r


_REPR = _bounded_repr()


def shown(value: object) -> str:
    """A bounded repr of any value: containers cut after a few elements and levels, strings
    and numbers cut before they are rendered, so a huge, deep or self-referencing value costs
    a few microseconds and a few hundred bytes (never `repr` of the whole value)."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value[:SHOWN_CHARS])
    try:
        text = _REPR.repr(value)
    except Exception:  # a hostile __repr__: name the type only
        text = f"<{type(value).__name__}>"
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS - 3] + "..."
    return text


def expected(what: str, got: object) -> str:
    """The house style for messages: 'Expected X. Got Y instead.' (Y bounded, see `shown`)."""
    return f"Expected {what}. Got {shown(got)} instead."
