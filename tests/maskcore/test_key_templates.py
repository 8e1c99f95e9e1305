"""The writers' `key_template` (plan-time speed, jobs/clashes.py): for every PLAIN name
(`base.plain_name`) whose stem is not one of the template's odd stems, `planned_keys` gives
exactly the template's keys with the stem and name filled in - checked on a generated set of
hostile names and datasets, with every writer option that moves keys."""

from __future__ import annotations

import random

import pytest

from maskcore import paths
from maskcore.errors import ItemError
from maskcore.formats import FORMATS
from maskcore.formats.base import STEM_MARK, plain_name
from maskcore.model import name_stem

PIECES = ["a", "A", "img", ".", "..", "/", "\\", ":", " ", "é", "ß", "\x00", "\n", "\x7f",
          "{", "}", "{0}", "%s", "\x02", "\x03", "\x04", "class", "instance", "zarr.json",
          ".png", ".jpg", ".tar", "_", "-", "~", "C:", "x" * 120, "\u2028", "\ud800", "*"]
DATASETS = ["ds", "a/b", "meta.json", "d.s", "ü", "x{0}", "d:s", "train_x", "class", "zarr",
            "b" * 200, "ImageSets", "s p"]
OPTIONS = [{}, {"supervisely": {"masks_instances": True, "images": False,
                                "masks_semantic_rgb": True},
            "cvat": {"subset_names": "safe"}}]


def hostile_names(n: int = 3000, seed: int = 10) -> list[str]:
    rng = random.Random(seed)
    names = {"a.jpg", "noext", "a.", "a..png", ".hidden", "class.png", "instance", "x" * 255,
             "x" * 251 + ".png", "a:b.png", "a b.png", "é.jpg", "a/b.jpg", "{}.png"}
    while len(names) < n:
        names.add("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6))))
    return sorted(names)


NAMES = hostile_names()


def outcome(fn, *args):
    try:
        return fn(*args)
    except ItemError as e:
        return f"ItemError: {e}"


def test_plain_names_are_safe_components_and_their_stem_too():
    plain = [n for n in NAMES if plain_name(n)]
    assert len(plain) > 100 and len(plain) < len(NAMES) / 2
    for name in plain:
        stem = name_stem(name)
        assert paths.component(name) == name and paths.component(stem) == stem
        assert "/" not in stem and stem not in ("", ".", "..")
        if len(name) <= paths.MAX_COMPONENT_BYTES:
            assert paths.key_problem(name) is None
    for name in NAMES:
        if any(c in name for c in "/\\:\x00\n") or name.startswith(".") or not name.isascii():
            assert not plain_name(name)


@pytest.mark.parametrize("raw", OPTIONS)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_templates_give_the_planned_keys_of_every_plain_name(fmt, raw):
    writer = FORMATS[fmt]
    opts = writer.Options.from_mapping(raw.get(fmt, {}), prefix=fmt, defaults={})
    checked = 0
    for ds in DATASETS:
        try:
            t = writer.key_template(ds, opts)
        except ItemError:  # then every item of the dataset is refused the same way
            assert all(isinstance(outcome(writer.planned_keys, ds, n, opts), str)
                       for n in NAMES[:50])
            continue
        for name in NAMES:
            if not plain_name(name) or name_stem(name) in t.odd_stems:
                continue
            assert writer.planned_keys(ds, name, opts) == t.expand(name), (ds, name)
            checked += 1
        assert all(isinstance(outcome(writer.planned_keys, ds, s + ".png", opts), str)
                   for s in t.odd_stems)
        assert any(STEM_MARK in k for keys in t.planned for k in keys)
    assert checked > 1000
