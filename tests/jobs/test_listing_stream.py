"""The streaming listing (jobs/listing*.py, jobs/spool.py): sorted, re-iterable, bounded, and
the real layouts of issue 12 (datumaro CVAT subsets, COCO 2017, archives with a top folder),
missing images failing their item, and inputs not understood refused instead of exporting 0."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from jobs.cli import run
from jobs.listing import ItemRef, Listing, list_input
from jobs.storage import Root
from maskcore.errors import InputError
from maskcore.model import ClassTable

REPO = Path(__file__).resolve().parents[2]
SLY = REPO / "tests" / "data" / "sly_project"
COCO = REPO / "tests" / "data" / "coco_small"
TASK = REPO / "tests" / "data" / "cvat_task"

XML_HEAD = ('<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta>'
            "<task><labels><label><name>car</name><color>#ff0000</color></label></labels>"
            "</task></meta>\n")


def cvat_xml(names: list[str], subset: str | None = None) -> str:
    sub = f' subset="{subset}"' if subset else ""
    body = "".join(f'<image id="{i}" name="{n}" width="8" height="6"{sub}><box label="car" '
                   'xtl="1" ytl="1" xbr="4" ybr="4" z_order="0" occluded="0"></box></image>\n'
                   for i, n in enumerate(names))
    return XML_HEAD + body + "</annotations>\n"


def touch(root: Path, *keys: str) -> None:
    for k in keys:
        (root / k).parent.mkdir(parents=True, exist_ok=True)
        (root / k).write_bytes(b"x")


def listed(url: str | Path, fmt: str = "auto", **kw) -> list[ItemRef]:
    with list_input(Root(str(url)), fmt, **kw) as got:
        refs = got.refs
        assert got.count == len(refs)
        return refs


# ---------------------------------------------------------------------------- the stream
def test_item_ref_json_round_trip_text_binary_and_defaults():
    refs = [ItemRef("ds", "a.jpg", "ds/ann/a.jpg.json", "ds/img/a.jpg"),
            ItemRef("d/s", "ü/b.png", None, None, "bad", b"<image name='\xc3\xbc'/>", "t1",
                    "t2", '{"x":1}', ("m1", "m2")),
            ItemRef("ds", "c", "k", None, ann_inline=b"\x89PNG\xff\x00")]
    for r in refs:
        line = r.to_json()
        assert "\n" not in line and ItemRef.from_json(line) == r
    assert refs[0].to_json() == '["ds","a.jpg","ds/ann/a.jpg.json","ds/img/a.jpg"]'
    assert json.loads(refs[2].to_json())[5][0] == "b64"


def test_refs_are_sorted_reiterable_and_the_spool_goes_away(tmp_path):
    names = ["b.jpg", "a.jpg", "c.jpg", "a.jpg"]  # XML order, with a duplicate
    (tmp_path / "annotations.xml").write_text(cvat_xml(names))
    touch(tmp_path, *(f"images/{n}" for n in names))
    listing = list_input(Root(str(tmp_path)))
    first = [(r.name, r.problem is None) for r in listing.iter_refs()]
    assert first == [("a.jpg", True), ("a.jpg", False), ("b.jpg", True), ("c.jpg", True)]
    assert [(r.name, r.problem is None) for r in listing.iter_refs()] == first
    assert b'id="1"' in listing.refs[0].ann_inline  # the first <image> of a name wins
    spool_dir = Path(listing.spool.dir)
    assert spool_dir.is_dir()
    listing.close()
    assert not spool_dir.exists()
    assert Listing.of("x", ClassTable(()), [ItemRef("b", "1", None, None),
                                            ItemRef("a", "2", None, None)]).refs[0].dataset == "a"


BOUNDED = textwrap.dedent("""
    import resource, sys
    from jobs.listing import list_input
    from jobs.storage import Root
    n = int(sys.argv[2])
    head = open(sys.argv[1] + "/head.xml").read()
    with open(sys.argv[1] + "/annotations.xml", "w") as f:
        f.write(head)
        for i in range(n):
            f.write(f'<image id="{i}" name="im_{(i * 7919) % n:07d}.jpg" width="8" height="6">'
                    '<box label="car" xtl="1" ytl="1" xbr="4" ybr="4"></box></image>\\n')
        f.write("</annotations>")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with list_input(Root(sys.argv[1]), "cvat") as listing:
        prev, count = None, 0
        for ref in listing.iter_refs():
            assert prev is None or prev < ref.name
            prev, count = ref.name, count + 1
        assert count == listing.count == n
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


@pytest.mark.timeout(600)
def test_driver_memory_does_not_grow_with_the_number_of_items(tmp_path):
    growth = {}
    for n in (2_000, 200_000):
        d = tmp_path / str(n)
        d.mkdir()
        (d / "head.xml").write_text(XML_HEAD)
        out = subprocess.run([sys.executable, "-c", BOUNDED, str(d), str(n)], check=True,
                             capture_output=True, text=True, cwd=REPO, timeout=500)
        growth[n] = int(out.stdout.split()[-1]) / 1024  # MB (ru_maxrss is in KB)
    # 200k refs held in memory would take > 150 MB; streamed they cost the spool's cache
    assert growth[200_000] < growth[2_000] + 48, growth


# ---------------------------------------------------------------------------- CVAT layouts
def test_datumaro_subset_xml_files_are_datasets(tmp_path):
    (tmp_path / "train.xml").write_text(cvat_xml(["a.jpg", "b.jpg"]))
    (tmp_path / "val.xml").write_text(cvat_xml(["c.jpg"]))
    touch(tmp_path, "images/train/a.jpg", "images/train/b.jpg", "images/val/c.jpg")
    refs = listed(tmp_path)  # detected as cvat too
    assert [(r.dataset, r.name, r.image_key, r.ann_key) for r in refs] == [
        ("train", "a.jpg", "images/train/a.jpg", "train.xml"),
        ("train", "b.jpg", "images/train/b.jpg", "train.xml"),
        ("val", "c.jpg", "images/val/c.jpg", "val.xml")]
    assert all(r.problem is None and r.ann_inline.startswith(b"<image") for r in refs)
    one = listed(tmp_path / "val.xml", "cvat")  # the XML file itself
    assert [(r.dataset, r.name, r.image_key) for r in one] == [("val", "c.jpg",
                                                                "images/val/c.jpg")]


def test_datumaro_default_xml_exports(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "default.xml").write_text(cvat_xml(["a.jpg"]))
    touch(tmp_path / "in", "images/default/a.jpg")
    assert run(["export", str(tmp_path / "in" / "default.xml"), str(tmp_path / "out"),
                "--workers", "0", "--format", "zarr", "--input-format", "cvat"]) == 0
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["ok"]


def test_missing_image_fails_its_item_from_one_listing(tmp_path):
    (tmp_path / "annotations.xml").write_text(cvat_xml(["here.jpg", "gone.jpg"], "s"))
    touch(tmp_path, "images/s/here.jpg")
    refs = {r.name: r for r in listed(tmp_path)}
    assert refs["here.jpg"].problem is None and refs["here.jpg"].image_key == "images/s/here.jpg"
    assert refs["gone.jpg"].image_key is None
    assert "images/s/gone.jpg" in refs["gone.jpg"].problem
    assert "no such file" in refs["gone.jpg"].problem


def test_cvat_task_zip_with_a_top_folder(tmp_path):
    zpath = tmp_path / "task.zip"
    with zipfile.ZipFile(zpath, "w") as z:  # no directory entries, as CVAT's make_zip_archive
        z.write(TASK / "annotations.xml", "task_1/annotations.xml")
        for p in sorted((TASK / "images").rglob("*")):
            if p.is_file():
                z.write(p, "task_1/" + str(p.relative_to(TASK)))
    with list_input(Root(str(zpath))) as got:
        assert got.image_root is not None and got.count == 5
        refs = got.refs
        assert all(r.problem is None and r.image_key for r in refs)
        assert got.image_root.read(refs[0].image_key)


