"""Name rules (maskcore/paths.py): `component_problem` is the one rule for a component of an
output key; `key_problem` applies it to whole keys; `Planned.covers` is what drift tests use."""

from __future__ import annotations

import pytest

from maskcore.paths import (
    MAX_COMPONENT_BYTES,
    MAX_KEY_BYTES,
    Planned,
    component_problem,
    key_problem,
)


@pytest.mark.parametrize("name, why", [
    ("", "other than empty"),
    (".", "other than empty"),
    ("..", "other than empty"),
    ("a/b", "without '/'"),
    ("a\\b", "without '/'"),
    ("line\nbreak.png", "control characters"),
    ("cr\r.png", "control characters"),
    ("nul\x00.png", "control characters"),
    ("tab\t.png", "control characters"),
    ("del\x7f.png", "control characters"),
    ("c1\x85.png", "control characters"),  # NEL: str.splitlines() splits on it
    ("ls\u2028.png", "control characters"),
    ("ps\u2029.png", "control characters"),
    ("surrogate\udcff.png", "control characters"),  # undecodable bytes (surrogateescape)
    ("x" * (MAX_COMPONENT_BYTES + 1), "at most 255 bytes"),
    ("é" * 128, "at most 255 bytes"),  # 128 characters, 256 bytes in UTF-8
    (b"bytes.png", "a name (text)"),
    (None, "a name (text)"),
])
def test_bad_components_are_named(name, why):
    problem = component_problem(name)
    assert problem is not None and why in problem


@pytest.mark.parametrize("name", [
    "a.png", "x" * MAX_COMPONENT_BYTES, "é" * 127, "with spaces and (parens).jpg",
    "ñandú 画像.png", "emoji 🐈.png", "nbsp\u00a0.png", "...", ".hidden", "-dash",
    "a:b",  # a colon is a legal POSIX and S3 name (only a leading drive letter is refused)
])
def test_good_components_pass(name):
    assert component_problem(name) is None


@pytest.mark.parametrize("key, why", [
    ("/abs/a.png", "a relative key"),
    ("C:/a.png", "a relative key"),
    ("a/../b.png", "other than empty"),
    ("a//b.png", "other than empty"),
    ("a/b/", "other than empty"),
    ("a/line\n/b.png", "control characters"),
    ("/".join(["d" * 200] * 6), "at most 1024 bytes"),
    (42, "a key (text)"),
])
def test_bad_keys_are_named(key, why):
    problem = key_problem(key)
    assert problem is not None and why in problem


def test_long_but_valid_key_passes():
    key = "/".join(["d" * 200] * 5)
    assert len(key) <= MAX_KEY_BYTES and key_problem(key) is None


def test_planned_covers_files_shared_and_folder_contents_only():
    p = Planned(files=("f/a.png",), folders=("f/inst/a",), shared=("f/list.txt",))
    assert p.covers("f/a.png") and p.covers("f/list.txt") and p.covers("f/inst/a/car.png")
    assert not p.covers("f/inst/a") and not p.covers("f/inst/ab/car.png")
    assert not p.covers("f/a.png/x")
