"""The per-object shortcuts of jobs/storage.py for tiny items give what the generic calls gave:
`_join` is posixpath.join, `_split` os.path.split, a local `Root.uri` fsspec's
`unstrip_protocol` (then redacted); folders below a remembered parent are made top-down, one
mkdir per new level; and the read check still resolves every read afresh: a folder swapped for
a link out of the root between two reads of one partition is refused at once."""

from __future__ import annotations

import os
import posixpath
import shutil

import pytest

from jobs import storage
from jobs.storage import Root
from maskcore.errors import ItemError

BASES = ["", "/", "/a", "/a/", "//a", "/a//b", "a", "a/b", "bucket/pre/fix", "/dev/shm/t o"]
KEYS = ["k", "k/", "/k", "a/b.png", "d.v2/x.png", "é/ü.json", "a b/c", "..x/y", "a//b", ""]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("key", KEYS)
def test_join_is_posixpath_join(base, key):
    assert storage._join(base, key) == posixpath.join(base, key)


@pytest.mark.parametrize("path", ["/a/b", "/a//b", "/a/b/", "/", "//", "a", "a/b", "/a",
                                  "a//b/c", "/x/y.z/w", "", "///a", "é/ü"])
def test_split_is_os_path_split(path):
    assert storage._split(path) == os.path.split(path)


@pytest.mark.parametrize("key", ["a.png", "ds/img/a b.png", "x/é.png", "a/:b@c.png",
                                 "u/user:secret@host/a.png", "q/a.png?X-Amz-Signature=abc"])
def test_a_local_uri_is_fsspecs_then_redacted(tmp_path, key):
    root = Root(str(tmp_path))
    fs, path = root.fs_path
    assert root.uri(key) == storage.redact_text(fs.unstrip_protocol(posixpath.join(path, key)))


def test_folders_below_a_remembered_one_take_one_mkdir_per_new_level(tmp_path, monkeypatch):
    """zarr's item group: 7 new folders, 7 mkdir calls (none failing first), every level
    remembered; the same keys again: none."""
    root = Root(str(tmp_path / "out"))
    root.write("z/ds/zarr.json", b"{}")  # the dataset folder is remembered now
    calls: list[str] = []
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        calls.append(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    keys = [f"z/ds/t1/{k}" for k in ("zarr.json", "class/zarr.json", "class/c/0/0",
                                     "instance/zarr.json", "instance/c/0/0")]
    root.write_many({k: b"x" for k in keys})
    base = str(tmp_path / "out" / "z" / "ds" / "t1")
    assert calls == [base, f"{base}/class", f"{base}/class/c", f"{base}/class/c/0",
                     f"{base}/instance", f"{base}/instance/c", f"{base}/instance/c/0"]
    calls.clear()
    root.write_many({k: b"y" for k in keys})
    assert calls == []
    assert all((tmp_path / "out" / k).read_bytes() == b"y" for k in keys)


def test_a_remembered_parent_removed_behind_the_process_is_made_again(tmp_path):
    root = Root(str(tmp_path / "out"))
    root.write("z/ds/a/zarr.json", b"1")
    shutil.rmtree(tmp_path / "out" / "z")  # a cleanup: every remembered folder is gone
    root.write("z/ds/b/class/c/0/0", b"2")
    assert (tmp_path / "out" / "z" / "ds" / "b" / "class" / "c" / "0" / "0").read_bytes() == b"2"


def test_existing_folders_not_remembered_are_taken_and_a_file_in_the_way_fails(tmp_path):
    """A rerun in a new process: the folders exist already (mkdir says so, they are folders);
    a file where a folder must go fails the write, top-down as bottom-up."""
    (tmp_path / "out" / "z" / "ds" / "a" / "class").mkdir(parents=True)
    root = Root(str(tmp_path / "out"))
    root.write("z/ds/zarr.json", b"{}")
    root.write("z/ds/a/class/c/0/0", b"x")
    (tmp_path / "out" / "z" / "ds" / "f").write_bytes(b"a file")
    with pytest.raises(OSError):
        root.write("z/ds/f/class/c/0/0", b"x")
    assert (tmp_path / "out" / "z" / "ds" / "f").read_bytes() == b"a file"
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


def test_a_folder_swapped_for_a_link_out_between_two_reads_is_refused(tmp_path):
    """Nothing of a read's check is kept between reads: `ds/img` read fine, then replaced by a
    link to a folder outside the root holding a file of the same name - the next read of
    that key is refused, as the first read of it would have been."""
    top = tmp_path / "in"
    (top / "ds" / "img").mkdir(parents=True)
    (top / "ds" / "img" / "a.png").write_bytes(b"inside")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "a.png").write_bytes(b"secret")
    root = Root(str(top))
    assert root.read("ds/img/a.png") == b"inside"
    shutil.rmtree(top / "ds" / "img")
    os.symlink(outside, top / "ds" / "img")
    with pytest.raises(ItemError, match="leads outside"):
        root.read("ds/img/a.png")
    os.remove(top / "ds" / "img")  # and back: read again
    (top / "ds" / "img").mkdir()
    (top / "ds" / "img" / "a.png").write_bytes(b"back")
    assert root.read("ds/img/a.png") == b"back"
