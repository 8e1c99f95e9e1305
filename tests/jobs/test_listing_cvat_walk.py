"""The CVAT task listing's fast paths (issue #10) list what the plain ones listed:
`iter_images` without a start handler inside an <image> cuts the elements a handler per
element cut (nested images, empty ones, tag-like text, any read size); the walk's tags keep
their text, "<size>-<repr(st_mtime)>" (previous manifests hold it: `--incremental` compares
it), and its keyed batches hold the keys of its named ones; a task on a hostile tree lists the
refs the rules say, every field."""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import pytest

from jobs import listing
from jobs.listing_cvat import iter_images
from jobs.storage import Root

XML_HEAD = ('<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta>'
            "<task><labels><label><name>car</name><color>#ff0000</color></label></labels>"
            "</task></meta>\n")


def _handler_per_element(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The <image> elements as the pass with a start handler on every element cut them."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    parser.ordered_attributes = True
    depth, begin, attrs, got = 0, -1, {}, []

    def start(name: str, a: list[str]) -> None:
        nonlocal depth, begin, attrs
        depth += 1
        if depth == 2:
            begin, attrs = parser.CurrentByteIndex, dict(zip(a[::2], a[1::2], strict=True))

    def end(name: str) -> None:
        nonlocal depth
        if depth == 2 and name == "image":
            at = parser.CurrentByteIndex
            m = re.compile(rb"</image\s*>").match(data, at)
            got.append((attrs, data[begin:m.end() if m else at]))
        depth -= 1

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.Parse(data, True)
    return got


def _element(rng: random.Random, depth: int) -> str:
    name = rng.choice(["image", "image", "box", "imagery", "polygon"])
    attrs = "".join(rng.sample([f' name="n{rng.randrange(4)}.jpg"', " a='>/'",
                                ' b = "&gt;&lt;image"', "\n c='1'"], rng.randrange(3)))
    if depth > 4 or rng.random() < .3:
        return f"<{name}{attrs}{rng.choice(['/>', ' />', chr(10) + '/>'])}"
    inner = "".join(rng.choice([lambda: _element(rng, depth + 1),
                                lambda: "<![CDATA[<image></image>]]>",
                                lambda: "<!-- <image x> -->", lambda: " t ",
                                lambda: "<?pi <image?>"])() for _ in range(rng.randrange(4)))
    return f"<{name}{attrs}>{inner}</{name}{rng.choice(['>', ' >', chr(10) + '>'])}"


@pytest.mark.parametrize("seed", range(3))
def test_nested_and_empty_images_are_cut_as_with_a_handler_per_element(seed):
    """<image> inside <image> (empty or not, at any depth), `<image` in CDATA, comments,
    processing instructions and attribute values, `<imagery>`, empty depth-2 images: the
    elements and attributes equal the handler-per-element pass's, across reads of any size."""
    rng = random.Random(seed)

    class Trickle(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            return super().read(rng.choice([1, 7, 40, 1 << 20]))

    nested = 0
    for _ in range(300):
        body = "".join(_element(rng, 2) for _ in range(rng.randint(1, 5)))
        data = (XML_HEAD + body + "</annotations>").encode()
        want = _handler_per_element(data)
        got = [g for g in iter_images(Trickle(data), "x") if isinstance(g, tuple)]
        assert got == want
        nested += any(e.count(b"<image") > 1 for _, e in want)
    assert nested > 50  # the recount path ran


def _stat_text(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime}"  # the tag text manifests hold (a30ed04 and before)


def test_tag_text_equals_the_f_string_for_any_size_and_time():
    rng = random.Random(1)
    for _ in range(20000):
        size = rng.choice([0, 1, rng.randrange(1 << 40)])
        mtime = rng.choice([float(rng.randrange(-1 << 31, 1 << 33)),
                            rng.randrange(-1 << 31, 1 << 33) + rng.randrange(10 ** 9) * 1e-9,
                            rng.random() * 1e10, 1e16 + rng.random(), -0.0, 5e-324])
        st = os.stat_result((0o100644, 0, 0, 1, 0, 0, size, 0, mtime, 0))
        assert listing._tag(st) == f"{size}-{mtime}"


def _hostile_tree(tmp: Path) -> Path:
    """images/ with odd names, nested folders, links inside and outside, names that are not
    UTF-8, a loop, backslash names, and times with and without fractions."""
    inp, out = tmp / "in", tmp / "outside"
    img = inp / "images"
    for key, size in [("a.jpg", 0), ("s/b.jpg", 3), ("b.jpg", 5), ("sub dir/ü c.jpg", 7),
                      ("deep/er/est/d.jpg", 1), ("extra.jpg", 2), ("-#%.jpg", 4),
                      ("s/nested/e.jpg", 9), ("odd\\name.jpg", 1)]:
        (img / key).parent.mkdir(parents=True, exist_ok=True)
        (img / key).write_bytes(b"x" * size)
    (out / "dir").mkdir(parents=True)
    (out / "secret.jpg").write_bytes(b"x" * 12345)
    (out / "dir" / "c.jpg").write_bytes(b"x")
    (img / "out.jpg").symlink_to(out / "secret.jpg")
    (img / "outdir").symlink_to(out / "dir")
    (img / "in.jpg").symlink_to(img / "s" / "b.jpg")
    (img / "linkdir").symlink_to(img / "deep")
    (img / "deep" / "loop").symlink_to("..")
    os.mkdir(os.path.join(os.fsencode(img), b"d\xfe"))
    for raw in (b"\xff.jpg", b"d\xfe/\xfe.jpg"):
        with open(os.path.join(os.fsencode(img), raw), "wb") as f:
            f.write(b"zz")
    rng = random.Random(7)
    for path in img.rglob("*"):
        if path.is_file() and not path.is_symlink():
            ns = rng.choice([1_700_000_000 * 10 ** 9, rng.randrange(10 ** 18, 2 * 10 ** 18)])
            os.utime(path, ns=(ns, ns))
    return inp


def test_walk_tags_keep_their_text_and_keyed_batches_their_keys_on_a_hostile_tree(tmp_path):
    inp = _hostile_tree(tmp_path)
    root = Root(str(inp))
    named = [(folder, sorted(files)) for folder, files in listing.iter_folder_batches(
        root, "images")]
    keyed = [(folder, sorted(files)) for folder, files in listing.iter_folder_batches(
        root, "images", keys=True)]
    assert keyed == [(f, sorted((f + n, t) for n, t in files)) for f, files in named]
    tags = dict(listing.iter_tags(root, "images"))
    assert len(tags) == sum(len(f) for _, f in named)
    assert tags["images/out.jpg"] == tags["images/outdir"] == listing.LINK_OUT
    plain = [k for k, t in tags.items() if t != listing.LINK_OUT and "\\" not in k]
    # linkdir/ is deep/ again (not a folder the walk came through); loop/ leads to images/
    assert sorted(plain) == ["images/" + k for k in [
        "-#%.jpg", "a.jpg", "b.jpg", "deep/er/est/d.jpg", "extra.jpg", "in.jpg",
        "linkdir/er/est/d.jpg", "s/b.jpg", "s/nested/e.jpg", "sub dir/ü c.jpg"]]
    for key in plain:
        assert tags[key] == _stat_text(inp / key), key
    assert {k for k in tags if "\\" in k} == {
        "images/odd\\name.jpg", "images/\\xff.jpg", "images/d\\xfe/\\xfe.jpg"}
    assert dict(listing.iter_tags(root, "images/s/b.jpg")) == {
        "images/s/b.jpg": _stat_text(inp / "images/s/b.jpg")}


def test_task_on_a_hostile_tree_lists_every_field_by_the_rules(tmp_path):
    inp = _hostile_tree(tmp_path)
    images = [("a.jpg", None), ("b.jpg", "s"), ("sub dir/ü c.jpg", None), ("missing.jpg", None),
              ("in.jpg", None), ("out.jpg", None), ("linkdir/er/est/d.jpg", None),
              ("odd\\name.jpg", None), ("nested/e.jpg", "s"), ("-#%.jpg", None),
              ("\\xff.jpg", None)]
    body = "".join(f'<image id="{i}" name="{n}" width="8" height="6"'
                   + (f' subset="{s}"' if s else "") + ">"
                   + ('<image name="inner.jpg"/>' if n == "a.jpg" else "") + "</image>\n"
                   for i, (n, s) in enumerate(images))
    body += '<image id="99" name="b.jpg" width="8" height="6"/>\n'
    (inp / "annotations.xml").write_text(XML_HEAD + body + "</annotations>\n")
    with listing.list_input(Root(str(inp)), "cvat") as got:
        refs = got.refs
        assert got.count == len(refs) == len(images) + 1
    tag = {r.name: r.image_tag for r in refs}
    key = {(r.dataset, r.name): r.image_key for r in refs}
    problem = {(r.dataset, r.name): r.problem for r in refs}
    assert key == {
        ("default", "-#%.jpg"): "images/-#%.jpg", ("default", "a.jpg"): "images/a.jpg",
        ("default", "b.jpg"): "images/b.jpg", ("default", "in.jpg"): "images/in.jpg",
        ("default", "linkdir/er/est/d.jpg"): "images/linkdir/er/est/d.jpg",
        ("default", "missing.jpg"): None, ("default", "odd\\name.jpg"): None,
        ("default", "out.jpg"): "images/out.jpg", ("default", "sub dir/ü c.jpg"):
        "images/sub dir/ü c.jpg", ("default", "\\xff.jpg"): None,
        ("s", "b.jpg"): "images/s/b.jpg", ("s", "nested/e.jpg"): "images/s/nested/e.jpg"}
    assert [k for k, p in problem.items() if p] == [
        ("default", "\\xff.jpg"), ("default", "missing.jpg"), ("default", "odd\\name.jpg")]
    assert tag["out.jpg"] == listing.LINK_OUT
    for r in refs:
        if r.image_key and r.image_tag != listing.LINK_OUT:
            assert r.image_tag == _stat_text(inp / r.image_key)
        assert r.ann_key == "annotations.xml" and r.previous is None and r.ann_more == ()
        assert r.ann_inline.startswith(b"<image ") and r.ann_inline.endswith((b"</image>",
                                                                             b"/>"))
        assert r.ann_tag.startswith("md5:")
    a = next(r for r in refs if r.name == "a.jpg")
    assert a.ann_inline.endswith(b'<image name="inner.jpg"/></image>')


@pytest.mark.parametrize("files, items", [
    (["a.jpg", "b.jpg", "other/c.jpg"], [("a.jpg", "x"), ("b.jpg", None), ("other/c.jpg", "y")]),
    (["a.jpg", "x/a.jpg", "b.jpg"], [("a.jpg", "x"), ("b.jpg", "x"), ("a.jpg", None)]),
    (["a/b/a.jpg", "a.jpg", "a/c.jpg"], [("a.jpg", "a/b"), ("c.jpg", "a"), ("a.jpg", "a/c")]),
    ([f"d{i}/a.jpg" for i in range(5)] + ["a.jpg"], [("a.jpg", f"d{i}") for i in range(7)]),
])
def test_images_by_dataset_folder_are_looked_up_only_when_such_a_folder_exists(
        tmp_path, monkeypatch, files, items):
    """A pass looks an item's image up at images/<name> only when no file is under a folder
    images/<dataset>/ (`by_subset` False): it lists what the two lookups list, with any
    number of tracked names (TRACKED 2: past it both lookups run)."""
    from jobs import listing_cvat

    for tracked in (4096, 2):
        monkeypatch.setattr(listing_cvat, "TRACKED", tracked)
        inp = tmp_path / str(tracked)
        for f in files:
            (inp / "images" / f).parent.mkdir(parents=True, exist_ok=True)
            (inp / "images" / f).write_bytes(b"x")
        body = "".join(f'<image id="{i}" name="{n}" width="8" height="6"'
                       + (f' subset="{s}"' if s else "") + "/>" for i, (n, s) in enumerate(items))
        (inp / "annotations.xml").write_text(XML_HEAD + body + "</annotations>\n")
        with listing.list_input(Root(str(inp)), "cvat") as got:
            refs = got.refs
            assert refs == list(listing_cvat._task_refs(got.spool, True))
        assert [r.image_key for r in refs if r.problem is None]


def _small_task(tmp: Path, names: list[str], files: list[str]) -> Path:
    inp = tmp / "in"
    for f in files:
        (inp / "images" / f).parent.mkdir(parents=True, exist_ok=True)
        (inp / "images" / f).write_bytes(b"x")
    inp.mkdir(exist_ok=True)
    body = "".join(f'<image id="{i}" name="{n}" width="8" height="6"/>'
                   for i, n in enumerate(names))
    (inp / "annotations.xml").write_text(XML_HEAD + body + "</annotations>\n")
    return inp


def test_an_error_of_the_walk_is_raised_by_the_listing(tmp_path, monkeypatch):
    """What the walk of images/ raises (a store's listing error) is raised by `list_input`,
    and the spool's directory is removed."""
    import tempfile

    inp = _small_task(tmp_path, ["a.jpg", "b.jpg"], ["a.jpg", "b.jpg"])
    made: list[str] = []
    mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(mkdtemp(**kw)) or made[-1])

    def broken(root, prefix="", *, keys=False):
        yield "images/", [("images/a.jpg", "1-2.0")]
        raise OSError("the store's listing failed")

    monkeypatch.setattr(listing, "iter_folder_batches", broken)
    with pytest.raises(OSError, match="the store's listing failed"):
        listing.list_input(Root(str(inp)), "cvat")
    assert made and not any(os.path.exists(d) for d in made)


def test_a_bad_xml_raises_its_own_error_before_any_walk(tmp_path, monkeypatch):
    """The XML is read first: when it fails, its InputError is raised and images/ (an
    endless walk here) is never walked."""
    from maskcore.errors import InputError

    inp = _small_task(tmp_path, ["a.jpg"], ["a.jpg"])
    (inp / "annotations.xml").write_text(XML_HEAD + "<image name='a.jpg'></annotations>")
    walked = []

    def endless(root, prefix="", *, keys=False):
        while True:
            walked.append(1)
            yield "images/", [(f"images/{len(walked)}.jpg", "1-2.0")]

    monkeypatch.setattr(listing, "iter_folder_batches", endless)
    with pytest.raises(InputError, match="well-formed XML"):
        listing.list_input(Root(str(inp)), "cvat")
    assert walked == []


def test_an_unreadable_images_folder_fails_every_item_and_a_missing_image_its_own(
        tmp_path, monkeypatch):
    """A folder the walk cannot open is left out (as before the walk had a thread): its
    items fail for want of their image; with a readable folder only the missing one fails."""
    inp = _small_task(tmp_path, ["a.jpg", "gone.jpg", "s/b.jpg"], ["a.jpg", "s/b.jpg"])
    with listing.list_input(Root(str(inp)), "cvat") as got:
        assert [(r.name, r.image_key, bool(r.problem)) for r in got.refs] == [
            ("a.jpg", "images/a.jpg", False), ("gone.jpg", None, True),
            ("s/b.jpg", "images/s/b.jpg", False)]
        assert "no such file" in got.refs[1].problem
    scandir = os.scandir

    def refused(path):
        if str(path).endswith("images") or isinstance(path, int):
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refused)
    with listing.list_input(Root(str(inp)), "cvat") as got:
        refs = got.refs
    assert [r.image_key for r in refs] == [None] * 3
    assert all("no such file" in r.problem for r in refs)