@pytest.mark.parametrize("content", ["", "<annotations><meta/></annotations>"])
def test_input_not_understood_is_an_input_error_not_an_empty_run(tmp_path, content):
    (tmp_path / "in").mkdir()
    if content:
        (tmp_path / "in" / "annotations.xml").write_text(XML_HEAD + "</annotations>")
    (tmp_path / "in" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="Expected"):
        list_input(Root(str(tmp_path / "in")), "cvat")
    assert run(["export", str(tmp_path / "in"), str(tmp_path / "out"), "--workers", "0",
                "--format", "zarr", "--input-format", "cvat"]) == 2


# ---------------------------------------------------------------------------- COCO layouts
def coco_json(names: list[str], first_id: int = 1) -> dict:
    images = [{"id": first_id + i, "file_name": n, "width": 8, "height": 6}
              for i, n in enumerate(names)]
    anns = [{"id": 100 + i, "image_id": im["id"], "category_id": 3, "iscrowd": 0,
             "segmentation": [[1, 1, 5, 1, 5, 4]], "bbox": [1, 1, 4, 3], "area": 6}
            for i, im in enumerate(images)]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 3, "name": "car"}]}


def test_coco_2017_layout_several_instances_files_and_v1_0_names(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "instances_val2017.json").write_text(json.dumps(coco_json(
        ["v1.0/a.jpg", "v1.0/b.jpg", "gone.jpg"])))
    (ann / "instances_train2017.json").write_text(json.dumps(coco_json(["c.jpg"])))
    (ann / "captions_val2017.json").write_text("{}")
    touch(tmp_path, "val2017/v1.0/a.jpg", "val2017/v1.0/b.jpg", "train2017/c.jpg")
    with list_input(Root(str(tmp_path))) as got:
        refs = got.refs
        assert [(r.dataset, r.name, r.image_key) for r in refs] == [
            ("train2017", "c.jpg", "train2017/c.jpg"),
            ("val2017", "gone.jpg", None),
            ("val2017", "v1.0/a.jpg", "val2017/v1.0/a.jpg"),
            ("val2017", "v1.0/b.jpg", "val2017/v1.0/b.jpg")]
        assert got.image_root.read("val2017/v1.0/a.jpg") == b"x"
    by = {r.name: r for r in refs}
    assert by["v1.0/a.jpg"].problem is None and by["v1.0/b.jpg"].problem is None  # 2 stems
    assert "val2017/gone.jpg" in by["gone.jpg"].problem
    inline = json.loads(by["v1.0/b.jpg"].ann_inline)
    assert inline["image"]["file_name"] == "v1.0/b.jpg"
    assert [a["id"] for a in inline["annotations"]] == [101]
    assert inline["categories"] == [[3, "car"]]


def test_coco_images_url_relative_to_the_json(tmp_path):
    (tmp_path / "anns").mkdir()
    (tmp_path / "anns" / "instances_default.json").write_text(json.dumps(coco_json(["a.jpg"])))
    touch(tmp_path, "pictures/a.jpg")
    refs = listed(tmp_path / "anns" / "instances_default.json", images_url="../pictures")
    assert [(r.name, r.image_key, r.problem) for r in refs] == [("a.jpg", "a.jpg", None)]


def test_coco_listing_equals_the_in_memory_split(tmp_path):
    """The streamed join gives each image the per-image JSON `coco.split_dataset` gives."""
    from maskcore.formats import coco

    data = (COCO / "annotations" / "instances_default.json").read_bytes()
    split = {im.name: im for im in coco.split_dataset(data).images}
    refs = listed(COCO)
    assert {r.name for r in refs} == set(split)
    for r in refs:
        assert r.ann_inline == split[r.name].inline
        assert (r.problem is None) == (split[r.name].problem is None)


def test_coco_records_keep_their_json_text_beyond_64_bit_ints_and_utf8(tmp_path):
    """Records are re-encoded with msgspec (faster; exponent-form floats are written without
    '+'); what it cannot write (an int beyond 64 bits) falls back to json's encoder: the same
    values as the in-memory split's inline."""
    from maskcore.formats import coco

    doc = coco_json(["é/ü.jpg", "b.jpg"])
    doc["images"][0]["license"] = 2**70
    doc["annotations"][1]["attributes"] = {"note": "line\u2028sep \"q\" \\ \t", "big": -2**65,
                                           "f": [1e16, 1.5e-7, 0.1, -0.0, 123456789.125]}
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    split = {im.name: im for im in coco.split_dataset(path.read_bytes()).images}
    refs = listed(tmp_path)
    assert [r.name for r in refs] == ["b.jpg", "é/ü.jpg"]
    for r in refs:
        assert json.loads(r.ann_inline) == json.loads(split[r.name].inline)
    assert json.loads(refs[1].ann_inline)["image"]["license"] == 2**70
    assert json.loads(refs[0].ann_inline)["annotations"][0]["attributes"]["big"] == -2**65


def test_coco_first_of_an_id_name_or_stem_wins(tmp_path):
    doc = coco_json(["a.jpg", "a.png", "b.jpg", "b.jpg"])
    doc["images"].append({"id": 1, "file_name": "z.jpg", "width": 8, "height": 6})
    (tmp_path / "instances_x.json").write_text(json.dumps(doc))
    touch(tmp_path, *(f"images/{n}" for n in ("a.jpg", "a.png", "b.jpg", "z.jpg")))
    problems = [(r.name, r.problem) for r in listed(tmp_path)]
    assert problems[0] == ("a.jpg", None)
    assert "a.png and a.jpg" in problems[1][1]
    assert problems[2] == ("b.jpg", None) and "unique file names" in problems[3][1]
    assert problems[4][0] == "z.jpg" and "unique image ids" in problems[4][1]


# ---------------------------------------------------------------------------- Supervisely
def test_supervisely_legacy_names_orphans_and_nested_datasets(tmp_path):
    shutil.copy(SLY / "meta.json", tmp_path / "meta.json")
    touch(tmp_path, "ds/img/a.jpg", "ds/img/a", "ds/img/b.png", "ds/img/c.jpg",
          "ds/ann/a.jpg.json", "ds/ann/a.json", "ds/ann/b.json", "ds/ann/zz.json",
          "ds/datasets/ch/img/q.jpg", "ds/datasets/ch/ann/q.jpg.json", "ds/other/x.jpg")
    refs = [(r.dataset, r.name, r.ann_key, r.image_key) for r in listed(tmp_path)]
    assert refs == [
        ("ds", "a", "ds/ann/a.json", "ds/img/a"),  # its own a.json, not a.jpg's legacy
        ("ds", "a.jpg", "ds/ann/a.jpg.json", "ds/img/a.jpg"),
        ("ds", "b.png", "ds/ann/b.json", "ds/img/b.png"),  # legacy name
        ("ds", "c.jpg", None, "ds/img/c.jpg"),
        ("ds", "zz", "ds/ann/zz.json", None),
        ("ds/datasets/ch", "q.jpg", "ds/datasets/ch/ann/q.jpg.json",
         "ds/datasets/ch/img/q.jpg")]


