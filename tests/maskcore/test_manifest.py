"""Manifest lines (maskcore/manifest.py): `to_line` writes exactly what json.dumps with
ensure_ascii=False writes (the separators, UTF-8 as is, the escapes), for the names a hostile
dataset can hold, and reads back to the same entry."""

from __future__ import annotations

import json

import pytest

from maskcore.manifest import ManifestEntry, fingerprint

NAMES = ["t000001.png", "é ü 中文.png", 'a"b\\c/d.png', "tab\there.png", "nul\x00.png",
         "del\x7f.png", "line\u2028sep.png", "\U0001f600.png", "c1\x85.png", ""]


@pytest.mark.parametrize("name", NAMES)
def test_a_line_is_json_dumps_of_the_fields_in_order(name):
    e = ManifestEntry("ds/" + name, name, "ok", None,
                      {"settings": "f" * 64, "image": {**fingerprint("ds/img/" + name, b"x"),
                                                       "tag": "268-1764500000.25"}},
                      [fingerprint(f"supervisely/ds/{name}", b"\x89PNG" * k) for k in range(3)],
                      {name: 2**40, "car": 0}, 2**63 - 1, {"tags": 3})
    fields = {k: getattr(e, k) for k in ManifestEntry.__dataclass_fields__}
    line = e.to_line()
    assert line == json.dumps(fields, ensure_ascii=False) + "\n"
    assert ManifestEntry.from_line(line) == e


def test_a_failed_line_keeps_its_reason():
    e = ManifestEntry("ds", "x.png", "failed", error='ItemError: Expected "a" got \u00ab\u00bb')
    assert e.to_line() == json.dumps(
        {k: getattr(e, k) for k in ManifestEntry.__dataclass_fields__}, ensure_ascii=False) + "\n"
