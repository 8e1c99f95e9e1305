"""An in-memory FinalizeIO for the writers' finalizer tests: objects in a dict, so every I/O a
finalizer does is visible (which objects it opens, commits, discards, moves and deletes)."""

from __future__ import annotations

import contextlib
import io

from maskcore.formats.base import FinalizeIO


class Store:
    """Objects in a dict; `opened` logs every open, `discarded` every aborted write."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.opened: list[str] = []
        self.archives: list[bool] = []  # open_output's archive flag, per opened key
        self.discarded: list[str] = []
        self.problems: list[str] = []
        self.recorded: list[dict] = []

    @contextlib.contextmanager
    def open_output(self, key, *, archive=False):
        self.opened.append(key)
        self.archives.append(archive)
        buf = io.BytesIO()
        try:
            yield buf
        except BaseException:
            self.discarded.append(key)
            raise
        self.objects[key] = buf.getvalue()

    def io(self) -> FinalizeIO:
        def move(src, dst):
            self.objects[dst] = self.objects.pop(src)

        def delete(keys):
            for k in keys:
                del self.objects[k]

        return FinalizeIO(
            read=lambda k: self.objects[k],
            read_many=lambda keys, missing_ok=False: {k: self.objects[k] for k in keys
                                                      if k in self.objects or not missing_ok},
            write_many=self.objects.update, open_output=self.open_output,
            problem=self.problems.append, exists=lambda k: k in self.objects, delete=delete,
            move=move, record=self.recorded.append)
