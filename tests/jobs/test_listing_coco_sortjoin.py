"""The COCO listing's sort join (jobs/listing_coco.py `_SortJoin`): a file not in order whose
image records are plain with integer ids is joined by external sorts, never SQLite rows. It
must give exactly the refs (every field, in order), count, images folder and warnings of the
rows + SQLite join, and each image the per-image JSON of the in-memory split, with one run or
tiny runs merged in many rounds: images without annotations, annotations of no image (or of a
string / bool image id), repeated ids, names and stems, ids of 18-19 digits, negative ids,
unicode names, annotations before images, a late record only rows take (the file is read
again), several files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from jobs import external_sort, listing_coco
from tests.jobs.test_external_sort import count_and_peak
from tests.jobs.test_listing_coco import NAMES, coco_doc, listing_of, split_of, touch, write

TINY = {"RUN": 3, "CHUNK": 2, "FAN_IN": 2}  # many runs, merged in several rounds


def run(url: Path, monkeypatch, *, join: bool, tiny: bool = False, block: int = 64
        ) -> tuple[tuple[object, ...], list[str]]:
    """(listing_of's result without its last field, datasets that took the sort join) with
    the sort join allowed or not (then such files take rows + SQLite, as before it)."""
    used: list[str] = []
    refs = listing_coco._sort_joined_refs

    def spy(spool, cf, cats, cap):
        used.append(cf.dataset)
        return refs(spool, cf, cats, cap)

    with monkeypatch.context() as m:
        m.setattr(listing_coco, "SORT_JOIN", join)
        m.setattr(listing_coco, "_sort_joined_refs", spy)
        if tiny:
            for name, value in TINY.items():
                m.setattr(external_sort, name, value)
            m.setattr(listing_coco, "OUT_RUN", 2)
            m.setattr(listing_coco, "STEM_BATCH", 2)
        got = listing_of(url, monkeypatch, careful=False, block=block)[:-1]
    return got, sorted(set(used))


def same_as_rows(url: Path, monkeypatch, **kw) -> tuple[tuple[object, ...], list[str]]:
    """The sort join's listing, asserted equal to the rows path's (and with tiny runs)."""
    rows, none = run(url, monkeypatch, join=False, **kw)
    assert none == []
    joined, used = run(url, monkeypatch, join=True, **kw)
    assert joined == rows
    tiny, used_tiny = run(url, monkeypatch, join=True, tiny=True, **kw)
    assert tiny == rows and used_tiny == used
    return joined, used


def shuffled_doc(rnd: random.Random, names: list[str], ids: list[object],
                 anns: list[tuple[object, object]]) -> dict:
    doc = coco_doc(names, ids, anns)
    rnd.shuffle(doc["images"])
    doc["annotations"].sort(key=lambda a: str(a["category_id"]))  # by category, as COCO 2017
    return doc


def missing(problem: str | None) -> bool:
    """No problem, or only a missing image file (the split does not look at files)."""
    return problem is None or "no such file" in problem


BIG = [10**18 - 1, 2**63 - 1, 2**63, 10**19 - 1, -(2**63), -(10**17)]  # 18-19 digits


@pytest.mark.parametrize("seed", range(40))
def test_sort_join_equals_rows_and_the_in_memory_split(tmp_path, monkeypatch, seed):
    rnd = random.Random(seed)
    files = rnd.choice([1, 1, 2, 3])
    expect, joined = [], set()
    for f in range(files):
        names = rnd.sample(NAMES, rnd.randint(1, 14))
        pool = [*range(-5, 40), *BIG] if rnd.random() < 0.3 else list(range(-5, 40))
        ids: list[object] = rnd.sample(pool, len(names))
        if len(ids) > 1 and rnd.random() < 0.4:
            ids[rnd.randrange(1, len(ids))] = ids[0]  # a repeated id
        if len(names) > 1 and rnd.random() < 0.3:
            names[-1] = names[0]  # a repeated name (so a repeated stem)
        anns = [(rnd.choice([*ids, -9, 41, 10**18 - 7]), rnd.choice([3, 4, "5"]))
                for _ in range(rnd.randint(0, 40))]
        if anns and rnd.random() < 0.2:
            anns[rnd.randrange(len(anns))] = (rnd.choice(["7", True, None, 3.0]), 3)
        stringy = rnd.random() < 0.15
        if stringy:
            ids[rnd.randrange(len(ids))] = "s"  # a string id: the file takes rows
        path = tmp_path / "annotations" / f"instances_d{f}.json"
        write(path, shuffled_doc(rnd, names, ids, anns), images_first=rnd.random() < 0.7)
        touch(tmp_path, *[f"images/d{f}/{n}" for k, n in enumerate(names)
                          if k == 0 or rnd.random() < 0.85])
        expect.append(split_of(path))
        if not stringy and not set(ids) & set(BIG[1:4]):  # 19 digits: the ijson pass
            joined.add(f"d{f}")
    (refs, count, _root, warnings), used = same_as_rows(
        tmp_path, monkeypatch, block=rnd.choice([64, 256, 1 << 18]))
    assert set(used) <= joined  # (a file that happens to be in order takes the merge)
    assert count == sum(len(images) for images, _orphans in expect)
    for f, (images, orphans) in enumerate(expect):
        got = sorted(((r.name, r.ann_inline if missing(r.problem) else None)
                      for r in refs if r.dataset == f"d{f}"), key=lambda i: (i[0], i[1] or b""))
        assert got == images
        said = [w for w in warnings if w.startswith(f"annotations/instances_d{f}.json:")]
        assert said == ([f"annotations/instances_d{f}.json: {orphans} annotations name no "
                         "image of the file; they are not exported"] if orphans else [])


def test_coco2017_layout_takes_the_sort_join(tmp_path, monkeypatch):
    """Images in no name order, annotations by category: the sort join is taken; an image without
    annotations, a missing image file, orphans, repeated id / name / stem fail or pass as
    the rows path says, in (name, seq) order."""
    names = ["b.jpg", "a.jpg", "é/c.jpg", "\U0001f600.jpg", "a.jpg", "b.png", "d.jpg"]
    ids = [5, 10**18 - 1, 9, -3, 11, 12, 9]  # 18 digits (19 take the ijson pass)
    anns = [(5, 3), (9, 4), (10**18 - 1, 3), (77, 3), (5, 4), (12, 3), (11, 4), (-3, "5")]
    doc = coco_doc(names, ids, anns)  # images as listed (not in name order)
    doc["annotations"].sort(key=lambda a: str(a["category_id"]))  # by category
    write(tmp_path / "instances_x.json", doc)
    touch(tmp_path, *[f"images/{n}" for n in names if n != "d.jpg"])
    (refs, count, _root, warnings), used = same_as_rows(tmp_path, monkeypatch)
    assert used == ["x"] and count == 7
    assert warnings == ["instances_x.json: 1 annotations name no image of the file; they are "
                        "not exported"]
    assert [r.name for r in refs] == sorted(names)  # 'a.jpg' twice: in file order
    by = {(r.name, r.problem is None): r for r in refs}
    assert "unique image ids" in by["d.jpg", False].problem
    assert "b.png and b.jpg" in by["b.png", False].problem
    assert "unique file names" in by["a.jpg", False].problem
    inline = json.loads(by["b.jpg", True].ann_inline)
    assert [a["category_id"] for a in inline["annotations"]] == [3, 4]
    assert json.loads(by["a.jpg", True].ann_inline)["image"]["id"] == 10**18 - 1
    assert "no such file" not in (by["é/c.jpg", True].problem or "")


def test_a_late_record_only_rows_take_reads_the_file_again(tmp_path, monkeypatch):
    """Plain records with integer ids, then (a later block) a string id: the sort join gives
    the file up, it is read again into rows, and the refs are the rows path's."""
    n = 40
    names = [f"{k:03d}.jpg" for k in range(n)]
    ids: list[object] = [(k * 17) % n for k in range(n)]
    ids[-1] = "late"
    write(tmp_path / "instances_x.json", coco_doc(names, ids, [(k, 3) for k in range(n)]))
    touch(tmp_path, *[f"images/{x}" for x in names])
    (refs, count, _root, _w), used = same_as_rows(tmp_path, monkeypatch, block=64)
    assert used == [] and count == n and sum(1 for r in refs if r.problem) == 0
    resets = []
    reset = listing_coco._CocoFile._reset
    monkeypatch.setattr(listing_coco._CocoFile, "_reset",
                        lambda cf, spool: resets.append(cf.join) or reset(cf, spool))
    run(tmp_path, monkeypatch, join=True)
    assert len(resets) == 1 and resets[0] is not None  # the join was under way


def test_a_bad_annotation_stays_in_the_sort_join(tmp_path, monkeypatch):
    """An annotation that is not an object, or names a string image id, is an orphan of the
    join (no image has such an id); a bool or an integral float joins the id it stands for
    (coco.id_alias: that image then fails at parse) - the file stays in the sort join."""
    names = ["b.jpg", "a.jpg"]
    doc = coco_doc(names, [2, 1], [(1, 3), (2, 3)])
    doc["annotations"] += [{"image_id": "1"}, {"image_id": 1.0}, {"image_id": True}, 7,
                           {"id": 9, "image_id": 2, "category_id": [3]}]
    write(tmp_path / "instances_x.json", doc)
    touch(tmp_path, *[f"images/{x}" for x in names])
    (refs, _count, _root, warnings), used = same_as_rows(tmp_path, monkeypatch)
    assert used == ["x"]
    assert warnings == ["instances_x.json: 2 annotations name no image of the file; they are "
                        "not exported"]
    assert [a["image_id"] for a in json.loads(refs[0].ann_inline)["annotations"]] == [1, 1.0, True]
    assert len(json.loads(refs[1].ann_inline)["annotations"]) == 2


def test_refs_of_the_sort_join_hold_runs_not_the_file(tmp_path, monkeypatch):
    """Iterating a shuffled file's refs reads its kept runs a chunk at a time: the memory a
    pass allocates at its peak stays far below the file's records."""
    from jobs.listing import list_input
    from jobs.storage import Root

    n = 40_000
    names = [f"img_{i:06d}.jpg" for i in range(n)]
    doc = shuffled_doc(random.Random(5), names, [(i * 7919) % n for i in range(n)],
                       [(i, 3 + i % 2) for i in range(n)])
    write(tmp_path / "instances_x.json", doc)
    size = (tmp_path / "instances_x.json").stat().st_size
    used = []
    refs = listing_coco._sort_joined_refs
    monkeypatch.setattr(listing_coco, "_sort_joined_refs",
                        lambda *a: used.append(1) or refs(*a))
    monkeypatch.setattr(listing_coco, "OUT_RUN", 2048)  # ~20 runs kept
    monkeypatch.setattr(external_sort, "CHUNK", 16)  # of 16 rows each read at a time
    with list_input(Root(str(tmp_path)), "coco") as got:
        count, peak = count_and_peak(got.iter_refs())
    assert used and count == n
    assert peak < size / 2, (peak, size)
