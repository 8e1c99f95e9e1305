"""Streams written through `Root.open_write` on S3 (a moto server through s3fs): parts grow as
the stream grows (S3's HeadObject of each part number tells their real sizes), so no stream
meets the 10,000-part cap; the bytes come back exact; a stream that fails commits nothing; a
stream that closes just after its part size grew loses nothing; an R2-style filesystem
(`fixed_upload_size`) keeps one part size. Sizes are tiny here (5 MiB: S3's smallest part)
with a growth step of 1-2 parts, not 1000."""

from __future__ import annotations

import itertools
import random

import pytest

from jobs import s3_stream, storage
from jobs.s3_stream import GROWTH_STEP, PART_MAX, S3_MAX_PARTS, part_size
from jobs.storage import ARCHIVE_BLOCK, LINES_BLOCK, Root
from tests.e2e.helpers import new_fs

MIB = 2**20
TIB = 2**40


def schedule(start: int, n: int, step: int = GROWTH_STEP) -> list[int]:
    """The sizes of the first `n` parts of a long stream."""
    sizes, sent = [], 0
    for i in range(n):
        sizes.append(part_size(i, sent, start=start, step=step))
        sent += sizes[-1]
    return sizes


def test_part_size_keeps_the_start_for_a_step_then_doubles_up_to_s3s_largest_part():
    sizes = schedule(LINES_BLOCK, S3_MAX_PARTS)
    assert set(sizes[:GROWTH_STEP]) == {16 * MIB}  # 15.6 GiB as before: memory unchanged
    assert set(sizes[GROWTH_STEP:2 * GROWTH_STEP]) == {32 * MIB}
    assert sizes == sorted(sizes) and max(sizes) == PART_MAX == 5 * 2**30
    for start in (LINES_BLOCK, ARCHIVE_BLOCK):  # 10,000 parts outgrow S3's 5 TiB object cap
        assert sum(schedule(start, S3_MAX_PARTS)) > 5 * TIB
    # a 160 GiB line stream (the old cap) ends in 128 MiB parts, at part ~3,400
    sent = list(itertools.accumulate(sizes))
    at = next(i for i, s in enumerate(sent) if s >= 160 * 2**30)
    assert sizes[at] == 128 * MIB and at < 3500


def test_part_size_never_exceeds_what_was_sent():
    """Doubling after every part would ask for a part bigger than the bytes sent so far."""
    assert schedule(5 * MIB, 5, step=1) == [5 * MIB, 5 * MIB, 10 * MIB, 20 * MIB, 40 * MIB]
    assert part_size(0, 0, start=5 * MIB, step=1) == 5 * MIB


def parts_of(fs, path: str) -> list[int]:
    """The sizes of an object's multipart parts, as S3 reports them (HeadObject by part
    number); [size] for an object sent in one PUT."""
    bucket, key = path.split("/", 1)
    head = fs.call_s3("head_object", Bucket=bucket, Key=key, PartNumber=1)
    sizes = [head["ContentLength"]]
    for n in range(2, head.get("PartsCount", 1) + 1):
        sizes.append(fs.call_s3("head_object", Bucket=bucket, Key=key,
                                PartNumber=n)["ContentLength"])
    return sizes


