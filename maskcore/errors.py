"""One error hierarchy for maskjob.

Messages follow "Expected X. Got Y instead." and name the item or the config key, so a line in
the manifest or on the terminal is enough to find and fix the problem.

- `ItemError`: one bad item (broken JSON, unknown class, invalid geometry, bad image). The job
  records it in the manifest and goes on with the other items.
- `ConfigError`: a bad job configuration. The job stops before any work (exit code 2).
- `InputError`: the input as a whole cannot be read (no project, unknown format). Exit code 2.
"""

from __future__ import annotations


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


def expected(what: str, got: object) -> str:
    """The house style for messages: 'Expected X. Got Y instead.'"""
    shown = repr(got)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return f"Expected {what}. Got {shown} instead."
