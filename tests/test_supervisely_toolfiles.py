"""Pixels of maskjob's real export on a Supervisely project WRITTEN by the real SDK at scale
(tests/data/sly_toolfiles: 104 items in 5 datasets, nested two levels in the SDK's
`<parent>/datasets/<child>` layout; annotations as the SDK writes Annotation objects, as a
download stores the server's JSON (uncropped labels, float coordinates, server fields,
img_info) and as copied files; every geometry the SDK draws, an `any` class, tags, 300 objects
in one image, images without annotation or without objects, odd names).

Goldens (tests/golden/sly_toolfiles/, `run_supervisely_oracle.sh --toolfiles --goldens`): the
export-as-masks app's masks (tests/data/configs/app.yaml) rendered item by item by the SDK
(supervisely_oracle.app_item_masks), stacked per dataset and kind; index.json gives each item's
rows. Compared as decoded pixels, never bytes. No SDK is needed here.

Known difference, pinned: `dup.png` and `dup.jpg` of one dataset have one mask stem `dup`;
the app would overwrite one with the other, maskjob fails both items with a reason.
The other formats (cvat, clearml, zarr) run once on the same project: every item is ok or
fails alone with a reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from tests.oracles.fixture_hash import fixture_sha256

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "sly_toolfiles"
GOLDEN = REPO / "tests" / "golden" / "sly_toolfiles"
CONFIG = REPO / "tests" / "data" / "configs" / "app.yaml"
INDEX = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))
CLASH = {("web export", "dup.png"), ("web export", "dup.jpg")}
KINDS = {"machine": "masks_machine", "semantic": "masks_semantic_rgb", "human": "masks_human"}


def manifest(out: Path) -> dict:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {(e["dataset"], e["item"]): e for e in map(json.loads, lines)}


def export(src: Path, out: Path, *args: str) -> tuple[int, dict]:
    rc = run(["export", str(src), str(out), "--workers", "0", *args])
    return rc, manifest(out)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the fixture, so a faulty exporter cannot touch the repo."""
    src = tmp_path_factory.mktemp("sly_toolfiles") / "input"
    shutil.copytree(DATA, src)
    return src


@pytest.fixture(scope="module")
def app_export(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("sly_toolfiles_out")
    rc, entries = export(project, out, "--format", "supervisely", "--config", str(CONFIG))
    return rc, out / "supervisely", entries


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"unreadable {path}"
    return img


def test_goldens_cover_every_item_and_the_fixture_is_unchanged():
    oracle = json.loads((GOLDEN / "ORACLE.json").read_text(encoding="utf-8"))
    assert oracle["supervisely"] == "6.74.51"
    assert fixture_sha256(REPO, tuple(oracle["fixture_trees"])) == oracle["fixture_sha256"], (
        "fixture changed: run tests/oracles/run_supervisely_oracle.sh --toolfiles --goldens"
    )
    listed = {(ds, r[0]) for ds, d in INDEX.items() for r in d["items"]}
    on_disk = {
        (p.parent.parent.relative_to(DATA).as_posix(), p.name)
        for p in DATA.rglob("*")
        if p.is_file() and p.parent.name == "img"
    }
    assert listed == on_disk and len(listed) == 104
    # the mess is there: nested datasets, 300 labels, NFC and NFD names, no-label images
    rows = [r for d in INDEX.values() for r in d["items"]]
    assert "train/datasets/nested ds/datasets/leaf" in INDEX
    assert max(len(r[5]) for r in rows) == 300
    assert {"café.png", "cafe\u0301.png", "Case.png", "case.png"} <= {r[0] for r in rows}
    assert sum(not r[5] for r in rows) >= 10


def test_every_item_exports_but_the_one_stem_clash(app_export):
    rc, _, entries = app_export
    assert rc == 1
    assert len(entries) == 104
    for key, entry in entries.items():
        if key in CLASH:
            assert entry["status"] == "failed" and "no silent overwrite" in entry["error"], key
        else:
            assert entry["status"] == "ok", (key, entry["error"])


def test_machine_color_table_is_the_apps(app_export):
    _, out, _ = app_export
    got = json.loads((out / "obj_class_to_machine_color.json").read_text(encoding="utf-8"))
    want = json.loads((GOLDEN / "obj_class_to_machine_color.json").read_text(encoding="utf-8"))
    assert list(got.items()) == list(want.items())


@pytest.mark.parametrize("ds", sorted(INDEX))
def test_masks_equal_the_sdk_goldens(app_export, ds):
    """machine (8-bit gray), semantic and human (RGB) masks and every instance mask
    (masks_instances/<stem>/<class>[_NN].png, names included) of each item of the dataset."""
    _, out, _ = app_export
    d = INDEX[ds]
    gold = {k: read(GOLDEN / f"{d['file']}.{k}.png") for k in (*KINDS, "instances")
            if (GOLDEN / f"{d['file']}.{k}.png").is_file()}
    checked = 0
    for name, h, w, top, itop, insts in d["items"]:
        if (ds, name) in CLASH:
            continue
        stem = name.rsplit(".", 1)[0]
        for kind, folder in KINDS.items():
            got = read(out / ds / folder / f"{stem}.png")
            width = 2 * w if kind == "human" else w
            want = gold[kind][top:top + h, :width]
            assert got.shape == want.shape and np.array_equal(got, want), (ds, name, kind)
        folder = out / ds / "masks_instances" / stem
        if not insts:
            assert not folder.exists(), (ds, name)
            continue
        assert sorted(p.name for p in folder.iterdir()) == sorted(insts), (ds, name)
        for k, inst in enumerate(insts):
            want = gold["instances"][itop + k * h:itop + (k + 1) * h, :w]
            assert np.array_equal(read(folder / inst), want), (ds, name, inst)
        checked += 1
    assert checked or ds == "train/datasets/nested ds/datasets/leaf"


NESTED = "subset name usable as a file name"  # cvat: a nested dataset path is no subset name
OTHER_FORMATS = {
    # run id: (arguments, {dataset or (dataset, item): expected reason}) beside the stem clash
    "cvat": (["--format", "cvat"], {
        ("train", "trai_003.png"): "at most 255 instances",
        "train/datasets/nested ds": NESTED,
        "train/datasets/nested ds/datasets/leaf": NESTED,
    }),
    # all three at once (an item's failure in one format fails the item)
    "cvat-clearml-zarr": (["--format", "cvat", "--format", "clearml", "--format", "zarr",
                           "--set", "cvat.subset_names=safe",
                           "--set", "cvat.instance_overflow=wrap"], {}),
}


@pytest.mark.parametrize("run_id", sorted(OTHER_FORMATS))
def test_other_formats_write_every_item_or_fail_it_with_a_reason(project, tmp_path, run_id):
    args, reasons = OTHER_FORMATS[run_id]
    rc, entries = export(project, tmp_path / "out", *args)
    assert rc == 1 and len(entries) == 104
    for key, entry in entries.items():
        want = reasons.get(key) or reasons.get(key[0])
        if key in CLASH:
            want = "no silent overwrite"
        if want is None:
            assert entry["status"] == "ok", (key, entry["error"])
        else:
            assert entry["status"] == "failed" and want in entry["error"], (key, entry["error"])