@pytest.mark.parametrize("how", ["dot", "top.tar.gz"])
def test_supervisely_tar_with_a_top_folder_exports(tmp_path, how):
    if how == "dot":  # `tar -C proj .`: members ./meta.json, ./ds1/...
        archive = tmp_path / "proj.tar"
        subprocess.run(["tar", "-C", str(SLY), "-cf", str(archive), "."], check=True)
    else:
        archive = tmp_path / "proj.tar.gz"
        subprocess.run(["tar", "-C", str(SLY.parent), "-czf", str(archive), SLY.name],
                       check=True)
    want = [(r.dataset, r.name, r.problem) for r in listed(SLY)]
    with list_input(Root(str(archive))) as got:
        assert [(r.dataset, r.name, r.problem) for r in got.refs] == want
    assert run(["export", str(archive), str(tmp_path / "out"), "--workers", "0",
                "--format", "zarr"]) in (0, 1)
    statuses = [json.loads(x)["status"] for x in
                (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(statuses) == len(want) and statuses.count("ok") >= 1  # images were read


def coco_refs(path: Path, monkeypatch, *, fast: bool, block: int = 64
              ) -> tuple[list[tuple], str]:
    """The listing's refs (or its InputError) with the msgspec pass, or with ijson alone;
    with `fast`, also which path read the file."""
    from jobs import listing_coco

    used = []
    slow = listing_coco._CocoFile._load_slow

    def spy(self, spool):
        used.append("ijson")
        return slow(self, spool)

    with monkeypatch.context() as m:
        m.setattr(listing_coco._CocoFile, "_load_slow", spy)
        m.setattr(listing_coco._Sections, "BLOCK", block)  # 64: many blocks, cuts, regrowth
        if not fast:
            m.setattr(listing_coco._Sections, "__iter__", lambda self: (_ for _ in ()).throw(
                listing_coco._Slow()))
        try:
            got = [(r.dataset, r.name, r.problem, r.ann_inline, r.ann_tag, r.image_key)
                   for r in listed(path, "coco")]
        except InputError as e:
            got = [("InputError", str(e))]
    return got, "ijson" if used else "msgspec"


def tricky_coco() -> dict:
    doc = coco_json(["a},{b.jpg", "c\"}],[{.jpg", "ü/é.jpg", "d.jpg"])
    doc["annotations"][0]["segmentation"] = {"size": [6, 8], "counts": "0},{1]"}
    doc["annotations"][1]["attributes"] = {"n": {"deep": [{"x": 1}, {"y": [2]}]},
                                           "f": [1e16, 1.5e-7, -0.0], "big": -2**59}
    doc["annotations"].append({"id": 9, "image_id": 999, "category_id": 3})  # no such image
    return {"info": {"description": "x},{y", "nested": {"a": [{}]}}, "licenses": [{"id": 1}],
            "images": doc["images"], "annotations": doc["annotations"],
            "categories": doc["categories"]}  # categories last, as in COCO 2017


@pytest.mark.parametrize("indent", [None, 2])
def test_coco_msgspec_pass_equals_the_ijson_passes(tmp_path, monkeypatch, indent):
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(tricky_coco(), indent=indent, ensure_ascii=indent is None))
    touch(tmp_path, "images/d.jpg", "images/ü/é.jpg")
    fast, how = coco_refs(path, monkeypatch, fast=True)
    assert how == "msgspec"
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    assert [r[1] for r in fast] == ["a},{b.jpg", 'c"}],[{.jpg', "d.jpg", "ü/é.jpg"]
    assert json.loads(fast[0][3])["annotations"][0]["segmentation"]["counts"] == "0},{1]"


@pytest.mark.parametrize("block", [64, 1 << 18])
def test_coco_msgspec_blocks_mixing_odd_records_equal_the_ijson_passes(tmp_path, monkeypatch,
                                                                       block):
    """A block of plain records is written by maps in C; one odd record anywhere in it
    (string, bool, float or missing ids, unsafe or missing names, duplicates, odd category
    ids) sends that block to the per-record path: every item as the ijson passes give it."""
    doc = coco_json([f"{i}.jpg" for i in range(60)])
    images, anns = doc["images"], doc["annotations"]
    images[3]["id"] = "s3"
    images[5]["id"] = True
    images[7]["id"] = 7.0
    del images[9]["id"]
    images[11]["file_name"] = "../11.jpg"
    images[13]["file_name"] = ""
    images[15]["file_name"] = 15
    images[17]["file_name"] = "/abs.jpg"
    images[19]["id"] = images[18]["id"]  # a repeated id: the first wins
    images[21]["file_name"] = "20.png"  # the stem of 20.jpg
    images.append({"id": "s3", "file_name": "dup_s.jpg"})
    anns[2]["image_id"] = "s3"
    anns[4]["image_id"] = True
    anns[6]["category_id"] = None
    anns[8]["category_id"] = "3"
    anns[10]["image_id"] = 10.0
    del anns[12]["image_id"]
    anns.append({"id": 99, "image_id": "s3", "category_id": 3, "f": [1e16, -0.0, "ü"]})
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    touch(tmp_path, *[f"images/{i}.jpg" for i in range(0, 60, 2)])
    fast, how = coco_refs(path, monkeypatch, fast=True, block=block)
    assert how == "msgspec"
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    problems = [r[2] for r in fast if r[2] and "no such file" not in r[2]]
    assert len(problems) >= 9, problems  # each odd image record fails alone


@pytest.mark.parametrize("bad", [
    '"annotations": [{"id": 1, "image_id": 1, "category_id": 3, "area": NaN}]',  # pycocotools
    '"annotations": [{"id": 1, "image_id": 1, "category_id": 3, "area": 1e400}]',
    '"annotations": [], "info": {"year": 99999999999999999999}',  # ijson: beyond 64 bits
    '"annotations": [{"id": 1, "image_id": 1, "category_id": 3, "area": 1},]',  # trailing ,
    '"annotations": {"item": {"id": 1, "image_id": 1, "category_id": 3}}',
    '"annotations": [{"id": 1, "image_id": 1, "category_id": 3, "area": 1}]} junk',
    '"annotations": [{"id": 1, "image_id": 1, "category_id": 3, "area": 1}, 7]',
    '"annotations": [{"id": 1, "image_id": 1, "category_id": 3, "x": ' + '{"a":' * 3000 + "1"
    + "}" * 3000 + "}]",  # deeper than msgspec decodes (RecursionError, not a crash)
])
def test_coco_files_the_msgspec_pass_gives_up_on_are_read_as_before(tmp_path, monkeypatch,
                                                                     bad):
    """NaN, numbers msgspec refuses, malformed or odd layouts: ijson (and json for NaN) read
    the file, so the msgspec pass never decides what such an input means."""
    images = ",".join(json.dumps(im) for im in coco_json([f"{i}.jpg" for i in range(40)])
                      ["images"])
    text = ('{"categories": [{"id": 3, "name": "car"}], "images": [' + images + "], "
            + bad + ("" if bad.endswith("junk") else "}"))
    path = tmp_path / "instances_x.json"
    path.write_text(text)
    fast, how = coco_refs(path, monkeypatch, fast=True)
    assert how == "ijson"
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    if '"a":{"a"' in text.replace(" ", ""):  # the item too deep to write fails alone
        deep = [r[1] for r in fast if "sane nesting depth" in r[2]]
        assert deep == ["0.jpg"]  # image id 1; the others fail only for their missing file


def test_supervisely_merge_pairs_by_the_rules_on_random_layouts(tmp_path):
    """The merge of the sorted image and annotation lists against the rules written out:
    `a.jpg.json`, else legacy `a.json` (no image named `a`, first image of that stem without
    its own), leftover annotations are items; two passes interleaved agree. Names differ in
    case, NFC/NFD, '~' and ' ' (sorting around '.') and may hold '.json' twice."""
    import random

    from maskcore.formats import supervisely as sly

    rnd = random.Random(7)
    parts = ["a", "b", ".", "jpg", "png", "a.b", "A", "\u00e9", "e\u0301", ".json", "~", " "]
    images = {"".join(rnd.choice(parts) for _ in range(rnd.randint(1, 4))) for _ in range(60)}
    images = {n for n in images if n not in (".", "..") and not n.endswith(".json")}
    anns = {rnd.choice([n, sly.ann_names_for(n)[1][:-5]]) for n in images if rnd.random() < .7}
    anns |= {"".join(rnd.choice(parts) for _ in range(3)) for _ in range(10)}
    anns -= {".", ".."}
    shutil.copy(SLY / "meta.json", tmp_path / "meta.json")
    touch(tmp_path, *(f"ds/img/{n}" for n in images), *(f"ds/ann/{n}.json" for n in anns))
    want, claimed = [], set()
    for name in sorted(images):
        legacy = sly.ann_names_for(name)[1][:-5]
        if name in anns:
            want.append((name, f"ds/ann/{name}.json"))
        elif legacy != name and legacy not in images and legacy in anns and \
                legacy not in claimed:
            claimed.add(legacy)
            want.append((name, f"ds/ann/{legacy}.json"))
        else:
            want.append((name, None))
    want += [(a, f"ds/ann/{a}.json") for a in anns - images - claimed]
    with list_input(Root(str(tmp_path))) as got:
        one, two = got.iter_refs(), got.iter_refs()
        refs = [(a, next(two)) for a in one]
        assert all(a == b for a, b in refs) and next(two, None) is None
        assert [(r.name, r.ann_key) for r, _ in refs] == sorted(want)
        assert got.count == len(want)
    assert claimed and anns - images - claimed  # both cases happened


@pytest.mark.s3
def test_supervisely_and_coco_listed_from_s3_equal_the_local_listing(s3_bucket, tmp_path):
    """The S3 paths (`Root.list_tags` pages instead of the scandir walk) give the same refs
    (tags aside: ETags there, mtimes here), legacy names and orphans included."""
    from tests.e2e.helpers import new_fs, upload_folder

    shutil.copytree(SLY, tmp_path / "sly")
    touch(tmp_path / "sly", "ds1/img/q.png", "ds1/ann/q.json", "ds1/ann/orphan.json")
    fs = new_fs()
    for local, fmt in ((tmp_path / "sly", "supervisely"), (COCO, "coco")):
        url = f"s3://{s3_bucket}/{fmt}"
        upload_folder(fs, local, url)
        here = [(r.dataset, r.name, r.ann_key, r.image_key, r.problem, r.ann_inline)
                for r in listed(local, fmt)]
        assert [(r.dataset, r.name, r.ann_key, r.image_key, r.problem, r.ann_inline)
                for r in listed(url, fmt)] == here
        if fmt == "supervisely":
            assert ("ds1", "q.png", "ds1/ann/q.json", "ds1/img/q.png") in [r[:4] for r in here]
            assert ("ds1", "orphan", "ds1/ann/orphan.json", None) in [r[:4] for r in here]


def test_supervisely_names_that_could_escape_are_never_listed(tmp_path):
    """A backslash in a file name could become a path separator elsewhere: such a file is
    skipped (never read or written), while odd but clean names ('.h.jpg', 'c:d.jpg') stay."""
    shutil.copy(SLY / "meta.json", tmp_path / "meta.json")
    touch(tmp_path, "ds/img/a\\b.jpg", "ds/ann/a\\b.jpg.json", "ds/img/.h.jpg", "ds/img/c:d.jpg",
          "ds/img/ok.jpg", "ds/ann/ok.jpg.json")
    assert [(r.name, r.ann_key) for r in listed(tmp_path)] == [
        (".h.jpg", None), ("c:d.jpg", None), ("ok.jpg", "ds/ann/ok.jpg.json")]


@pytest.mark.parametrize("repeat", [False, True])
def test_coco_annotations_naming_no_image_are_counted_with_and_without_repeated_ids(
        tmp_path, caplog, repeat):
    """Orphans: an image_id no record has, or no usable id; an annotation of a repeated id
    goes to its first record, one of an image that fails (unsafe name) is not an orphan."""
    doc = coco_json(["a.jpg", "b.jpg", "c.jpg"])
    doc["images"][2]["file_name"] = "../c.jpg"
    if repeat:
        doc["images"].append({"id": 1, "file_name": "a2.jpg"})
    doc["annotations"] += [{"id": 7, "image_id": 99, "category_id": 3},
                           {"id": 8, "image_id": None, "category_id": 3}]  # (True joins 1)
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(doc))
    touch(tmp_path, "images/a.jpg", "images/b.jpg", "images/a2.jpg")
    with caplog.at_level("WARNING", logger="maskjob"):
        refs = listed(path, "coco")
    assert "2 annotations name no image" in caplog.text
    assert [r.name for r in refs if r.problem is None] == ["a.jpg", "b.jpg"]
    assert len(json.loads(refs[[r.name for r in refs].index("a.jpg")].ann_inline)
               ["annotations"]) == 1


