"""Manifest entries, merging and the summary (pure: bytes in, bytes out).

One JSON line per item (SPEC 2): `dataset`, `item`, `status` (ok | failed | unchanged),
`error`, `inputs` ({role: {key, size, checksum}}), `outputs` ([{key, size, checksum}]),
`class_pixels` ({class: pixels}), `instances`, and `not_painted` ({kind: count}: what the
annotation holds but no mask shows - tags, attributes, occluded flags, polylines, points,
skeletons, cuboids under CVAT's rule - so nothing is dropped without a trace; omitted from
older lines, read back as {}). Checksums are `md5:<hex>` of the bytes written,
which is also the ETag S3 gives a single-part upload.
The summary (`manifest.json`) is computed from the merged lines in one streaming pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

STATUSES = ("ok", "failed", "unchanged")
_LINE = msgspec.json.Encoder()  # one encoder for every manifest line


def checksum(data: bytes) -> str:
    return "md5:" + hashlib.md5(data, usedforsecurity=False).hexdigest()


def fingerprint(key: str, data: bytes) -> dict[str, Any]:
    return {"key": key, "size": len(data), "checksum": checksum(data)}


@dataclass
class ManifestEntry:
    dataset: str
    item: str
    status: str
    error: str | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    class_pixels: dict[str, int] = field(default_factory=dict)
    instances: int = 0
    not_painted: dict[str, int] = field(default_factory=dict)

    def to_line(self) -> str:
        """The fields in order, as `json.dumps(..., ensure_ascii=False)` writes them (", " and
        ": " separators, UTF-8 as is; floats, which no line of ours holds, in msgspec's
        shortest form: 1e-07 as 1e-7), encoded by msgspec ~5x faster. A lone surrogate
        (JSON's "\\ud800", which no UTF-8 text holds) in any text of the entry - a reason
        quoting a hostile class title - is written escaped, as `\\ud800`: the line is always
        written (else its partition failed on every attempt and the job could never finish)."""
        try:
            raw = _LINE.encode(self)
        except UnicodeEncodeError:
            raw = _LINE.encode(_valid_text(dataclasses.asdict(self)))
        return msgspec.json.format(raw, indent=0).decode() + "\n"

    @classmethod
    def from_line(cls, line: str) -> ManifestEntry:
        d = json.loads(line)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _valid_text(value: Any) -> Any:
    """`value` with every str in it (keys too) made valid Unicode: surrogates as `\\udXXX`."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    return value


def entry_id(dataset: str, item: str) -> str:
    return f"{dataset}/{item}"


MAX_LISTED = 1000  # failures (and finalize problems) listed in the summary; the rest counted
MAX_TEXT = 500  # characters of one listed error or name


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _sizes(outputs: list[Any]) -> int:
    if outputs and isinstance(outputs[0], dict):
        return sum(int(o.get("size", 0)) for o in outputs)
    return sum(o.size for o in outputs)


@dataclass
class Summary:
    """Totals accumulated line by line. O(1) in the number of items: counters, per-class
    totals, and at most `max_failures_listed` failures and problems (each text cut to
    MAX_TEXT characters). Takes a ManifestEntry or anything with its attributes (finalize's
    FinalEntry, whose outputs are objects with `.size`)."""

    items: int = 0
    by_status: Counter = field(default_factory=Counter)
    outputs: int = 0
    bytes_written: int = 0
    instances: int = 0
    class_pixels: Counter = field(default_factory=Counter)
    not_painted: Counter = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    max_failures_listed: int = MAX_LISTED
    problems: list[str] = field(default_factory=list)
    problems_total: int = 0

    def add(self, e: Any) -> None:
        self.items += 1
        self.by_status[e.status] += 1
        self.outputs += len(e.outputs)
        self.bytes_written += _sizes(e.outputs)
        self.instances += e.instances
        self.class_pixels.update(e.class_pixels)
        self.not_painted.update(e.not_painted or {})
        if e.status == "failed" and len(self.failures) < self.max_failures_listed:
            self.failures.append({"dataset": _short(e.dataset), "item": _short(e.item),
                                  "error": _short(e.error or "")})

    def problem(self, message: str) -> None:
        """Something finalize could not do (an output left out, a sidecar not written)."""
        self.problems_total += 1
        if len(self.problems) < self.max_failures_listed:
            self.problems.append(_short(message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "ok": self.by_status.get("ok", 0),
            "failed": self.by_status.get("failed", 0),
            "unchanged": self.by_status.get("unchanged", 0),
            "outputs": self.outputs,
            "bytes_written": self.bytes_written,
            "instances": self.instances,
            "class_pixels": dict(sorted(self.class_pixels.items())),
            "not_painted": dict(sorted(self.not_painted.items())),
            "failures": self.failures,
            "failures_truncated": self.by_status.get("failed", 0) > len(self.failures),
            "problems": self.problems,
            "problems_total": self.problems_total,
        }


def summarize(lines: Iterable[str]) -> Summary:
    s = Summary()
    for line in lines:
        if line.strip():
            s.add(ManifestEntry.from_line(line))
    return s
