"""Local writes and reads of `Root` without file objects (jobs/storage.py): a write goes to a
new temporary name beside its key (O_EXCL, never someone else's file) and is renamed over the
key; a write that fails leaves neither a temporary file nor a half-written key; a read goes on
until the end of the file, at most cap + 1 bytes, whatever size fstat told."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from jobs import storage
from jobs.storage import Root


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_replaces_the_key_and_leaves_no_temporary_file(tmp_path):
    out = Root(str(tmp_path))
    out.write_many({"ds/a.png": b"old", "ds/b.png": b""})
    out.write_many({"ds/a.png": b"new" * 100_000})  # a rerun overwrites its own key
    assert (tmp_path / "ds" / "a.png").read_bytes() == b"new" * 100_000
    assert (tmp_path / "ds" / "b.png").read_bytes() == b""
    assert _names(tmp_path / "ds") == ["a.png", "b.png"]


def test_a_temporary_name_that_exists_is_skipped_not_overwritten(tmp_path, monkeypatch):
    """Another writer's temporary file (same digits) is left alone: the next name is taken."""
    (tmp_path / "ds").mkdir()
    theirs = tmp_path / "ds" / "a.png.0000002a.tmp"
    theirs.write_bytes(b"someone else's")
    monkeypatch.setattr(storage, "_TEMP_IDS", itertools.count(42))
    Root(str(tmp_path)).write("ds/a.png", b"mine")
    assert theirs.read_bytes() == b"someone else's"
    assert (tmp_path / "ds" / "a.png").read_bytes() == b"mine"
    assert _names(tmp_path / "ds") == ["a.png", "a.png.0000002a.tmp"]


def test_only_taken_temporary_names_fail_the_write(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    for n in range(storage._TEMP_TRIES):
        (tmp_path / "ds" / f"a.png.{n:08x}.tmp").write_bytes(b"x")
    monkeypatch.setattr(storage, "_TEMP_IDS", itertools.count(0))
    with pytest.raises(FileExistsError):
        Root(str(tmp_path)).write("ds/a.png", b"mine")
    assert not (tmp_path / "ds" / "a.png").exists()


def test_a_key_that_is_a_folder_fails_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "ds" / "a.png").mkdir(parents=True)
    with pytest.raises(OSError):
        Root(str(tmp_path)).write("ds/a.png", b"data")
    assert _names(tmp_path / "ds") == ["a.png"]
    assert (tmp_path / "ds" / "a.png").is_dir()


def test_a_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    """The disk fills up in the middle of a write: the key is not created, nothing is left."""
    real = os.write

    def full(fd, data):
        real(fd, bytes(data[:3]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        Root(str(tmp_path)).write("ds/a.png", b"0123456789")
    assert _names(tmp_path / "ds") == []


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real = os.write
    monkeypatch.setattr(storage.os, "write", lambda fd, data: real(fd, bytes(data[:7])))
    Root(str(tmp_path)).write("a.bin", bytes(range(256)) * 3)
    assert (tmp_path / "a.bin").read_bytes() == bytes(range(256)) * 3


@pytest.mark.parametrize(("told", "cap", "want"), [
    (200_000, 10**6, 200_000),  # the size fstat told
    (0, 10**6, 200_000),  # the file grew after fstat: read on to its end
    (0, 100_000, 100_001),  # ... but never more than cap + 1 bytes
    (200_000, 150_000, 150_001),
])
def test_a_read_goes_to_the_end_of_the_file_at_most_cap_plus_one(tmp_path, told, cap, want):
    data = os.urandom(200_000)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert storage._read_fd(fd, told, cap) == data[:want]
    finally:
        os.close(fd)


def test_an_empty_file_reads_as_empty(tmp_path):
    (tmp_path / "e.json").write_bytes(b"")
    assert Root(str(tmp_path)).read("e.json") == b""


def test_a_root_finds_its_filesystem_again_after_the_cache_is_dropped(tmp_path):
    """The filesystem lives in the module's cache (tests drop it between S3 servers); a Root
    keeps only its cache key, which pickles with it."""
    import pickle

    r = Root(str(tmp_path))
    r.write("a.bin", b"1")
    storage._FS_CACHE.clear()
    assert r.read("a.bin") == b"1" and len(storage._FS_CACHE) == 1  # opened again
    again = pickle.loads(pickle.dumps(r))
    assert again == r and again.read("a.bin") == b"1" and len(storage._FS_CACHE) == 1


def test_new_folders_are_made_level_by_level_and_again_after_a_cleanup(tmp_path):
    """Deep new folders (zarr: 7 per item) are made with one mkdir per level; a tree removed
    while the process runs is made again; a file where a folder must go fails the write."""
    root = Root(str(tmp_path / "out"))
    keys = [f"z/img{i}.png/{sub}" for i in range(3)
            for sub in ("zarr.json", "class/c/0/0", "instance/c/0/0", "class/zarr.json")]
    root.write_many({k: k.encode() for k in keys})
    assert all((tmp_path / "out" / k).read_bytes() == k.encode() for k in keys)
    import shutil
    shutil.rmtree(tmp_path / "out" / "z")  # a cleanup behind the process's folder cache
    root.write_many({k: b"again" for k in keys})
    assert all((tmp_path / "out" / k).read_bytes() == b"again" for k in keys)
    (tmp_path / "out" / "blocked").write_bytes(b"a file")
    with pytest.raises(OSError):
        root.write_many({"blocked/sub/a.png": b"x"})
    assert (tmp_path / "out" / "blocked").read_bytes() == b"a file"
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


@pytest.mark.parametrize("name", ["a" * 251 + ".png", "é" * 125 + ".png", "a" * 242 + ".png"])
def test_a_key_whose_name_is_as_long_as_a_file_name_may_be_is_written(tmp_path, name):
    """Up to 255 bytes is a legal output name (`paths.key_problem`): `<name>.<hex>.tmp` was
    longer, and the item failed with 'File name too long'; a short temporary name beside it
    serves then, in `write_many` and in `open_write`."""
    assert len(name.encode()) <= 255
    root = Root(str(tmp_path))
    root.write_many({f"d/{name}": b"x"})
    with root.open_write(f"e/{name}") as f:
        f.write(b"y")
    assert (tmp_path / "d" / name).read_bytes() == b"x"
    assert (tmp_path / "e" / name).read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [name, name]