def data(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def write(root: Root, key: str, body: bytes, piece: int = MIB, *, archive: bool = False) -> None:
    with root.open_write(key, archive=archive) as f:
        for i in range(0, len(body), piece):
            f.write(body[i:i + piece])


@pytest.fixture
def small_parts(monkeypatch):
    """Streams start at 5 MiB parts and double every 2 parts."""
    monkeypatch.setattr(storage, "LINES_BLOCK", 5 * MIB)
    monkeypatch.setattr(storage, "ARCHIVE_BLOCK", 5 * MIB)
    monkeypatch.setattr(s3_stream, "GROWTH_STEP", 2)


@pytest.mark.s3
@pytest.mark.usefixtures("small_parts")
def test_parts_grow_and_the_object_comes_back_byte_exact(s3_bucket):
    root, fs = Root(f"s3://{s3_bucket}/out"), new_fs()
    body = data(32 * MIB + 123)
    write(root, "manifest.jsonl", body)
    path = f"{s3_bucket}/out/manifest.jsonl"
    assert parts_of(fs, path) == [5 * MIB, 5 * MIB, 10 * MIB, 10 * MIB, 2 * MIB + 123]
    assert fs.info(path)["ETag"].strip('"').endswith("-5")
    assert fs.cat_file(path) == body


@pytest.mark.s3
@pytest.mark.usefixtures("small_parts")
def test_writes_bigger_than_a_part_and_odd_lines_lose_nothing(s3_bucket):
    """Odd-sized writes overshoot each part a little (s3fs sends its whole buffer); one write
    of 12 MiB is one part."""
    root, fs = Root(f"s3://{s3_bucket}/out"), new_fs()
    body = data(9 * MIB) + b"".join(b"%d\n" % i * (i % 97) for i in range(30_000))
    write(root, "frames.jsonl", body, piece=777_777)
    path = f"{s3_bucket}/out/frames.jsonl"
    assert fs.cat_file(path) == body
    sizes = parts_of(fs, path)
    assert sizes[0] >= 5 * MIB and sum(sizes) == len(body)
    write(root, "one.bin", body[:12 * MIB], piece=12 * MIB)
    assert parts_of(fs, f"{s3_bucket}/out/one.bin") == [12 * MIB]


@pytest.mark.s3
def test_a_stream_closed_just_after_its_part_size_grew_keeps_its_tail(s3_bucket, monkeypatch):
    """Step 1: after one 5 MiB part the schedule says 10 MiB; 3 MiB more and close. s3fs
    judges 'shorter than one part: one PUT' by the part size - were it 10 MiB, the 8 MiB
    stream would be completed with its first part only."""
    monkeypatch.setattr(storage, "LINES_BLOCK", 5 * MIB)
    monkeypatch.setattr(s3_stream, "GROWTH_STEP", 1)
    root, fs = Root(f"s3://{s3_bucket}/out"), new_fs()
    body = data(8 * MIB)
    write(root, "a.txt", body)
    path = f"{s3_bucket}/out/a.txt"
    assert fs.cat_file(path) == body
    assert parts_of(fs, path) == [5 * MIB, 3 * MIB]


@pytest.mark.s3
@pytest.mark.usefixtures("small_parts")
def test_a_failed_stream_commits_nothing_and_leaves_no_upload(s3_bucket):
    root, fs = Root(f"s3://{s3_bucket}/out"), new_fs()
    with pytest.raises(RuntimeError, match="boom"), root.open_write("big.zip",
                                                                    archive=True) as f:
        for _ in range(12):
            f.write(data(MIB))
        assert len(f.parts) == 2 and f.blocksize == 10 * MIB  # parts sent, size grown
        raise RuntimeError("boom")
    assert not fs.exists(f"{s3_bucket}/out/big.zip")
    assert fs.call_s3("list_multipart_uploads", Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.s3
@pytest.mark.usefixtures("small_parts")
def test_small_streams_are_one_put_and_fixed_upload_size_keeps_one_part_size(s3_bucket):
    fs = new_fs()
    root = Root(f"s3://{s3_bucket}/out")
    write(root, "small.txt", b"a\nb\n")
    assert fs.cat_file(f"{s3_bucket}/out/small.txt") == b"a\nb\n"
    assert "-" not in fs.info(f"{s3_bucket}/out/small.txt")["ETag"]
    r2 = Root(f"s3://{s3_bucket}/r2", {"fixed_upload_size": True})  # Cloudflare R2's rule
    body = data(17 * MIB)
    write(r2, "m.jsonl", body)  # growing: 5, 5, 7 MiB
    assert parts_of(fs, f"{s3_bucket}/r2/m.jsonl") == [5 * MIB] * 3 + [2 * MIB]
    assert fs.cat_file(f"{s3_bucket}/r2/m.jsonl") == body


@pytest.mark.s3
@pytest.mark.usefixtures("small_parts")
def test_the_filesystems_request_arguments_reach_every_upload(s3_bucket):
    """As `fs.open` would: the filesystem's s3_additional_kwargs (here server-side encryption)
    go with the multipart upload and with a one-PUT stream."""
    fs = new_fs()
    root = Root(f"s3://{s3_bucket}/enc",
                {"s3_additional_kwargs": {"ServerSideEncryption": "AES256"}})
    write(root, "big.jsonl", data(6 * MIB))
    write(root, "small.jsonl", b"x\n")
    for key in ("big.jsonl", "small.jsonl"):
        head = fs.call_s3("head_object", Bucket=s3_bucket, Key=f"enc/{key}")
        assert head.get("ServerSideEncryption") == "AES256", key
    assert parts_of(fs, f"{s3_bucket}/enc/big.jsonl") == [5 * MIB, MIB]


@pytest.mark.s3
@pytest.mark.usefixtures("small_parts")
def test_a_moved_stream_keeps_its_parts(s3_bucket, moto_server):
    """`Root.move` (a Supervisely tar that fits in one piece) copies a multipart object in
    its own parts, one UploadPartCopy (a PUT) each: a copy never needs more parts than the
    stream had (s3fs's own copy cuts 50 MiB parts: 10,000 of them end at 500 GiB); one-PUT
    objects are copied as before (one CopyObject)."""
    root, fs = Root(f"s3://{s3_bucket}/out"), new_fs()
    body = data(22 * MIB + 5)
    write(root, "p.tar.001", body, archive=True)
    moto_server.counts(reset=True)
    root.move("p.tar.001", "p.tar")
    assert moto_server.counts()["PUT"] == 4
    assert not fs.exists(f"{s3_bucket}/out/p.tar.001")
    # (S3 keeps the ETag too; moto gives a copied multipart upload a plain md5 ETag)
    assert parts_of(fs, f"{s3_bucket}/out/p.tar") == [5 * MIB, 5 * MIB, 10 * MIB, 2 * MIB + 5]
    assert fs.cat_file(f"{s3_bucket}/out/p.tar") == body
    write(root, "small.tar.001", b"tar")
    moto_server.counts(reset=True)
    root.move("small.tar.001", "small.tar")
    assert moto_server.counts()["PUT"] == 1
    assert fs.cat_file(f"{s3_bucket}/out/small.tar") == b"tar"
