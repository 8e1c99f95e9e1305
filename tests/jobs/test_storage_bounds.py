"""`Root.read` / `read_many` under attack: every hostile input object fails with an ItemError
naming its key (its item fails, not the job), fast, and without reading more than the cap -
a symlink to /dev/zero, a FIFO, a device, a link out of the root, an oversized file, a tar
member whose real size is far beyond its stored bytes, a zip header that lies. On S3 (a moto
server), reads are single ranged GETs: an object over the cap is refused, an empty one read."""

from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from jobs.storage import Root
from maskcore.errors import ItemError
from tests.e2e.helpers import new_fs
from tests.jobs.test_formats_s3 import moto  # noqa: F401 - the module's moto server fixture


@pytest.fixture
def root(tmp_path: Path) -> Path:
    top = tmp_path / "input"
    (top / "ds" / "img").mkdir(parents=True)
    (top / "ds" / "img" / "a.png").write_bytes(b"x" * 100)
    return top


def test_a_regular_file_is_read_and_a_missing_one_is_not_found(root):
    r = Root(str(root))
    assert r.read("ds/img/a.png") == b"x" * 100
    assert r.read_many(["ds/img/a.png"]) == {"ds/img/a.png": b"x" * 100}
    with pytest.raises(FileNotFoundError):
        r.read("ds/img/missing.png")


def test_a_symlink_to_dev_zero_is_refused_without_reading(root):
    os.symlink("/dev/zero", root / "ds" / "img" / "zero.png")
    t = time.perf_counter()
    with pytest.raises(ItemError, match=r"ds/img/zero\.png: .*outside"):
        Root(str(root)).read("ds/img/zero.png")
    assert time.perf_counter() - t < 10.0


def test_a_device_inside_the_root_is_refused(root):
    node = root / "ds" / "img" / "null.png"
    try:
        os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))  # a character device: /dev/null
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    with pytest.raises(ItemError, match="character device"):
        Root(str(root)).read("ds/img/null.png")


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_waiting_for_a_writer(root):
    os.mkfifo(root / "ds" / "img" / "pipe.png")
    t = time.perf_counter()
    with pytest.raises(ItemError, match="FIFO"):
        Root(str(root)).read("ds/img/pipe.png")
    assert time.perf_counter() - t < 10.0


def test_symlinks_never_leave_the_root(root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"s3cr3t")
    os.symlink(secret, root / "ds" / "img" / "link.png")
    os.symlink(tmp_path, root / "ds" / "escape")  # a folder link out of the root
    os.symlink(root / "ds" / "img" / "a.png", root / "ds" / "img" / "inside.png")
    r = Root(str(root))
    for key in ("ds/img/link.png", "ds/escape/secret.txt"):
        with pytest.raises(ItemError, match="outside") as e:
            r.read(key)
        assert "s3cr3t" not in str(e.value)
    assert r.read("ds/img/inside.png") == b"x" * 100  # a link within the root is fine


def test_a_repointed_root_symlink_is_resolved_again(tmp_path):
    """The root's real path is cached per (path, folder it leads to): when a `current` link is
    re-pointed to a new version between jobs, its files are read, not refused as outside."""
    for v in ("v1", "v2"):
        (tmp_path / v).mkdir()
        (tmp_path / v / "a.png").write_bytes(v.encode())
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    assert Root(str(link)).read("a.png") == b"v1"
    link.unlink()
    link.symlink_to(tmp_path / "v2")
    assert Root(str(link)).read("a.png") == b"v2"


def test_writes_recreate_a_folder_removed_since_the_last_write(tmp_path):
    """Folders are made once per process; one removed meanwhile (a cleanup) is made again."""
    out = Root(str(tmp_path / "out"))
    out.write_many({"ds/m/a.png": b"1"})
    shutil.rmtree(tmp_path / "out" / "ds")
    out.write_many({"ds/m/b.png": b"2"})
    assert (tmp_path / "out" / "ds" / "m" / "b.png").read_bytes() == b"2"


def test_a_directory_is_not_a_file_and_odd_paths_fail_the_item(root):
    r = Root(str(root))
    with pytest.raises(ItemError, match="regular file"):
        r.read("ds/img")
    with pytest.raises(ItemError, match="Not a directory"):
        r.read("ds/img/a.png/inside.png")  # a file where a folder must be
    with pytest.raises(ItemError, match="too long"):
        r.read("ds/img/" + "n" * 300 + ".png")
    with pytest.raises(ItemError):
        r.read("ds/img/a\x00.png")


def test_an_oversized_file_is_refused_by_its_size_and_the_cap_is_inclusive(root):
    (root / "ds" / "img" / "big.png").write_bytes(b"y" * 2000)
    r = Root(str(root))
    with pytest.raises(ItemError, match=r"at most 1000 bytes \(limits.max_object_bytes\). "
                                        r"Got 2000 bytes"):
        r.read("ds/img/big.png", max_bytes=1000)
    with pytest.raises(ItemError, match=r"big\.png"):
        r.read_many(["ds/img/a.png", "ds/img/big.png"], max_bytes=1000)
    assert len(r.read("ds/img/big.png", max_bytes=2000)) == 2000