@pytest.mark.parametrize("block", [64, 1 << 18])
@pytest.mark.parametrize("order", ["increasing", "repeat at the end", "string ids"])
def test_coco_plain_records_repeating_ids_and_stems_fail_in_any_order(tmp_path, monkeypatch,
                                                                      block, order):
    """Ids and stems increasing in file order are known unique without SQL; a repeat after
    an increasing run (within a block or across blocks), or ids not comparable in order,
    is found as before."""
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    if order != "increasing":
        names.append("b.png")  # the stem of b.jpg
    doc = coco_json(names)
    if order == "repeat at the end":
        doc["images"][-1]["id"] = 2
    elif order == "string ids":
        for im in doc["images"]:
            im["id"] = str(im["id"])
        for ann in doc["annotations"]:
            ann["image_id"] = str(ann["image_id"])
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(doc))
    touch(tmp_path, *[f"images/{n}" for n in names])
    fast, how = coco_refs(path, monkeypatch, fast=True, block=block)
    assert how == "msgspec"
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    problems = {r[1]: r[2] for r in fast if r[2]}
    if order == "increasing":
        assert problems == {}
    elif order == "repeat at the end":
        assert list(problems) == ["b.png"] and "unique image ids" in problems["b.png"]
    else:
        assert list(problems) == ["b.png"] and "one image per file stem" in problems["b.png"]


@pytest.mark.parametrize("nan", [False, True])
def test_coco_images_folder_is_chosen_by_the_first_usable_record(tmp_path, nan):
    """The folder holding the first record without a problem (in file order) wins, also
    when the file is read again by ijson after the msgspec pass gave up (NaN)."""
    names = ["../bad.jpg", "x.jpg", "y.jpg"]
    doc = coco_json(names)
    if nan:
        doc["annotations"][2]["area"] = float("nan")
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(doc))
    touch(tmp_path, "images/y.jpg", "val2017/x.jpg", "val2017/y.jpg")
    refs = listed(path, "coco")
    # x.jpg is only in val2017/: images/ (holding y.jpg) would fail it for a missing file
    assert [(r.name, r.image_key) for r in refs if r.problem is None] == [
        ("x.jpg", "x.jpg"), ("y.jpg", "y.jpg")]


