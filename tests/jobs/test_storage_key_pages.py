"""`Root.key_pages`: every file under a prefix exactly once, in pages of at most `page` keys,
names only - on local disk (os.scandir) and on S3 (moto, ListObjectsV2 pages), with names that
trip up URL and path handling, more than one S3 page, and nothing left in s3fs's listing cache."""

from __future__ import annotations

import os

import pytest

from jobs.storage import Root
from tests.e2e.helpers import new_fs

TRICKY = ["a b/c d.jsonl", "ünï/cödé €.json", "100%/x%2Fy.txt", "q?x=1&y#z", "plus+sign",
          "dir/sub/deep/leaf", "_manifest2/not-under-manifest", "tab\tname", "日本/画像.png",
          "semi;colon,comma", "tilde~/'quote'", "brackets[1]{2}"]


def _all(root: Root, prefix: str = "", page: int = 1000) -> list[str]:
    pages = list(root.key_pages(prefix, page=page))
    assert all(0 < len(p) <= page for p in pages), [len(p) for p in pages]
    keys = [k for p in pages for k in p]
    assert len(keys) == len(set(keys)), "a key listed twice"
    return sorted(keys)


def test_local_tricky_names_each_once_relative_to_the_root(tmp_path):
    root = Root(str(tmp_path))
    for key in TRICKY:
        root.write(key, b"x")
    assert _all(root) == sorted(TRICKY) == list(root.list_files())
    assert _all(root, page=1) == sorted(TRICKY)
    assert _all(root, "dir") == ["dir/sub/deep/leaf"]
    assert _all(root, "_manifest") == []  # a prefix is a folder, never a stem
    assert _all(root, "missing/folder") == []


def test_local_links_are_listed_not_followed(tmp_path):
    (tmp_path / "out/real").mkdir(parents=True)
    (tmp_path / "out/real/f").write_bytes(b"x")
    os.symlink(tmp_path / "out", tmp_path / "out/real/loop")  # a cycle through a link
    assert _all(Root(str(tmp_path / "out"))) == ["real/f", "real/loop"]


def test_local_pages_stream_many_files(tmp_path):
    root = Root(str(tmp_path))
    keys = [f"_manifest/part-{i:05d}.jsonl" for i in range(2500)]
    for k in keys:
        (tmp_path / k).parent.mkdir(exist_ok=True)
        (tmp_path / k).write_bytes(b"")
    pages = list(root.key_pages("_manifest"))
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert sorted(k for p in pages for k in p) == keys


def test_a_prefix_escaping_the_root_is_refused(tmp_path):
    with pytest.raises(Exception, match="prefix"):
        list(Root(str(tmp_path / "out")).key_pages("../elsewhere"))


@pytest.mark.s3
def test_s3_many_pages_tricky_names_and_no_listing_cache(s3_bucket):
    fs = new_fs()
    base = f"{s3_bucket}/job/out"
    many = [f"_manifest/part-{i:05d}-{'0' * 16}.jsonl" for i in range(1234)]
    fs.pipe({f"{base}/{k}": b"" for k in many + TRICKY})
    fs.pipe({f"{base}/_manifest/folder/": b"",  # a console-made folder placeholder
             f"{s3_bucket}/job/outside": b"", f"{s3_bucket}/job/out2/x": b""})
    root = Root(f"s3://{base}")
    assert _all(root, "_manifest") == sorted(many)
    assert _all(root) == sorted(many + TRICKY)
    assert _all(root, "_manifest", page=700) == sorted(many)
    assert _all(root, "dir") == ["dir/sub/deep/leaf"]
    assert _all(root, "none") == []
    assert not root.fs.dircache  # nothing cached: a later commit is seen by info/exists
    # a page taken, then the caller stops: the listing is closed, the next one is whole
    first = next(iter(root.key_pages("_manifest", page=10)))
    assert len(first) == 10 and _all(root, "_manifest") == sorted(many)


@pytest.mark.s3
def test_s3_missing_bucket_has_no_keys(s3_bucket):
    assert _all(Root(f"s3://{s3_bucket}-gone/out")) == []


@pytest.mark.s3
def test_s3_list_tags_streams_in_sorted_order_with_find_s_tags(s3_bucket):
    """`Root.list_tags` on S3 reads ListObjectsV2 pages as they come (the input listing of a
    10M-item project never holds every object's info): the same (key, tag) pairs, in the same
    sorted order, as one `find(detail=True)` sorted, but for folder placeholders (a console's
    `ds/folder/` is no file: `find` listed it as one); a prefix naming one object, or nothing,
    still answers as before; no listing is left in s3fs's cache."""
    fs = new_fs()
    base = f"{s3_bucket}/in"
    many = [f"ds/img/{i:05d}.png" for i in range(1100)]  # > 1 page
    fs.pipe({f"{base}/{k}": k.encode() * (len(k) % 3) for k in many + TRICKY})
    fs.pipe({f"{base}/ds/folder/": b"", f"{s3_bucket}/in2/x": b""})
    root = Root(f"s3://{base}")

    def by_find(prefix: str) -> list[tuple[str, str]]:
        found = fs.find(f"{base}/{prefix}" if prefix else base, detail=True)
        fs.invalidate_cache()
        return [(p[len(base) + 1:], f"{i['size']}-{i['ETag'].strip(chr(34))}")
                for p, i in sorted(found.items()) if not p.endswith("/")]

    for prefix in ("", "ds", "ds/img", "日本", "ds/img/00007.png", "none"):
        got = list(root.list_tags(prefix))
        assert got == by_find(prefix), prefix
        assert not root.fs.dircache
    assert len(list(root.list_tags("ds"))) == 1100
