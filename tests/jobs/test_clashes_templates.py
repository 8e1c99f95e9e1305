"""Plain names take the writers' key templates in jobs/clashes.py (`_template`), the others
`planned_keys`: on a generated set of hostile names (case variants, same stems, names that
are folders of others, odd unicode, over-long names, names that look like templates), with
all formats, both paths give the same failures with the same reasons."""

from __future__ import annotations

import random

import pytest

from jobs.clashes import TAG_LEN, detect_clashes
from jobs.listing import ItemRef
from maskcore.formats import FORMATS
from tests.maskcore.test_key_templates import DATASETS, OPTIONS, hostile_names

ALL = ("supervisely", "cvat", "clearml", "zarr")


def failures(items, raw):
    options = {f: FORMATS[f].Options.from_mapping(raw.get(f, {}), prefix=f, defaults={})
               for f in ALL}
    with detect_clashes(items, formats=ALL, options=options) as report:
        return {(ds, name): reason for _, ds, name, reason in report.failures()}


def hostile_items(seed: int) -> list[ItemRef]:
    rng = random.Random(seed)
    names = hostile_names(600, seed)
    # plain names that clash with each other and with odd ones: twins, case, folders
    names += ["x.png", "x.jpg", "X.png", "x", "x/y.png", "x.png/z.jpg", "class.png",
              "sub/class.png", "y" * 250 + ".png", "ImageSets", "a.b.png", "a.b", "a.b/c.png"]
    items = {(rng.choice(DATASETS), n) for n in names}
    items |= {("ds", n) for n in names[:200]} | {("zarr", "ds"), ("ds", "zarr.json")}
    return [ItemRef(ds, n, None, None, "listed bad" if i % 97 == 0 else None)
            for i, (ds, n) in enumerate(sorted(items))]


@pytest.mark.parametrize("raw", OPTIONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_templates_and_planned_keys_find_the_same_clashes(monkeypatch, seed, raw):
    items = hostile_items(seed)
    fast = failures(items, raw)
    monkeypatch.setattr("jobs.clashes._template", lambda dataset, planners: None)
    slow = failures(items, raw)
    assert fast == slow
    assert len(fast) > 100  # bad names, over-long keys and clashes of plain names
    assert any("also an output of" in r for r in fast.values())


def test_a_lone_surrogate_name_fails_alone():
    """JSON listings can hold '\\ud800' (an escape): SQLite cannot store it as text."""
    items = [ItemRef("ds", "a\ud800.jpg", None, None), ItemRef("ds", "b.jpg", None, None),
             ItemRef("ds\udfff", "c.jpg", None, None)]
    options = {f: FORMATS[f].Options.from_mapping({}, prefix=f, defaults={}) for f in ALL}
    with detect_clashes(items, formats=ALL, options=options) as report:
        out = list(report.annotate(items))
        assert report.problem("ds", "a\ud800.jpg").startswith("image name: Expected")
        assert report.problem("ds\udfff", "c.jpg").startswith("dataset: Expected")
    assert [r.problem is not None for r in out] == [True, False, True]


def every_row(blocks, stack):
    for block in blocks:
        for row in block:
            yield row[:-TAG_LEN], row


@pytest.mark.parametrize("seed", [3, 4])
def test_the_scan_skips_only_rows_that_change_nothing(monkeypatch, seed):
    """`_interesting` hands `_scan` only the rows next to a same or nested key: the scan of
    every row finds the same failures (small blocks: many block edges)."""
    items = hostile_items(seed)
    items += [ItemRef("n", f"{'d/' * k}x{i}.png", None, None) for k in range(4)
              for i in range(30)]
    items += [ItemRef("n", f"{'d/' * k}x{i}.png/y.png", None, None) for k in range(3)
              for i in range(0, 30, 7)]
    monkeypatch.setattr("jobs.clashes.RUN_BLOCK", 5)
    monkeypatch.setattr("jobs.clashes.ROW_BYTES", 64 * 2**20 // 40)  # runs of 40 rows
    skipping = failures(items, {})
    monkeypatch.setattr("jobs.clashes._interesting", every_row)
    assert failures(items, {}) == skipping
    assert len(skipping) > 100