# ---------------------------------------------------------------------------- the walk, joins
def test_walk_batches_hold_one_folder_and_every_file_with_its_tag(tmp_path, monkeypatch):
    from jobs import listing
    monkeypatch.setattr(listing, "WALK_BATCH", 2)
    keys = [f"images/{n}" for n in ("a.jpg", "b.jpg", "c.jpg", ".hidden", "a\\b.jpg")] + [
        "images/s/d.jpg", "images/s/t/e.jpg", "images/s/t/f.jpg", "images/s/t/g.jpg"]
    touch(tmp_path, *keys)
    (tmp_path / "images" / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")  # left out
    (tmp_path / "images" / "s" / "link").symlink_to(tmp_path / "images" / "s" / "t")
    keys += ["images/s/link/e.jpg", "images/s/link/f.jpg", "images/s/link/g.jpg"]
    root = Root(str(tmp_path))
    batches = list(listing.iter_folder_batches(root, "images"))
    assert all(1 <= len(files) <= 2 for _folder, files in batches)
    got = {folder + name: tag for folder, files in batches for name, tag in files}
    assert sorted(got) == sorted(keys)
    for key, tag in got.items():
        st = (tmp_path / key).stat()
        assert tag == f"{st.st_size}-{st.st_mtime}"
    assert dict(listing.iter_tags(root, "images")) == got  # the per-file forms agree
    assert list(listing.iter_folder_batches(root, "images/a.jpg")) == [
        ("images/", [("a.jpg", got["images/a.jpg"])])]  # a prefix naming one file
    assert list(listing.iter_folder_batches(root, "nowhere")) == []


def test_cvat_join_in_order_and_out_of_order_items_agree(tmp_path):
    """Items already in (dataset, name) order are read in file order (no index), others
    through an index: the same refs either way, images found under images/<ds>/ first, then
    images/, names with a sub-folder, repeats and backslash names failing alone."""
    names = ["a.jpg", "a.jpg", "b.jpg", "sub/c.jpg", "x\\y.jpg", "z.jpg"]
    touch(tmp_path / "in", "images/a.jpg", "images/s/a.jpg", "images/b.jpg",
          "images/sub/c.jpg", "images/x\\y.jpg")
    (tmp_path / "in" / "annotations.xml").write_text(cvat_xml(names, "s"))
    ordered = listed(tmp_path / "in")
    (tmp_path / "in" / "annotations.xml").write_text(cvat_xml(names[::-1], "s"))
    shuffled = listed(tmp_path / "in")
    view = [(r.dataset, r.name, r.image_key, r.problem is None) for r in ordered]
    assert view == [("s", "a.jpg", "images/s/a.jpg", True), ("s", "a.jpg", None, False),
                    ("s", "b.jpg", "images/b.jpg", True),
                    ("s", "sub/c.jpg", "images/sub/c.jpg", True),
                    ("s", "x\\y.jpg", None, False), ("s", "z.jpg", None, False)]
    assert "again" in ordered[1].problem and "no such file" in ordered[5].problem
    assert [(r.dataset, r.name, r.image_key, r.image_tag, r.problem is None)
            for r in shuffled] == [(r.dataset, r.name, r.image_key, r.image_tag,
                                    r.problem is None) for r in ordered]
    st = (tmp_path / "in" / "images" / "b.jpg").stat()
    assert ordered[2].image_tag == f"{st.st_size}-{st.st_mtime}"


def test_cvat_subsets_out_of_order_across_the_file_are_sorted(tmp_path):
    body = (cvat_xml(["b.jpg"], "val").replace("</annotations>\n", "")
            + cvat_xml(["a.jpg", "c.jpg"], "train").split("</meta>\n", 1)[1])
    (tmp_path / "annotations.xml").write_text(body)
    touch(tmp_path, "images/val/b.jpg", "images/train/a.jpg", "images/c.jpg")
    assert [(r.dataset, r.name, r.image_key) for r in listed(tmp_path)] == [
        ("train", "a.jpg", "images/train/a.jpg"), ("train", "c.jpg", "images/c.jpg"),
        ("val", "b.jpg", "images/val/b.jpg")]


# ---------------------------------------------------------------------------- hostile COCO text
def coco_text(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "instances_x.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    touch(tmp_path, "images/a.jpg", "images/b.jpg", "images/?.jpg")
    return path


IM1 = '{"id":1,"file_name":"a.jpg","width":8,"height":6}'
IM2 = '{"id":2,"file_name":"b.jpg","width":8,"height":6}'
ANN1 = '{"id":1,"image_id":1,"category_id":3,"bbox":[1,1,2,2]'


def coco_doc(images: str, anns: str = "[]", cats: str = '[{"id":3,"name":"car"}]') -> str:
    return f'{{"categories":{cats},"images":{images},"annotations":{anns}}}'


@pytest.mark.parametrize("nan", ["", ',"w":NaN'])  # NaN: json loads the file whole
def test_coco_lone_surrogate_escapes_fail_their_item_alone(tmp_path, monkeypatch, nan):
    """A `\\ud800` escape no low half follows: ijson (yajl) turned it into '?' - the item
    then named another image ('?.jpg', which exists) - and a lone low half crashed the run
    with a UnicodeDecodeError (json keeps both, SQLite and UTF-8 refuse them - in names, ids,
    image_ids, category_ids): each such item fails alone, a pair is a character as before."""
    text = coco_doc("[" + IM1.replace('"a.jpg"', r'"\ud800.jpg"') + "," + IM2 + ","
                    + '{"id":3,"file_name":"c.jpg","x":"\\udc00"}' + ","
                    + r'{"id":4,"file_name":"\ud83d\ude00.jpg"},'
                    + r'{"id":"\udc01","file_name":"d.jpg"}]',
                    "[" + ANN1.replace('"image_id":1', '"image_id":2') + ',"x":"\\udfff"' + nan
                    + "}," + ANN1.replace('"image_id":1', r'"image_id":"\udc01"') + "},"
                    + ANN1.replace('"category_id":3', r'"category_id":"\udc02"') + "}]")
    path = coco_text(tmp_path, text)
    fast, how = coco_refs(path, monkeypatch, fast=True)
    assert how == "ijson" and fast == coco_refs(path, monkeypatch, fast=False)[0]
    got = {r[1]: r[2] for r in fast}
    assert set(got) == {"\\ud800.jpg", "b.jpg", "c.jpg", "😀.jpg", "d.jpg"}  # no '?.jpg'
    assert "valid Unicode" in got["\\ud800.jpg"] and "valid Unicode" in got["c.jpg"]
    assert "lone surrogate" in got["b.jpg"]
    assert "no such file" in got["😀.jpg"]


def test_coco_lone_surrogate_scan_sees_escapes_across_blocks(tmp_path, monkeypatch):
    from jobs import listing_coco
    from jobs.storage import Root as R

    monkeypatch.setattr(listing_coco, "_SCAN", 7)
    fs = R(str(tmp_path)).fs
    for text, lone in [(r'"\ud83d\ude00" "\ud83d\ude00"', False), (r'"x\ud83d" "\ude00"', True),
                       (r'"\udc00"', True), (r'"abcdefghijk\ud800"', True),
                       ('"' + "y" * 13 + r'\ud83d\ude00"', False)]:
        (tmp_path / "t.json").write_text(text)
        assert listing_coco._has_lone_surrogate(fs, str(tmp_path / "t.json")) is lone, text


def test_coco_category_id_beyond_64_bits_is_no_crash(tmp_path, monkeypatch):
    """SQLite integers are 64-bit: an annotation's category_id of 2**63 (or below -2**63)
    crashed the run with an OverflowError; a category of that id is matched as before."""
    big, small = 2**63, -2**63 - 1
    text = coco_doc("[" + IM1 + "," + IM2 + "]",
                    f'[{ANN1.replace(":3,", f":{big},")}}},'
                    f'{ANN1.replace(":3,", f":{small},").replace(":1,", ":2,", 1)}}}]',
                    f'[{{"id":{big},"name":"car"}}]')
    path = coco_text(tmp_path, text)
    fast, how = coco_refs(path, monkeypatch, fast=True)
    assert how == "ijson" and fast == coco_refs(path, monkeypatch, fast=False)[0]
    assert [r[2] for r in fast] == [None, None]
    a, b = (json.loads(r[3])["categories"] for r in fast)
    assert a == [[big, "car"]] and b == []


@pytest.mark.parametrize("text, message", [
    (coco_doc("[" + IM1 + "]").encode().replace(b"a.jpg", b"a\xc0\xaf.jpg"), "valid JSON"),
    (coco_doc("[" + IM1 + "]", cats='[{"id":3,"name":"car","x":' + "[" * 5000 + "]" * 5000
              + "}]"), "sane nesting depth"),
    (coco_doc("[" + IM1 + "]", cats=r'[{"id":3,"name":"c\ud800"}]'), "valid Unicode"),
    (coco_doc("[" + IM1 + "]", "[" + ANN1 + ',"x":' + "9" * 5000 + "}]"), "4300 digits"),
    (coco_doc("[" + IM1 + "]", "[" + ANN1 + ',"a":NaN,"x":' + "[" * 100_000 + "]" * 100_000
              + "}]"), "sane nesting depth"),  # NaN: json loads it whole, and recursed
])
def test_coco_file_level_problems_are_input_errors_not_crashes(tmp_path, monkeypatch, text,
                                                               message):
    """Overlong UTF-8 (ijson raised UnicodeDecodeError), categories nested deeper than the
    encoder goes (RecursionError), a category name with a lone surrogate, an integer of more
    digits than Python converts (ValueError), a NaN file deeper than json recurses: one
    InputError each, as `coco.split_dataset` (and pycocotools' json) refuse them."""
    path = coco_text(tmp_path, text)
    fast, _how = coco_refs(path, monkeypatch, fast=True)
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    assert fast[0][0] == "InputError" and message in fast[0][1]


@pytest.mark.parametrize("seed", range(40))
def test_coco_msgspec_pass_equals_the_ijson_passes_on_random_hostile_files(tmp_path,
                                                                           monkeypatch, seed):
    """Random COCO files with odd ids, names, nesting, key order, indents and escapes: the
    msgspec pass gives the refs (problems, inline JSON, tags) the ijson passes give."""
    import random

    r = random.Random(seed)
    atoms = [0, -1, 2**53 + 1, 10**17, 1.5, -0.0, 1e16, 5e-324, True, None, "", "1", "a},{b",
             'q"}]', "e\u0301", "\\", "\x00", "😀", "\u2028", "../x.jpg", "/abs.jpg", "a\\b.jpg",
             "A.jpg", "a.jpg", "a.png"]

    def val(depth: int = 0) -> object:
        k = r.random()
        if depth < 3 and k < .15:
            return [val(depth + 1) for _ in range(r.randint(0, 3))]
        if depth < 3 and k < .3:
            return {r.choice(["id", "file_name", "}", "image_id", ""]): val(depth + 1)
                    for _ in range(r.randint(0, 3))}
        return r.choice(atoms)

    names = [r.choice(["a.jpg", "A.jpg", "a.png", "d/e.jpg", "\u00e9.jpg", "e\u0301.jpg",
                       "x},{.jpg", "../z.jpg"]) if r.random() < .3 else f"{i}.jpg"
             for i in range(r.randint(0, 30))]
    ids = list(range(1, len(names) + 1))
    if r.random() < .3:
        r.shuffle(ids)
    doc = coco_json(names)
    for im, i in zip(doc["images"], ids, strict=True):
        im["id"] = val() if r.random() < .15 else i
        if r.random() < .1:
            im["file_name"] = val()
    for a in doc["annotations"]:
        a["image_id"] = r.choice(ids)
        for key in ("image_id", "category_id", "segmentation"):
            if r.random() < .1:
                a[key] = val()
    doc["images"] = [val() if r.random() < .05 else im for im in doc["images"]]
    keys = list(doc)
    r.shuffle(keys)
    body = {"info": val(), **{k: doc[k] for k in keys}} if r.random() < .3 else doc
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(body, ensure_ascii=r.random() < .5,
                               indent=r.choice([None, 1, "\t"])))
    touch(tmp_path, *(f"images/{i}.jpg" for i in range(0, 30, 2)), "images/a.jpg")
    block = r.choice([64, 200, 1 << 18])
    fast, _how = coco_refs(path, monkeypatch, fast=True, block=block)  # msgspec mostly;
    # ijson when a list ends with a non-object (3 seeds of 40)
    assert fast == coco_refs(path, monkeypatch, fast=False, block=block)[0]


# ---------------------------------------------------------------------------- hostile CVAT XML
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_cvat_xml_in_utf16_or_utf32_is_an_input_error_not_a_crash(tmp_path, encoding):
    """expat reads UTF-16 by its BOM (or NULs), but `<meta>` and `<image>` elements cut
    from those bytes do not parse alone: the <meta> crashed the run with a ParseError."""
    text = cvat_xml(["a.jpg"]).replace('<?xml version="1.0" encoding="utf-8"?>\n', "")
    (tmp_path / "annotations.xml").write_bytes(text.encode(encoding))
    touch(tmp_path, "images/a.jpg")
    with pytest.raises(InputError, match="UTF-8 XML"):
        listed(tmp_path)


@pytest.mark.parametrize("body, want", [
    ('<image id="0" name="a.jpg" width="8" height="6"/>\n', ["a.jpg"]),  # self-closing
    ('<image id="0" name="a.jpg" width="8" height="6"><box label="car" xtl="1" ytl="1" '
     'xbr="4" ybr="4"/><![CDATA[</image>]]><!-- </image> --></image  >\n', ["a.jpg"]),
    ('<image id="0" name="..&#47;b.jpg" width="8" height="6"/><?pi </image> ?>'
     '<image id="1" name="&#97;.jpg" width="8" height="6"/>', ["../b.jpg", "a.jpg"]),
])
def test_cvat_elements_are_cut_whole_around_cdata_comments_and_references(tmp_path, body,
                                                                          want):
    from maskcore.formats import cvat

    (tmp_path / "annotations.xml").write_text(XML_HEAD + body + "</annotations>\n")
    touch(tmp_path, "images/a.jpg")
    refs = listed(tmp_path)
    assert [r.name for r in refs] == want
    for r in refs:
        if r.problem is None:  # the element parses alone, as the worker reads it
            classes = cvat.parse_task_classes((XML_HEAD + "</annotations>").encode())
            cvat.parse_item(r.ann_inline, classes, dataset=r.dataset, name=r.name)
        else:
            assert "no '..'" in r.problem


# ---------------------------------------------------------------------------- hostile local trees
def test_walk_of_a_symlink_loop_ends_and_lists_each_file_once(tmp_path):
    """A symlink to a folder the walk came through (`loop -> ..`) crashed every listing with
    'Too many levels of symbolic links' after listing the tree ~40 times; a symlink to a
    sibling folder is still followed."""
    shutil.copy(SLY / "meta.json", tmp_path / "meta.json")
    touch(tmp_path, "ds/img/a.jpg", "ds/ann/a.jpg.json", "other/img/b.jpg")
    (tmp_path / "ds" / "img" / "loop").symlink_to("..")
    (tmp_path / "ds" / "self").symlink_to(".")
    (tmp_path / "other" / "img" / "side").symlink_to(tmp_path / "ds" / "img")
    assert [(r.dataset, r.name, r.problem is None) for r in listed(tmp_path)] == [
        ("ds", "a.jpg", True), ("other", "b.jpg", False)]
    from jobs import listing

    keys = sorted(k for k, _ in listing.iter_tags(Root(str(tmp_path)), "other"))
    # side/loop/ is ds/ (listed once there), side/loop/img/ and side/loop/self/ are loops
    assert keys == ["other/img/b.jpg", "other/img/side/a.jpg",
                    "other/img/side/loop/ann/a.jpg.json"]


def test_file_names_that_are_not_utf8_are_no_crash(tmp_path):
    """scandir (and tarfile) give a name that is not UTF-8 as surrogate escapes, which SQLite
    refused (UnicodeEncodeError: the whole run failed): such a name is listed as its bytes'
    backslash escapes, a backslash name that is never paired, read or written."""
    bad, bad_ds = os.fsdecode(b"\xff.jpg"), os.fsdecode(b"d\xfe")
    shutil.copy(SLY / "meta.json", tmp_path / "meta.json")
    touch(tmp_path, "ds/img/a.jpg", "ds/ann/a.jpg.json", f"ds/img/{bad}", f"ds/ann/{bad}.json",
          f"{bad_ds}/img/b.jpg")
    assert [(r.dataset, r.name, r.problem) for r in listed(tmp_path)] == [("ds", "a.jpg", None)]
    from jobs import listing

    assert sorted(k for k, _ in listing.iter_tags(Root(str(tmp_path)), "ds/img")) == [
        "ds/img/\\xff.jpg", "ds/img/a.jpg"]
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "instances_x.json").write_text(json.dumps(coco_json(["a.jpg", "c.jpg"])))
    touch(tmp_path / "coco", "images/a.jpg", f"images/{bad}")
    assert [(r.name, r.problem is None) for r in listed(tmp_path / "coco")] == [
        ("a.jpg", True), ("c.jpg", False)]
    (tmp_path / "cvat").mkdir()
    (tmp_path / "cvat" / "annotations.xml").write_text(cvat_xml(["a.jpg"]))
    touch(tmp_path / "cvat", "images/a.jpg", f"images/{bad}")
    assert [(r.name, r.problem) for r in listed(tmp_path / "cvat")] == [("a.jpg", None)]
    import tarfile

    with tarfile.open(tmp_path / "sly.tar", "w") as tar:  # member names as bytes: GNU format
        for key in ("meta.json", "ds/img/a.jpg", "ds/ann/a.jpg.json", f"ds/img/{bad}",
                    f"ds/ann/{bad}.json"):
            tar.add(tmp_path / key, key)
    assert [(r.dataset, r.name, r.problem) for r in listed(tmp_path / "sly.tar")] == [
        ("ds", "a.jpg", None)]


