"""Packaging of the supervisely format: the streamed tar and its byte-level pieces
(maskcore/archive.py), the archive finalizer, and the app's resizeHumanMasks option.

The finalizer runs here against an in-memory FinalizeIO (a dict of objects), so every I/O it
does is visible: which objects it opens, commits, discards, moves and deletes."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile

import cv2
import numpy as np
import pytest

from maskcore.archive import PieceSink, TarStream, parse_size
from maskcore.errors import ConfigError, ItemError
from maskcore.formats import supervisely_masks as sm
from maskcore.formats.base import FinalEntry, OutputRef
from maskcore.model import ClassInfo, ClassTable
from tests.maskcore.finalize_store import Store

MiB = 1 << 20


# ---------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(("value", "size"), [
    (2048, 2048), ("500MiB", 500 * MiB), ("500Mb", 500 * MiB), ("500MB", 500 * MiB),
    ("500M", 500 * MiB), ("100Kb", 102400), ("1.5G", 3 << 29), (" 4 kib ", 4096),
    ("2048", 2048), ("1TiB", 1 << 40),
])
def test_sizes_read_as_the_sdk_reads_them(value, size):
    assert parse_size(value, "supervisely.archive_split") == size


@pytest.mark.parametrize("value", [True, 0, 1023, "1023", "500 parsecs", "-5MiB", "MiB", "",
                                   "1e9", None, [500], "5MiB; rm -rf /"])
def test_bad_sizes_name_the_key(value):
    with pytest.raises(ConfigError, match=r"supervisely\.archive_split"):
        parse_size(value, "supervisely.archive_split")


# ---------------------------------------------------------------------------- pieces
def test_pieces_are_exact_byte_ranges_whatever_the_write_sizes():
    store = Store()
    data = np.random.default_rng(1).integers(0, 256, 10_000, np.uint8).tobytes()
    sink = PieceSink(lambda n: store.open_output(f"p{n}"), split=3000)
    pos = 0
    for step in (1, 2999, 1, 4500, 7, 10_000):  # across, onto and beyond piece boundaries
        sink.write(data[pos:pos + step])
        pos += step
    sink.close()
    assert [len(store.objects[f"p{n}"]) for n in (1, 2, 3, 4)] == [3000, 3000, 3000, 1000]
    assert b"".join(store.objects[f"p{n}"] for n in (1, 2, 3, 4)) == data
    assert [size for size, _ in sink.pieces] == [3000, 3000, 3000, 1000]


def test_no_empty_piece_when_the_data_ends_on_a_boundary():
    store = Store()
    sink = PieceSink(lambda n: store.open_output(f"p{n}"), split=1024)
    sink.write(b"x" * 2048)
    sink.close()
    assert store.opened == ["p1", "p2"] and len(sink.pieces) == 2


def test_abort_discards_the_open_piece_and_keeps_committed_ones():
    store = Store()
    sink = PieceSink(lambda n: store.open_output(f"p{n}"), split=1024)
    sink.write(b"y" * 1500)
    sink.abort(OSError("connection reset"))
    assert store.discarded == ["p2"] and list(store.objects) == ["p1"]


def test_tar_members_round_trip_with_long_and_unicode_names():
    store = Store()
    tar = TarStream(PieceSink(lambda n: store.open_output("t.tar")), mtime=1_700_000_000)
    long = "ds/" + "d" * 150 + "/ünï cödé with space.png"
    tar.add_dir("ds")
    tar.add_file(long, b"\x89PNG...")
    tar.add_file("meta.json", b"{}")
    pieces = tar.close()
    data = store.objects["t.tar"]
    assert pieces[0][0] == len(data) and len(data) % 10240 == 0  # whole tar records
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        got = {m.name: (m.type, m.mode, m.mtime) for m in t.getmembers()}
        assert t.extractfile(long).read() == b"\x89PNG..."
    assert got == {"ds": (tarfile.DIRTYPE, 0o755, 1_700_000_000),
                   long: (tarfile.REGTYPE, 0o644, 1_700_000_000),
                   "meta.json": (tarfile.REGTYPE, 0o644, 1_700_000_000)}


def test_tar_bytes_equal_pythons_tarfile_stream_mode():
    members = [("ds", None), ("ds/" + "é" * 120 + ".png", b"x" * 513), ("meta.json", b"{}"),
               ("ds/empty.json", b""), ("ds/block.bin", b"\0" * 1024)]
    store = Store()
    tar = TarStream(PieceSink(lambda n: store.open_output("t.tar")), mtime=12345)
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 12345
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.add_dir(name)
                t.addfile(info)
            else:
                info.mode, info.size = 0o644, len(data)
                tar.add_file(name, data)
                t.addfile(info, io.BytesIO(data))
    tar.close()
    assert store.objects["t.tar"] == ref.getvalue()


# ---------------------------------------------------------------------------- options
def opts(**kw):
    return sm.SuperviselyOptions.from_mapping(kw, prefix="supervisely", defaults={})


@pytest.mark.parametrize(("settings", "key"), [
    ({"archive": "zip"}, "supervisely.archive"),
    ({"archive": True}, "supervisely.archive"),
    ({"archive_split": "500MiB"}, "supervisely.archive_split"),  # no archive to split
    ({"archive": "tar", "archive_split": "lots"}, "supervisely.archive_split"),
    ({"archive": "tar", "archive_name": "a/b"}, "supervisely.archive_name"),
    ({"archive": "tar", "archive_name": ".."}, "supervisely.archive_name"),
    ({"archive": "tar", "archive_name": "x\ny"}, "supervisely.archive_name"),
    ({"archive": "tar", "archive_name": 5}, "supervisely.archive_name"),
    ({"resize_human_masks": 0}, "supervisely.resize_human_masks"),
    ({"resize_human_masks": 101}, "supervisely.resize_human_masks"),
    ({"resize_human_masks": 50.5}, "supervisely.resize_human_masks"),
    ({"resize_human_masks": True}, "supervisely.resize_human_masks"),
    ({"resize_human_masks": "50%"}, "supervisely.resize_human_masks"),
    ({"resize_human_masks": 50, "masks_human": False}, "supervisely.resize_human_masks"),
])
def test_bad_packaging_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        opts(**settings)


def test_packaging_settings():
    o = opts(archive="tar", archive_split="500MiB", archive_name="42_My project.tar",
             resize_human_masks=50)
    assert (o.archive, o.archive_split, o.archive_name, o.resize_human_masks) == \
        ("tar", 500 * MiB, "42_My project", 50)
    assert sm.archive_key(o) == "supervisely/42_My project.tar"
    assert sm.archive_key(o, 2) == "supervisely/42_My project.tar.002"
    assert sm.archive_key(o, 1000) == "supervisely/42_My project.tar.1000"  # as the SDK
    off = opts(archive="none", resize_human_masks=False)
    assert off.archive is None and off.resize_human_masks is None
    reserved = sm.reserved_keys(o).files
    assert "supervisely/42_My project.tar" in reserved
    assert "supervisely/42_My project.tar.999" in reserved


# ---------------------------------------------------------------------------- resize
@pytest.mark.parametrize(("w", "h", "percent"), [(33, 17, 50), (64, 48, 33), (7, 5, 99),
                                                  (100, 3, 34), (40, 30, 100), (9, 9, 1)])
def test_resize_is_the_apps_cv2_inter_area_rule(w, h, percent):
    image = np.random.default_rng(w * h).integers(0, 256, (h, 2 * w, 3), np.uint8)
    size = (int(2 * w * percent / 100), int(h * percent / 100))
    if 0 in size:
        with pytest.raises(ItemError, match="at least 1x1"):
            sm.resize_percent(image, percent)
        return
    got = sm.resize_percent(image, percent)
    assert got.shape == (size[1], size[0], 3)
    np.testing.assert_array_equal(got, cv2.resize(image, size, interpolation=cv2.INTER_AREA))


# ---------------------------------------------------------------------------- finalizer
CLASSES = ClassTable((ClassInfo("car", (255, 0, 0), "rectangle"),))


def entry(dataset, item, keys, status="ok"):
    return FinalEntry(dataset, item, status, outputs=[OutputRef(k, 10) for k in keys])


def project_store():
    store = Store()
    for key in ("supervisely/ds/img/a.jpg", "supervisely/ds/ann/a.jpg.json",
                "supervisely/ds/masks_machine/a.png",
                "supervisely/ds/masks_instances/a/car.png",
                "supervisely/ds/masks_instances/a/car_01.png",
                "supervisely/ds/datasets/kid/img/b.jpg",
                "supervisely/ds/datasets/kid/ann/b.jpg.json",
                "cvat/SegmentationClass/a.png"):
        store.objects[key] = key.encode() * 40
    return store


def finalize(store, o, entries, mtime=1):
    fin = sm.ArchiveFinalizer(CLASSES, o, store.io(), mtime=mtime)
    for e in entries:
        fin.take(e)
    fin.close()


ENTRIES = [
    entry("ds", "a.jpg", ["supervisely/ds/masks_machine/a.png",
                          "supervisely/ds/masks_instances/a/car.png",
                          "supervisely/ds/masks_instances/a/car_01.png",
                          "supervisely/ds/img/a.jpg", "supervisely/ds/ann/a.jpg.json",
                          "cvat/SegmentationClass/a.png"]),
    entry("ds", "bad.jpg", [], status="failed"),
    entry("ds/datasets/kid", "b.jpg", ["supervisely/ds/datasets/kid/img/b.jpg",
                                       "supervisely/ds/datasets/kid/ann/b.jpg.json"],
          status="unchanged"),
]


def members(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m.name, t.extractfile(m).read() if m.isfile() else None) for m in t]


def test_archive_is_the_apps_layout_sidecars_first_then_items_in_manifest_order():
    store = project_store()
    finalize(store, opts(archive="tar", masks_instances=True), ENTRIES)
    got = members(store.objects["supervisely/project.tar"])
    names = [n for n, _ in got]
    assert names == [
        "meta.json", "obj_class_to_machine_color.json",
        "ds", "ds/masks_machine", "ds/masks_machine/a.png",
        "ds/masks_instances", "ds/masks_instances/a", "ds/masks_instances/a/car.png",
        "ds/masks_instances/a/car_01.png", "ds/img", "ds/img/a.jpg", "ds/ann",
        "ds/ann/a.jpg.json",
        "ds/datasets", "ds/datasets/kid", "ds/datasets/kid/img", "ds/datasets/kid/img/b.jpg",
        "ds/datasets/kid/ann", "ds/datasets/kid/ann/b.jpg.json"]  # no cvat/, no failed item
    for name, data in got:
        if data is not None and "/" in name:
            assert data == store.objects["supervisely/" + name]
    record = store.recorded[-1]
    assert record["settings"] == {"archive": "tar", "archive_split": None,
                                  "archive_name": "project", "resize_human_masks": None}
    assert record["archive"]["members"] == len(names)
    assert record["archive"]["pieces"] == [
        {"key": "supervisely/project.tar", "size": len(store.objects["supervisely/project.tar"]),
         "checksum": record["archive"]["pieces"][0]["checksum"]}]


def test_split_pieces_concatenate_to_the_tar_and_stale_names_go():
    whole = project_store()
    finalize(whole, opts(archive="tar"), ENTRIES)
    tar = whole.objects["supervisely/project.tar"]
    store = project_store()
    store.objects["supervisely/project.tar"] = b"an earlier unsplit run"
    for n in range(1, 20):  # an earlier run with more pieces
        store.objects[f"supervisely/project.tar.{n:03d}"] = b"old"
    finalize(store, opts(archive="tar", archive_split=4096), ENTRIES)
    keys = sorted(k for k in store.objects if ".tar" in k)
    n = -(-len(tar) // 4096)
    assert 1 < n < 19
    assert keys == [f"supervisely/project.tar.{i:03d}" for i in range(1, n + 1)]
    assert b"".join(store.objects[k] for k in keys) == tar  # same mtime: same bytes
    assert [p["key"] for p in store.recorded[-1]["archive"]["pieces"]] == keys
    assert store.archives == [True] * n  # every piece streams in storage's archive parts


def test_a_tar_that_fits_in_one_piece_is_named_like_an_unsplit_tar():
    store = project_store()
    for n in (1, 2, 3):
        store.objects[f"supervisely/project.tar.{n:03d}"] = b"old"
    finalize(store, opts(archive="tar", archive_split="100MiB"), ENTRIES)
    assert sorted(k for k in store.objects if ".tar" in k) == ["supervisely/project.tar"]
    assert store.recorded[-1]["archive"]["pieces"][0]["key"] == "supervisely/project.tar"


def test_a_missing_output_is_reported_and_left_out():
    store = project_store()
    del store.objects["supervisely/ds/img/a.jpg"]
    finalize(store, opts(archive="tar"), ENTRIES)
    names = [n for n, _ in members(store.objects["supervisely/project.tar"])]
    assert "ds/img/a.jpg" not in names and "ds/ann/a.jpg.json" in names
    assert any("supervisely/ds/img/a.jpg is missing" in p for p in store.problems)
    assert store.recorded[-1]["archive"]["missing"] == 1


def test_abort_commits_no_partial_archive():
    store = project_store()
    fin = sm.ArchiveFinalizer(CLASSES, opts(archive="tar"), store.io(), mtime=1)
    fin.take(ENTRIES[0])
    fin.abort(OSError("the manifest pass failed"))
    assert "supervisely/project.tar" not in store.objects and store.recorded == []


def test_gnu_tar_extracts_the_concatenated_pieces(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    store = project_store()
    finalize(store, opts(archive="tar", archive_split=2048), ENTRIES)
    pieces = sorted(k for k in store.objects if ".tar." in k)
    (tmp_path / "joined.tar").write_bytes(b"".join(store.objects[k] for k in pieces))
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-x", "-f", str(tmp_path / "joined.tar"), "-C", str(out)], check=True)
    assert (out / "ds/datasets/kid/ann/b.jpg.json").read_bytes() == \
        store.objects["supervisely/ds/datasets/kid/ann/b.jpg.json"]
    assert (out / "meta.json").exists()


def test_without_archive_only_the_settings_are_recorded():
    store = Store()
    fin = sm.finalizer(CLASSES, opts(resize_human_masks=25), store.io())
    fin.take(ENTRIES[0])
    fin.close()
    assert store.objects == {} and store.recorded == [
        {"settings": {"archive": None, "archive_split": None, "archive_name": None,
                      "resize_human_masks": 25}}]
