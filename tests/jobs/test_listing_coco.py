"""The COCO listing's in-order path (jobs/listing_coco.py `_sorted_refs`): a file whose
records are plain and in order is streamed from msgpack blocks by one merge, and gives exactly
the refs (every field), count, images folder and orphan count of the careful path (rows in
SQLite and one join), whatever the input: random layouts with repeated, unsorted or string
ids, orphans, missing images, names whose order differs in UTF-8 / UTF-16, several files,
folders nested in another's, and blocks cut anywhere."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import pytest

from jobs import listing_coco
from jobs.listing import list_input
from jobs.storage import Root
from maskcore.model import name_stem

NAMES = ["a.jpg", "b.jpg", "b.png", "B.jpg", "c d.jpg", "é.jpg", "z/é.jpg", "z/a.jpg",
         "\U0001f600.jpg", "\uff21.jpg", "a.b.jpg", "a.jpg.jpg", "x'y.jpg", 'q"}],[{.jpg',
         "0.jpg", "00.jpg", "v1.0/a.jpg", "ä", ".hidden.jpg", "z-z.jpg"]


def listing_of(url: Path, monkeypatch, *, careful: bool, block: int, **kw
               ) -> tuple[object, ...]:
    """(refs, count, image root, warnings, whether some file took the in-order path) of a
    listing; `careful` sends every file to the rows + join (the path before the merge)."""
    used = []
    merge = listing_coco._sorted_refs

    def spy(spool, cf, cats, cap):
        used.append(cf.dataset)
        return merge(spool, cf, cats, cap)

    log = logging.getLogger("maskjob")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())  # type: ignore[method-assign]
    with monkeypatch.context() as m:
        m.setattr(listing_coco._Sections, "BLOCK", block)
        m.setattr(listing_coco, "_sorted_refs", spy)
        if careful:
            m.setattr(listing_coco._CocoFile, "in_order", property(lambda self: False))
        log.addHandler(handler)
        try:
            with list_input(Root(str(url)), "coco", **kw) as got:
                refs = got.refs
                assert refs == got.refs  # re-iterable, the same stream
                out = (refs, got.count, got.image_root.url if got.image_root else None)
        except Exception as e:  # the same error, worded the same, either way
            out = (type(e).__name__, str(e), None)
        finally:
            log.removeHandler(handler)
    return (*out, seen, bool(used))


def both(url: Path, monkeypatch, *, block: int = 1 << 18, **kw) -> tuple[object, ...]:
    fast = listing_of(url, monkeypatch, careful=False, block=block, **kw)
    careful = listing_of(url, monkeypatch, careful=True, block=block, **kw)
    assert not careful[-1]
    assert fast[:-1] == careful[:-1]
    return fast


def coco_doc(names: list[str], ids: list[object], anns: list[tuple[object, object]]) -> dict:
    return {"categories": [{"id": 3, "name": "car"}, {"id": 4, "name": "bus"}],
            "images": [{"id": i, "file_name": n, "width": 8, "height": 6}
                       for i, n in zip(ids, names, strict=True)],
            "annotations": [{"id": 100 + k, "image_id": iid, "category_id": cid,
                             "segmentation": [[1, 1, 5, 1, 5, 4]], "area": 6.5}
                            for k, (iid, cid) in enumerate(anns)]}


def write(path: Path, doc: dict, *, images_first: bool = True) -> None:
    keys = ["categories", "images", "annotations"] if images_first else [
        "annotations", "categories", "images"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: doc[k] for k in keys}, ensure_ascii=False))


def touch(root: Path, *keys: str) -> None:
    for k in keys:
        (root / k).parent.mkdir(parents=True, exist_ok=True)
        (root / k).write_bytes(b"x")


def test_in_order_file_is_merged_and_equals_the_join(tmp_path, monkeypatch):
    names = sorted(["a.jpg", "b.jpg", "é.jpg", "\U0001f600.jpg", "\uff21.jpg", "z/a.jpg"])
    doc = coco_doc(names, list(range(10, 16)),
                   [(9, 3), (10, 3), (10, 4), (12, 3), (12, "5"), (13, 3), (13, 3), (99, 4)])
    write(tmp_path / "instances_x.json", doc)
    touch(tmp_path, *[f"images/{n}" for n in names if n != "b.jpg"], "images/zz.jpg",
          "images/a.jpg.bak")
    refs, count, _root, warnings, merged = both(tmp_path, monkeypatch, block=64)
    assert merged and count == 6
    assert warnings == ["instances_x.json: 2 annotations name no image of the file; they are "
                        "not exported"]
    by = {r.name: r for r in refs}
    assert "no such file" in by["b.jpg"].problem and by["b.jpg"].ann_inline is not None
    inline = json.loads(by["a.jpg"].ann_inline)
    assert [a["id"] for a in inline["annotations"]] == [101, 102]
    assert inline["categories"] == [[3, "car"], [4, "bus"]]
    assert json.loads(by["\uff21.jpg"].ann_inline)["annotations"] == []


@pytest.mark.parametrize(("names", "merged"), [
    # CVAT / datumaro frame order: a name with ' ', '(' or '-' after a stem sorts before it
    (["img (1).jpg", "img-2.png", "img.jpg", "img_3.jpg", "sub/x y.jpg", "sub/x.jpg"], True),
    (["a.b.c", "a.jpg"], False),  # stems 'a.b' > 'a': the names' order is not theirs
    (["a", "a b.jpg"], False),  # a name without extension: "a b." < "a."
    (["img (1).jpg", "img.jpg", "img.png"], False),  # the same stem: the second fails
    (["a", "a.jpg"], False),
])
def test_names_in_order_with_stems_out_of_order(tmp_path, monkeypatch, names, merged):
    doc = coco_doc(names, list(range(1, len(names) + 1)), [(1, 3), (2, 4)])
    write(tmp_path / "instances_x.json", doc)
    touch(tmp_path, *[f"images/{n}" for n in names])
    refs, count, *_rest, got = both(tmp_path, monkeypatch, block=64)
    assert got is merged and count == len(names)
    assert [r.name for r in refs] == names
    failed = [r.name for r in refs if r.problem]
    assert failed == ([names[-1]] if len({name_stem(n) for n in names}) < len(names) else [])


@pytest.mark.parametrize("seed", range(60))
def test_random_layouts_equal_the_join(tmp_path, monkeypatch, seed):
    """Ids, names and annotations in order or not, repeated, string, missing; orphans
    anywhere; images first or last in the file; one to three files; blocks of 1 element to
    whole files: the refs, counts and warnings of the join, and the merge taken whenever a
    file is in order."""
    rnd = random.Random(seed)
    files = rnd.choice([1, 1, 2, 3])
    nested = files > 1 and rnd.random() < 0.3
    expect_merge = False
    for f in range(files):
        names = rnd.sample(NAMES, rnd.randint(1, 12))
        ordered = rnd.random() < 0.8
        if ordered:
            names.sort()
        ids: list[object] = sorted(rnd.sample(range(-5, 40), len(names)))
        if rnd.random() < 0.2 and len(ids) > 1:
            ids[rnd.randrange(1, len(ids))] = ids[0]  # a repeated id
            ordered = False
        if rnd.random() < 0.1 and ids:
            ids[rnd.randrange(len(ids))] = "s"  # a string id
            ordered = False
        pool = [*ids, -9, 7, 41, 99] if ids else [1, 2]
        anns = [(rnd.choice(pool), rnd.choice([3, 4, "5"])) for _ in range(rnd.randint(0, 20))]
        if rnd.random() < 0.85:
            anns.sort(key=lambda a: (str(type(a[0])), a[0]))
        else:
            ordered = False
        if rnd.random() < 0.1 and anns:
            anns[0] = (True, 3)  # no usable image id
            ordered = False
        stems = [name_stem(n) for n in names]
        if stems != sorted(set(stems)):
            ordered = False  # stems out of order ('a.b.jpg' < 'a.jpg'), or repeated
        expect_merge |= ordered
        sub = f"d{f}"
        write(tmp_path / "annotations" / f"instances_{sub}.json",
              coco_doc(names, ids, anns), images_first=rnd.random() < 0.8)
        folder = "images" if nested and f == 0 else f"images/{sub}"
        touch(tmp_path, *[f"{folder}/{n}" for k, n in enumerate(names)
                          if k == 0 or rnd.random() < 0.8])  # the first: folder found
    got = both(tmp_path, monkeypatch, block=rnd.choice([64, 512, 1 << 18]))
    assert isinstance(got[0], list)
    if expect_merge:
        assert got[-1]


def test_folder_inside_another_datasets_folder_is_listed_once(tmp_path, monkeypatch):
    """images/ holds images/b/: its files are listed once (by the walk of images/), so the
    image of both datasets gets its annotation once (each listed folder used to add a row
    of it to the join: its annotations came twice)."""
    write(tmp_path / "annotations" / "instances_a.json",
          coco_doc(["b/x.jpg", "y.jpg"], [1, 2], [(1, 3), (2, 3)]))
    write(tmp_path / "annotations" / "instances_b.json", coco_doc(["x.jpg"], [1], [(1, 3)]))
    touch(tmp_path, "images/b/x.jpg", "images/y.jpg")
    refs, *_rest, merged = both(tmp_path, monkeypatch)
    assert merged
    assert [(r.dataset, r.name, r.image_key) for r in refs] == [
        ("a", "b/x.jpg", "b/x.jpg"), ("a", "y.jpg", "y.jpg"), ("b", "x.jpg", "b/x.jpg")]
    assert [len(json.loads(r.ann_inline)["annotations"]) for r in refs] == [1, 1, 1]


@pytest.mark.parametrize("bad", ["NaN", "12345678901234567890123"])
def test_files_read_by_ijson_or_loaded_whole_never_take_the_merge(tmp_path, monkeypatch, bad):
    text = json.dumps(coco_doc(["a.jpg", "b.jpg"], [1, 2], [(1, 3), (2, 3)]))
    path = tmp_path / "instances_x.json"
    path.write_text(text.replace('"area": 6.5}]', f'"area": {bad}}}]'))
    touch(tmp_path, "images/a.jpg", "images/b.jpg")
    refs, *_rest, merged = both(tmp_path, monkeypatch)
    assert not merged and len(refs) == 2


def test_images_url_shared_by_two_files_is_listed_once_and_merged(tmp_path, monkeypatch):
    write(tmp_path / "annotations" / "instances_a.json",
          coco_doc(["1.jpg", "2.jpg"], [1, 2], [(1, 3), (2, 4)]))
    write(tmp_path / "annotations" / "instances_b.json",
          coco_doc(["2.jpg", "3.jpg"], [5, 6], [(5, 3), (6, 3)]))
    touch(tmp_path, "pics/1.jpg", "pics/2.jpg")
    refs, count, _root, _w, merged = both(tmp_path, monkeypatch, images_url="../pics")
    assert merged and count == 4
    assert [(r.dataset, r.name, r.image_key) for r in refs] == [
        ("a", "1.jpg", "1.jpg"), ("a", "2.jpg", "2.jpg"), ("b", "2.jpg", "2.jpg"),
        ("b", "3.jpg", None)]


def test_a_late_block_out_of_order_moves_the_stored_blocks_into_rows(tmp_path, monkeypatch):
    """Many blocks in order, then one out of order (images and annotations): the blocks
    stored so far go into rows, and a repeated stem / id found late fails as before."""
    names = [f"{i:03d}.jpg" for i in range(50)] + ["010.png", "000.jpg"]
    ids = [*range(50), 50, 0]
    write(tmp_path / "instances_x.json",
          coco_doc(names, ids, [(i, 3) for i in range(50)] + [(3, 4), (0, 4)]))
    touch(tmp_path, *[f"images/{n}" for n in names])
    refs, count, _root, _w, merged = both(tmp_path, monkeypatch, block=64)
    assert not merged and count == 52
    assert sum(1 for r in refs if r.problem) == 2


def test_merge_holds_one_block_at_a_time_not_the_file(tmp_path):
    """Iterating an in-order file's refs reads its blocks one by one: the memory a pass
    allocates at its peak stays far below the file's records (~80 blocks here: ~3 MB against
    ~19 MB when a fetch took every block)."""
    import tracemalloc

    n = 80_000
    names = [f"img_{i:06d}.jpg" for i in range(n)]
    doc = coco_doc(names, list(range(n)), [(i, 3) for i in range(n)])
    write(tmp_path / "instances_x.json", doc)
    size = (tmp_path / "instances_x.json").stat().st_size
    with list_input(Root(str(tmp_path)), "coco") as got:
        tracemalloc.start()
        try:
            count = sum(1 for _ in got.iter_refs())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert count == n
    assert peak < size / 2, (peak, size)  # every block at once: more than `size`


@pytest.mark.parametrize("cap", [60, 300, 330, 1000])
def test_an_image_over_the_annotation_cap_fails_alike_on_both_paths(tmp_path, monkeypatch, cap):
    """An in-order file whose image's per-image JSON would exceed `max_annotation_bytes`
    fails that image at listing time with the join's words (record alone too long, or the
    count of annotations that tipped it), and the other images pass."""
    from maskcore.limits import DEFAULT_LIMITS

    names = ["a.jpg", "b.jpg", "c.jpg"]
    anns = [(1, 3), (2, 3), (2, 4), (2, 3), (2, 4), (3, 3)]
    write(tmp_path / "instances_x.json", coco_doc(names, [1, 2, 3], anns))
    touch(tmp_path, *[f"images/{n}" for n in names])
    limits = dataclasses.replace(DEFAULT_LIMITS, max_annotation_bytes=cap)
    refs, *_, merged = both(tmp_path, monkeypatch, limits=limits)
    assert merged
    problems = [r.problem for r in refs]
    assert any(p and "max_annotation_bytes" in p for p in problems) == (cap < 1000)
    assert any(p is None for p in problems) == (cap > 60)


# ------------------------------------------------ files not in order: the external sort
SMALL_RUNS = {"RUN": 3, "CHUNK": 2, "FAN_IN": 2}  # many runs, merged in several rounds


def careful_of(url: Path, monkeypatch, *, small: bool, **kw) -> tuple[object, ...]:
    from jobs import external_sort as runs

    with monkeypatch.context() as m:
        for name, value in (SMALL_RUNS.items() if small else ()):
            m.setattr(runs, name, value)
        return listing_of(url, monkeypatch, careful=True, block=64, **kw)[:-1]


def write_both_orders(root: Path, doc: dict, rnd: random.Random) -> None:
    """`in/instances_x.json`: the records in order (names and ids increasing, annotations
    by image); `out/instances_x.json`: the same in COCO 2017's layout - images in no order,
    annotations grouped by category across images -, each image's annotations in the same
    order in both (so its per-image JSON is the same); one images/ folder for both."""
    out = sorted(doc["annotations"], key=lambda a: str(a["category_id"]))
    write(root / "in" / "instances_x.json",
          {**doc, "annotations": sorted(out, key=lambda a: a["image_id"])})
    write(root / "out" / "instances_x.json",
          {**doc, "images": rnd.sample(doc["images"], len(doc["images"])), "annotations": out})


@pytest.mark.parametrize("seed", range(12))
def test_a_file_shuffled_like_coco2017_gives_the_in_order_files_refs(tmp_path, monkeypatch,
                                                                     seed):
    """The same images and annotations in order (the merge) and in COCO 2017's layout
    (the external sort, in one run or in many merged in rounds): the same refs, counts and
    warnings - orphans, annotations of an image listed later, images with none, missing
    files."""
    rnd = random.Random(seed)
    names = sorted(f"{k:03d}.jpg" for k in rnd.sample(range(500), rnd.randint(1, 40)))
    ids = sorted(rnd.sample(range(1000), len(names)))
    anns = sorted(((rnd.choice([*ids, 5000, -1]), rnd.choice([3, 4, "5"]))
                   for _ in range(rnd.randint(0, 120))), key=lambda a: a[0])
    write_both_orders(tmp_path, coco_doc(names, ids, anns), rnd)
    touch(tmp_path, *[f"images/{n}" for k, n in enumerate(names)
                      if k == 0 or rnd.random() < 0.9])
    in_order = listing_of(tmp_path / "in", monkeypatch, careful=False, block=64)
    assert in_order[-1]
    for small in (False, True):
        got = careful_of(tmp_path / "out", monkeypatch, small=small)
        assert got == in_order[:-1]


def split_of(path: Path) -> tuple[list[tuple[str, bytes | None]], int]:
    """(name, per-image JSON or None when the image fails) of each image record, and the
    orphan count, of the in-memory split (`coco.split_dataset`, what the listing must give)."""
    from maskcore.formats import coco

    got = coco.split_dataset(path.read_bytes())
    return sorted(((i.name, i.inline) for i in got.images), key=_by_name), got.orphans


def _by_name(image: tuple[str, bytes | None]) -> tuple[str, bytes]:
    return image[0], image[1] or b""


@pytest.mark.parametrize("seed", range(30))
def test_files_not_in_order_equal_the_in_memory_split(tmp_path, monkeypatch, seed):
    """Out-of-order shapes the merge never takes - repeated ids (the first record wins,
    annotations of the id go to it), string ids, repeated names / stems, orphans, annotations
    before their image's record, several files - give each image the per-image JSON of the
    in-memory split, with one run or many merged in rounds."""
    rnd = random.Random(seed)
    files = rnd.choice([1, 2, 3])
    expect = []
    for f in range(files):
        names = rnd.sample(NAMES, rnd.randint(1, 12))
        ids: list[object] = rnd.sample(range(-5, 40), len(names))
        if len(ids) > 1 and rnd.random() < 0.4:
            ids[rnd.randrange(1, len(ids))] = ids[0]  # a repeated id
        if ids and rnd.random() < 0.4:
            ids[rnd.randrange(len(ids))] = rnd.choice(["s", "7", "é"])  # a string id
        if rnd.random() < 0.3:
            names[-1] = names[0]  # a repeated name
        pool = [*ids, -9, 41, "x", "7"]
        anns = sorted(((rnd.choice(pool), rnd.choice([3, 4, "5"]))
                       for _ in range(rnd.randint(0, 30))), key=lambda a: str(a[1]))
        path = tmp_path / "annotations" / f"instances_d{f}.json"
        write(path, coco_doc(names, ids, anns), images_first=rnd.random() < 0.6)
        touch(tmp_path, *[f"images/d{f}/{n}" for n in names])
        expect.append(split_of(path))
    runs = [careful_of(tmp_path, monkeypatch, small=small) for small in (False, True)]
    assert runs[0] == runs[1]
    refs, count, _root, warnings = runs[0]
    assert count == sum(len(images) for images, _orphans in expect)
    for f, (images, orphans) in enumerate(expect):
        got = sorted(((r.name, None if r.problem else r.ann_inline)
                      for r in refs if r.dataset == f"d{f}"), key=_by_name)
        assert got == images
        said = [w for w in warnings if w.startswith(f"annotations/instances_d{f}.json:")]
        assert said == ([f"annotations/instances_d{f}.json: {orphans} annotations name no "
                         "image of the file; they are not exported"] if orphans else [])


@pytest.mark.parametrize("cap", [60, 300, 330, 420, 1000])
def test_an_image_over_the_cap_fails_alike_in_a_file_not_in_order(tmp_path, monkeypatch, cap):
    """The annotation cap on the external sort's groups: an image whose annotations come in
    many runs fails with the in-order file's words (the record alone, or the count of
    annotations that tipped it), and its group never holds more than the cap."""
    from maskcore.limits import DEFAULT_LIMITS

    names = ["a.jpg", "b.jpg", "c.jpg"]
    anns = [(1, 3), *[(2, 3), (2, 4)] * 4, (3, 3)]
    write_both_orders(tmp_path, coco_doc(names, [1, 2, 3], anns), random.Random(1))
    touch(tmp_path, *[f"images/{n}" for n in names])
    limits = dataclasses.replace(DEFAULT_LIMITS, max_annotation_bytes=cap)
    in_order = listing_of(tmp_path / "in", monkeypatch, careful=False, block=64, limits=limits)
    assert in_order[-1]
    for small in (False, True):
        got = careful_of(tmp_path / "out", monkeypatch, small=small, limits=limits)
        assert got == in_order[:-1]
    problems = [r.problem for r in in_order[0]]
    assert any(p and "max_annotation_bytes" in p for p in problems) == (cap < 1000)