@pytest.mark.parametrize("nan", [False, True])
def test_coco_with_a_utf8_bom_is_streamed(tmp_path, monkeypatch, nan):
    """Windows tools write a UTF-8 BOM: msgspec's pass and ijson refused it, so such a file
    was loaded whole by json (memory of the whole file); both passes now skip it."""
    doc = coco_json(["a.jpg", "b.jpg"])
    if nan:
        doc["annotations"][0]["area"] = float("nan")
    path = coco_text(tmp_path, codecs.BOM_UTF8 + json.dumps(doc).encode())
    from jobs import listing_coco

    loads, whole = [], listing_coco._load_whole
    monkeypatch.setattr(listing_coco, "_load_whole", lambda *a: loads.append(1) or whole(*a))
    fast, how = coco_refs(path, monkeypatch, fast=True)
    assert how == ("ijson" if nan else "msgspec")
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    assert [r[2] for r in fast] == [None, None]
    assert len(loads) == (2 if nan else 0)  # NaN: json's whole load, as without a BOM


@pytest.mark.parametrize("seed", range(4))
def test_cvat_image_elements_cut_from_any_read_sizes_equal_the_parsed_tree(seed):
    """`iter_images` cuts each <image> from the bytes by expat's offsets, across reads of any
    size: CDATA and comments holding '</image>', processing instructions, self-closing images,
    blanks in end tags, entities: each cut element parses to the tree's element."""
    import io
    import random
    import xml.etree.ElementTree as ET

    from jobs.listing_cvat import iter_images

    rng = random.Random(seed)

    class Trickle(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            return super().read(rng.randint(1, 40))

    for _ in range(100):
        parts = [XML_HEAD]
        for i in range(rng.randint(0, 8)):
            name = rng.choice(["a.jpg", "&lt;b&gt;.jpg", "c d.jpg", "é.jpg", "x&#10;y",
                               "&#x1F600;"])
            body = rng.choice(["", '<box label="car" xtl="1" ytl="1" xbr="4" ybr="4"/>',
                               "<![CDATA[</image>]]>", "<!-- </image> < -->",
                               '<polygon label="car" points="1,1;2,2;3,3"></polygon >'])
            blank = rng.choice(["", " ", "\n", "\t "])
            head = f'<image id="{i}" name="{name}" width="8" height="6"{blank}'
            parts.append(head + "/>" if not body and rng.random() < .3 else
                         f"{head}>{body}</image{blank}>")
            parts.append(rng.choice(["", "\n", "<!-- c -->", "<?pi x?>", "<other/>"]))
        data = ("".join(parts) + "</annotations>").encode()
        want = [e for e in ET.fromstring(data) if e.tag == "image"]
        got = [g for g in iter_images(Trickle(data), "x") if isinstance(g, tuple)]
        assert len(got) == len(want)
        for (attrs, element), tree in zip(got, want, strict=True):
            cut = ET.fromstring(element)
            cut.tail = tree.tail = None
            assert attrs == tree.attrib and ET.tostring(cut) == ET.tostring(tree)


@pytest.mark.parametrize("block", [64, 1 << 18])
def test_coco_top_level_object_of_many_small_objects_stays_on_the_msgspec_pass(
        tmp_path, monkeypatch, block):
    """A top-level value such as "info" holding 9+ objects: each round tried the same first
    8 '}' as its end, so such a file went to the ijson passes (3 reads); now every round
    tries further ones."""
    doc = coco_json(["a.jpg", "b.jpg"])
    doc = {"info": {f"k{i}": {"v": [i, {"w": "}"}]} for i in range(12)}, **doc}
    path = coco_text(tmp_path, json.dumps(doc, indent=1))
    fast, how = coco_refs(path, monkeypatch, fast=True, block=block)
    assert how == "msgspec"
    assert fast == coco_refs(path, monkeypatch, fast=False, block=block)[0]
    assert [r[2] for r in fast] == [None, None]


def test_cvat_mask_archive_png_names_that_are_not_utf8_are_never_listed(tmp_path):
    """Without subset lists every SegmentationClass PNG is an item: one whose name is not
    UTF-8 became an item name SQLite and the plan's UTF-8 refuse, and the export failed
    whole (exit 3, and every rerun)."""
    import cv2
    import numpy as np

    png = cv2.imencode(".png", np.zeros((6, 8, 3), np.uint8))[1].tobytes()
    src = tmp_path / "in"
    src.mkdir()
    (src / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n"
                                           "background:0,0,0::\ncar:255,0,0::\n")
    for folder in ("SegmentationClass", "SegmentationObject"):
        (src / folder).mkdir()
        for name in ("a.png", os.fsdecode(b"\xff.png")):
            (src / folder / name).write_bytes(png)
    assert [(r.name, r.problem) for r in listed(src)] == [("a.png", None)]
    out = tmp_path / "out"
    assert run(["export", str(src), str(out), "--workers", "0", "--format", "zarr"]) == 0


def test_cvat_subset_files_named_in_bytes_that_are_not_utf8(tmp_path):
    """A subset list or a datumaro `<subset>.xml` whose name is not UTF-8 named a dataset
    SQLite and the plan refuse (the export failed whole): the list is an input error
    naming it, the XML is not a dataset of the input."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "train.xml").write_text(cvat_xml(["a.jpg"]))
    (tmp_path / "x" / os.fsdecode(b"\xfe.xml")).write_text(cvat_xml(["b.jpg"]))
    touch(tmp_path / "x", "images/a.jpg", "images/b.jpg")
    assert [(r.dataset, r.name, r.problem) for r in listed(tmp_path / "x")] == [
        ("train", "a.jpg", None)]
    lists = tmp_path / "m" / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / os.fsdecode(b"\xfe.txt")).write_text("a\n")
    with pytest.raises(InputError, match="a subset name in UTF-8"):
        listed(tmp_path / "m")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
@pytest.mark.parametrize("nan", ["", ',"w":NaN'])  # NaN: json loads the file whole
@pytest.mark.parametrize("odd", ["", ',"z":1e999'])  # a number msgspec refuses: ijson passes
def test_coco_top_level_list_given_twice_is_an_input_error_on_every_path(
        tmp_path, monkeypatch, key, nan, odd):
    """`{"images":[a],...,"images":[b]}`: the streaming passes joined both lists, json (and
    pycocotools) keep the last: whatever we read, another tool reads other items - one
    InputError naming the key, from the msgspec pass, the ijson passes and json's whole load."""
    lists = {"images": "[" + IM1 + "]", "annotations": "[" + ANN1 + nan + "}]",
             "categories": '[{"id":3,"name":"car"}]'}
    again = {"images": "[" + IM2 + "]", "annotations": "[]",
             "categories": '[{"id":4,"name":"bus"}]'}[key]
    text = ("{" + ",".join(f'"{k}":{v}' for k, v in lists.items()) + ',"info":{"a":1}'
            + odd + f',"{key}":{again}' + "}")
    path = coco_text(tmp_path, text)
    fast, how = coco_refs(path, monkeypatch, fast=True)
    assert how == ("ijson" if nan or odd else "msgspec")
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    assert fast[0][0] == "InputError" and f"'{key}' twice" in fast[0][1], fast
    from maskcore.formats import coco

    with pytest.raises(InputError, match=f"'{key}' twice"):
        coco.split_dataset(path.read_bytes())
    # a repeated key we do not read ("info") is no problem
    path.write_text(coco_doc("[" + IM1 + "]")[:-1] + ',"info":1,"info":2}')
    assert [r[2] for r in coco_refs(path, monkeypatch, fast=True)[0]] == [None]


def test_symlinks_leading_outside_the_input_are_never_stated_through(tmp_path):
    """`img/a.jpg -> /elsewhere/secret.jpg` was never read (its item fails), but the walk
    stat'ed it: the secret's size and time went into the manifest. Such a link (a file or a
    folder) is listed with the tag `link-outside`, never entered, and its item fails with the
    read's reason; links inside the input are followed as before."""
    from jobs import listing

    inp, out = tmp_path / "in", tmp_path / "secret"
    shutil.copytree(SLY, inp)
    touch(out, "dir/c.jpg")
    (out / "s.jpg").write_bytes(b"x" * 12345)
    img = next(inp.glob("*/img"))
    victim = sorted(img.iterdir())[0]
    victim.unlink()
    victim.symlink_to(out / "s.jpg")
    (img / "far").symlink_to(out / "dir")
    (img / "near.jpg").symlink_to(sorted(img.iterdir())[-1])  # inside: followed
    tags = dict(listing.iter_tags(Root(str(inp))))
    rel = victim.relative_to(inp).as_posix()
    assert tags[rel] == tags[rel.rsplit("/", 1)[0] + "/far"] == "link-outside"
    assert not any("12345" in t or k.endswith("c.jpg") for k, t in tags.items())
    assert tags[rel.rsplit("/", 1)[0] + "/near.jpg"] != "link-outside"
    assert dict(listing.iter_tags(Root(str(inp)), rel)) == {rel: "link-outside"}
    assert run(["export", str(inp), str(tmp_path / "o"), "--workers", "0"]) == 1
    text = (tmp_path / "o" / "manifest.jsonl").read_text()
    assert "12345" not in text and "leads outside" in text


def test_cvat_subset_list_lines_are_read_as_datumaro_reads_them(tmp_path):
    """datumaro reads `ImageSets/Segmentation/<subset>.txt` with `for line in f` (universal
    newlines) and `line.strip()`: a line of blanks is no id, and '\\x0c', '\\x1c', U+2028 or
    '\\x85' inside a line do not split it (str.splitlines did: 'a\\x0cb' listed 'a' and 'b',
    two items of other images): the whole id is one item, which fails by the name rules."""
    import cv2
    import numpy as np

    png = cv2.imencode(".png", np.zeros((6, 8, 3), np.uint8))[1].tobytes()
    src = tmp_path / "in"
    lists = src / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (src / "SegmentationClass").mkdir()
    for name in ("a", "b", "c", "d", "e", "f"):
        (src / "SegmentationClass" / f"{name}.png").write_bytes(png)
    (lists / "train.txt").write_bytes(
        "a\r\n \n\t\x0c\nb\x0cc\r# note\rd\u2028e\x85f\n".encode())
    got = [(r.dataset, r.name, r.problem is None) for r in listed(src)]
    assert got == [("train", "a.png", True), ("train", "b\x0cc.png", False),
                   ("train", "d\u2028e\x85f.png", False)]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
def test_coco_json_in_utf16_or_utf32_is_an_input_error_before_any_load(tmp_path, monkeypatch,
                                                                       encoding):
    """Python's json reads UTF-16/32 bytes (by BOM or NULs), so such a file was loaded whole
    into memory after both streaming passes refused it - and pycocotools (the file opened as
    UTF-8 text) refuses it: an input error before any pass, as for CVAT XML."""
    from jobs import listing_coco
    from maskcore.formats import coco

    path = coco_text(tmp_path, json.dumps(coco_json(["a.jpg"])).encode(encoding))
    loads: list[int] = []
    monkeypatch.setattr(listing_coco, "_load_whole", lambda *a: loads.append(1))
    for fast in (True, False):
        got, how = coco_refs(path, monkeypatch, fast=fast)
        assert got[0][0] == "InputError" and encoding.upper() in got[0][1], got
        assert how == "msgspec" and not loads  # refused before any pass
    with pytest.raises(InputError, match="in UTF-8"):
        coco.split_dataset(path.read_bytes())


def test_coco_image_whose_annotation_text_exceeds_the_item_limit_fails_at_listing(tmp_path):
    """The driver joined all of one image's annotations into its per-image JSON with no cap
    (an image with 10**6 annotations, or one of a 1 GB RLE, was held whole): an image whose
    JSON would exceed `limits.max_annotation_bytes` - the worker refuses it - fails alone
    at listing; the driver sums row lengths and never reads an annotation beyond the cap.
    An image exactly at the cap passes, as the worker takes it."""
    import dataclasses

    from maskcore.formats import coco
    from maskcore.limits import DEFAULT_LIMITS

    doc = coco_json(["a.jpg", "b.jpg", "c.jpg"])
    doc["annotations"] = [
        {"id": 9, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "x": "y" * 5000},
        *({"id": 10 + k, "image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1]}
          for k in range(200)),
    ]
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(doc))
    touch(tmp_path, "images/a.jpg", "images/b.jpg", "images/c.jpg")

    def listed_with(cap: int) -> dict[str, ItemRef]:
        limits = dataclasses.replace(DEFAULT_LIMITS, max_annotation_bytes=cap)
        with list_input(Root(str(path)), "coco", limits=limits) as got:
            return {r.name: r for r in got.refs}

    refs = listed_with(4000)
    assert refs["a.jpg"].problem is None and len(refs["a.jpg"].ann_inline) < 4000
    for name in ("b.jpg", "c.jpg"):  # one long annotation; many short ones
        assert "limits.max_annotation_bytes" in refs[name].problem
        assert refs[name].ann_inline is None
    exact = len(listed_with(10**6)["c.jpg"].ann_inline)
    assert listed_with(exact)["c.jpg"].problem is None
    assert "max_annotation_bytes" in listed_with(exact - 1)["c.jpg"].problem
    with pytest.raises(Exception, match="max_annotation_bytes"):  # the worker's own rule
        coco.parse_item(listed_with(10**6)["c.jpg"].ann_inline, coco.parse_classes(
            path.read_bytes()), dataset="x", name="c.jpg", limits=dataclasses.replace(
                DEFAULT_LIMITS, max_annotation_bytes=exact - 1))
