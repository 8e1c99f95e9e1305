"""`supervisely.archive` and `supervisely.resize_human_masks` through the real job (CLI, local
and S3 outputs): the archive's pieces concatenate to a tar whose extraction is the exported
tree, file for file; the settings are in manifest.json and in the incremental settings hash;
an item whose keys collide with the archive fails at plan time; config errors exit 2."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import pytest

from jobs.cli import run
from tests.conftest import rect

DATA = Path(__file__).resolve().parents[1] / "data"
SLY = DATA / "sly_project"
ARCHIVE = ["--set", "supervisely.archive=tar", "--set", "supervisely.masks_instances=true"]


def export(src, out, *extra):
    return run(["export", str(src), str(out), "--workers", "0", *extra])


def summary(out):
    return json.loads((Path(out) / "manifest.json").read_text())


def lines(out):
    return [json.loads(x) for x in (Path(out) / "manifest.jsonl").read_text().splitlines()]


def tar_files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".tar" not in p.name}


def test_split_archive_is_the_exported_tree(tmp_path):
    out = tmp_path / "out"
    assert export(SLY, out, *ARCHIVE, "--set", "supervisely.archive_split=100KiB") == 0
    details = summary(out)["format_details"]["supervisely"]
    pieces = details["archive"]["pieces"]
    assert len(pieces) > 2 and all(p["size"] == 102400 for p in pieces[:-1])
    assert [p["key"] for p in pieces] == [f"supervisely/project.tar.{n:03d}"
                                         for n in range(1, len(pieces) + 1)]
    data = b"".join((out / p["key"]).read_bytes() for p in pieces)
    files = tar_files(data)
    assert files == tree_files(out / "supervisely")  # every output and sidecar, byte for byte
    assert "ds1/datasets/child/masks_machine/gray.png" in files  # nested, as the SDK lays out
    assert details["settings"] == {"archive": "tar", "archive_split": 102400,
                                   "archive_name": "project", "resize_human_masks": None}
    assert run(["verify", str(out)]) == 0


def test_rerun_with_a_bigger_piece_size_leaves_one_tar_and_no_stale_piece(tmp_path):
    out = tmp_path / "out"
    assert export(SLY, out, *ARCHIVE, "--set", "supervisely.archive_split=100KiB") == 0
    assert export(SLY, out, *ARCHIVE, "--set", "supervisely.archive_split=1GiB",
                  "--incremental") == 0
    assert sorted(p.name for p in (out / "supervisely").glob("*.tar*")) == ["project.tar"]
    files = tar_files((out / "supervisely/project.tar").read_bytes())
    assert files == tree_files(out / "supervisely")


def test_resize_and_archive_settings_are_in_the_incremental_settings_hash(tmp_path):
    out = tmp_path / "out"
    assert export(SLY, out, *ARCHIVE) == 0
    full = cv2.imread(str(out / "supervisely/ds1/masks_human/a.b.c.png"))
    assert export(SLY, out, *ARCHIVE, "--incremental") == 0
    assert {e["status"] for e in lines(out)} == {"unchanged"}
    # the archive still holds every item (carried forward ones too)
    assert tar_files((out / "supervisely/project.tar").read_bytes()) == \
        tree_files(out / "supervisely")
    assert export(SLY, out, *ARCHIVE, "--set", "supervisely.resize_human_masks=50",
                  "--incremental") == 0
    assert {e["status"] for e in lines(out)} == {"ok"}
    half = cv2.imread(str(out / "supervisely/ds1/masks_human/a.b.c.png"))
    h, w = full.shape[:2]
    assert half.shape[:2] == (int(h * 50 / 100), int(w * 50 / 100))
    assert summary(out)["format_details"]["supervisely"]["settings"]["resize_human_masks"] == 50
    assert summary(out)["config"]["supervisely"]["resize_human_masks"] == 50
    tarred = tar_files((out / "supervisely/project.tar").read_bytes())
    assert tarred["ds1/masks_human/a.b.c.png"] == \
        (out / "supervisely/ds1/masks_human/a.b.c.png").read_bytes()


def test_a_dataset_named_like_the_archive_fails_at_plan_time(project, tmp_path):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("project.tar.002", "b.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    assert export(p.root, out, *ARCHIVE, "--set", "supervisely.archive_split=1MiB") == 1
    got = {e["item"]: e for e in lines(out)}
    assert got["a.png"]["status"] == "ok"
    assert got["b.png"]["status"] == "failed"
    assert "supervisely/project.tar.002" in got["b.png"]["error"]


@pytest.mark.parametrize("bad", ["supervisely.archive=zip", "supervisely.archive_split=lots",
                                 "supervisely.archive_split=1MiB",
                                 "supervisely.resize_human_masks=0",
                                 "supervisely.archive_name=a/b"])
def test_bad_packaging_settings_exit_2_before_any_work(bad, tmp_path, capsys):
    out = tmp_path / "out"
    assert export(SLY, out, "--set", bad) == 2
    assert bad.split("=")[0] in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.s3
def test_archive_streams_to_s3(s3_bucket, tmp_path):
    from tests.e2e.helpers import new_fs

    url = f"s3://{s3_bucket}/masks"
    assert export(SLY, url, *ARCHIVE, "--set", "supervisely.archive_split=64KiB") == 0
    fs = new_fs()
    man = json.loads(fs.cat(f"{s3_bucket}/masks/manifest.json"))
    pieces = man["format_details"]["supervisely"]["archive"]["pieces"]
    data = b"".join(fs.cat(f"{s3_bucket}/masks/{p['key']}") for p in pieces)
    assert [len(fs.cat(f"{s3_bucket}/masks/{p['key']}")) for p in pieces] == \
        [p["size"] for p in pieces]
    files = tar_files(data)
    tree = {k[len(f"{s3_bucket}/masks/supervisely/"):]: v for k, v in
            fs.cat(fs.find(f"{s3_bucket}/masks/supervisely")).items() if ".tar" not in k}
    assert files == tree