def test_the_default_cap_is_the_limits_default():
    from jobs.storage import MAX_OBJECT_BYTES
    from maskcore.limits import Limits

    assert Limits().max_object_bytes == MAX_OBJECT_BYTES


# ---------------------------------------------------------------------------- archives
def _octal(value: int, width: int) -> bytes:
    digits = oct(value)[2:].rjust(width - 1, "0")
    assert len(digits) < width, "a value too big for its tar field"
    return digits.encode() + b"\x00"


def sparse_tar(name: str, real_size: int) -> bytes:
    """An old-GNU sparse member ('S'): 512 stored bytes standing for `real_size` bytes (holes
    of zeros), then a normal member. tarfile reports the member's size as `real_size`."""
    h = bytearray(512)
    h[0:len(name)] = name.encode()
    h[100:108] = _octal(0o644, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = _octal(512, 12)  # stored bytes
    h[136:148] = _octal(0, 12)
    h[156:157] = b"S"
    h[257:265] = b"ustar  \x00"
    h[386:398] = _octal(real_size - 512, 12)  # one data block at the very end
    h[398:410] = _octal(512, 12)
    h[483:495] = _octal(real_size, 12)  # realsize
    h[148:156] = b" " * 8
    h[148:156] = _octal(sum(h), 7) + b" "
    data = b"ok" * 10
    info = tarfile.TarInfo("ds/ann/good.json")
    info.size = len(data)
    good = info.tobuf(tarfile.GNU_FORMAT) + data.ljust(512, b"\x00")
    return bytes(h) + b"z" * 512 + good + b"\x00" * 1024


def test_a_sparse_tar_member_is_refused_by_its_real_size(tmp_path):
    path = tmp_path / "project.tar"
    path.write_bytes(sparse_tar("ds/img/bomb.png", 8 * 1024**3 - 512))
    assert path.stat().st_size < 10_000
    r = Root(str(path))
    t = time.perf_counter()
    with pytest.raises(ItemError, match=r"bomb\.png: .*at most"):
        r.read("ds/img/bomb.png")
    assert time.perf_counter() - t < 10.0
    assert r.read("ds/ann/good.json") == b"ok" * 10
    # under a cap above its declared size it is read whole: the holes are zeros
    small = tmp_path / "small.tar"
    small.write_bytes(sparse_tar("ds/img/holes.png", 4096))
    data = Root(str(small)).read("ds/img/holes.png")
    assert len(data) == 4096 and data[-512:] == b"z" * 512


def test_a_tar_member_over_the_cap_is_refused(tmp_path):
    path = tmp_path / "p.tar"
    with tarfile.open(path, "w") as tar:
        for name, size in (("ds/img/big.png", 5000), ("ds/img/ok.png", 50)):
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(b"b" * size))
    r = Root(str(path))
    with pytest.raises(ItemError, match=r"big\.png"):
        r.read("ds/img/big.png", max_bytes=1000)
    assert r.read_many(["ds/img/ok.png"], max_bytes=1000) == {"ds/img/ok.png": b"b" * 50}


def test_a_zip_member_whose_header_lies_about_its_size_is_refused(tmp_path):
    path = tmp_path / "p.zip"
    payload = b"\x00" * 200_000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ds/img/liar.png", payload)
        z.writestr("ds/img/ok.png", b"fine")
    data = bytearray(path.read_bytes())
    # declare 10 bytes in the central directory entry (uncompressed size at +24)
    cd = data.find(b"PK\x01\x02")
    assert data[cd + 46:cd + 46 + 15] == b"ds/img/liar.png"
    data[cd + 24:cd + 28] = struct.pack("<I", 10)
    path.write_bytes(bytes(data))
    r = Root(str(path))
    with pytest.raises(ItemError, match=r"liar\.png: Expected a readable archive member"):
        r.read("ds/img/liar.png")
    assert r.read("ds/img/ok.png") == b"fine"


# ---------------------------------------------------------------------------- S3
@pytest.mark.s3
@pytest.mark.usefixtures("moto")
def test_s3_reads_are_bounded_ranged_gets():
    fs = new_fs()
    bucket = f"maskjob-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    fs.pipe({f"{bucket}/in/empty.json": b"", f"{bucket}/in/small.png": b"abc",
             f"{bucket}/in/big.png": b"q" * 5000})
    r = Root(f"s3://{bucket}/in")
    assert r.read("empty.json") == b""
    assert r.read("small.png", max_bytes=3) == b"abc"
    with pytest.raises(ItemError, match=r"big\.png: .*at most 1000 bytes"):
        r.read("big.png", max_bytes=1000)
    assert r.read_many(["empty.json", "small.png"], max_bytes=1000) == \
        {"empty.json": b"", "small.png": b"abc"}
    with pytest.raises(ItemError, match=r"big\.png"):
        r.read_many(["small.png", "big.png"], max_bytes=1000)
    with pytest.raises(FileNotFoundError):
        r.read("missing.png")
    with pytest.raises(FileNotFoundError):
        r.read_many(["small.png", "missing.png"])
    assert len(r.read("big.png")) == 5000
