"""Pixels of maskjob's real export on a Supervisely project WRITTEN by the real SDK at scale
(tests/data/sly_toolfiles: 104 items in 5 datasets, nested two levels in the SDK's
`<parent>/datasets/<child>` layout; annotations as the SDK writes Annotation objects, as a
download stores the server's JSON (uncropped labels, float coordinates, server fields,
img_info) and as copied files; every geometry the SDK draws, an `any` class, tags, 300 objects
in one image, images without annotation or without objects, odd names).

Goldens (tests/golden/sly_toolfiles/, `run_supervisely_oracle.sh --toolfiles --goldens`): the
export-as-masks app's masks (tests/data/configs/app.yaml) and the DTL save_masks layer's
(dtl_save_masks.json: its mapping lacks the class "Fußgänger ü", skipped) rendered item by item
by the SDK (supervisely_oracle.app_item_masks / dtl_item_masks), stacked per dataset and kind;
index.json gives each item's rows. Compared as decoded pixels, never bytes. No SDK is needed here.

Known difference, pinned: `dup.png` and `dup.jpg` of one dataset have one mask stem `dup`;
the app would overwrite one with the other, maskjob fails both items with a reason.
The other formats (cvat, clearml, zarr) run once on the same project: every item is ok or
fails alone with a reason.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from tests.oracles.fixture_hash import fixture_sha256
from tests.oracles.sly_toolfiles_names import RENAMES, stage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "sly_toolfiles"
GOLDEN = REPO / "tests" / "golden" / "sly_toolfiles"
CONFIGS = {"app": REPO / "tests" / "data" / "configs" / "app.yaml",
           "dtl": REPO / "tests" / "data" / "configs" / "dtl_save_masks.json"}
INDEX = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))
CLASH = {("web export", "dup.png"), ("web export", "dup.jpg")}
# mode: {golden kind: (output folder, width in units of the image width, extra columns)}
KINDS = {
    "app": {"machine": ("masks_machine", 1, 0), "semantic": ("masks_semantic_rgb", 1, 0),
            "human": ("masks_human", 2, 0)},
    "dtl": {"dtl_machine": ("masks_machine", 1, 0), "dtl_human": ("masks_human", 2, 1)},
}


def manifest(out: Path) -> dict:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {(e["dataset"], e["item"]): e for e in map(json.loads, lines)}


def export(src: Path, out: Path, *args: str) -> tuple[int, dict]:
    rc = run(["export", str(src), str(out), "--workers", "0", *args])
    return rc, manifest(out)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project as the SDK wrote it (a copy of the fixture with the SDK's item names)."""
    return stage(DATA, REPO / RENAMES, tmp_path_factory.mktemp("sly_toolfiles") / "input")


@pytest.fixture(scope="module")
def sly_export(project, tmp_path_factory):
    """mode -> (exit code, OUTPUT/supervisely, manifest) of maskjob's export, run once each."""
    cache = {}

    def get(mode: str):
        if mode not in cache:
            out = tmp_path_factory.mktemp(f"sly_toolfiles_{mode}")
            rc, entries = export(project, out, "--format", "supervisely",
                                 "--config", str(CONFIGS[mode]))
            cache[mode] = rc, out / "supervisely", entries
        return cache[mode]

    return get


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"unreadable {path}"
    return img


def test_goldens_cover_every_item_and_the_fixture_is_unchanged(project):
    oracle = json.loads((GOLDEN / "ORACLE.json").read_text(encoding="utf-8"))
    assert oracle["supervisely"] == "6.74.51"
    assert fixture_sha256(REPO, tuple(oracle["fixture_trees"])) == oracle["fixture_sha256"], (
        "fixture changed: run tests/oracles/run_supervisely_oracle.sh --toolfiles --goldens"
    )
    listed = {(ds, r[0]) for ds, d in INDEX.items() for r in d["items"]}
    on_disk = {
        (p.parent.parent.relative_to(project).as_posix(), p.name)
        for p in project.rglob("*")
        if p.is_file() and p.parent.name == "img"
    }
    assert listed == on_disk and len(listed) == 104
    # the mess is there: nested datasets, 300 labels, NFC and NFD names, no-label images
    rows = [r for d in INDEX.values() for r in d["items"]]
    assert "train/datasets/nested ds/datasets/leaf" in INDEX
    assert max(len(r[5]) for r in rows) == 300
    assert {"café.png", "cafe\u0301.png", "Case.png", "case.png"} <= {r[0] for r in rows}
    assert sum(not r[5] for r in rows) >= 10
    # the committed names are portable: none differ only by case or Unicode normalisation
    for img_dir in DATA.rglob("img"):
        names = [p.name for p in img_dir.iterdir()]
        assert len({unicodedata.normalize("NFC", n).casefold() for n in names}) == len(names)


@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_every_item_exports_but_the_one_stem_clash(sly_export, mode):
    rc, _, entries = sly_export(mode)
    assert rc == 1
    assert len(entries) == 104
    for key, entry in entries.items():
        if key in CLASH:
            assert entry["status"] == "failed" and "no silent overwrite" in entry["error"], key
        else:
            assert entry["status"] == "ok", (key, entry["error"])


def test_machine_color_table_is_the_apps(sly_export):
    _, out, _ = sly_export("app")
    got = json.loads((out / "obj_class_to_machine_color.json").read_text(encoding="utf-8"))
    want = json.loads((GOLDEN / "obj_class_to_machine_color.json").read_text(encoding="utf-8"))
    assert list(got.items()) == list(want.items())


@pytest.mark.parametrize("ds", sorted(INDEX))
@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_masks_equal_the_sdk_goldens(sly_export, mode, ds):
    """app: machine (8-bit gray), semantic and human (RGB) masks and every instance mask
    (masks_instances/<stem>/<class>[_NN].png, names included); dtl: machine (RGB) and human
    ([image | green column | overlay]) masks; of each item of the dataset."""
    _, out, _ = sly_export(mode)
    d = INDEX[ds]
    gold = {k: read(GOLDEN / f"{d['file']}.{k}.png") for k in (*KINDS[mode], "instances")
            if (GOLDEN / f"{d['file']}.{k}.png").is_file()}
    checked = 0
    for name, h, w, top, itop, insts in d["items"]:
        if (ds, name) in CLASH:
            continue
        stem = name.rsplit(".", 1)[0]
        for kind, (folder, times, extra) in KINDS[mode].items():
            got = read(out / ds / folder / f"{stem}.png")
            want = gold[kind][top:top + h, :times * w + extra]
            assert got.shape == want.shape and np.array_equal(got, want), (ds, name, kind)
        checked += 1
        folder = out / ds / "masks_instances" / stem
        if mode != "app":
            assert not folder.exists(), (ds, name)
            continue
        if not insts:
            assert not folder.exists(), (ds, name)
            continue
        assert sorted(p.name for p in folder.iterdir()) == sorted(insts), (ds, name)
        for k, inst in enumerate(insts):
            want = gold["instances"][itop + k * h:itop + (k + 1) * h, :w]
            assert np.array_equal(read(folder / inst), want), (ds, name, inst)
    assert checked == len(d["items"]) - sum((ds, r[0]) in CLASH for r in d["items"])


NESTED = "subset name usable as a file name"  # cvat: a nested dataset path is no subset name
OTHER_FORMATS = {
    # run id: (arguments, {dataset or (dataset, item): expected reason}) beside the stem clash
    "cvat": (["--format", "cvat", "--set", "cvat.colors=voc"], {
        ("train", "trai_003.png"): "at most 255 instances",
        "train/datasets/nested ds": NESTED,
        "train/datasets/nested ds/datasets/leaf": NESTED,
    }),
    # all three at once (an item's failure in one format fails the item)
    "cvat-clearml-zarr": (["--format", "cvat", "--format", "clearml", "--format", "zarr",
                           "--set", "cvat.subset_names=safe", "--set", "cvat.colors=voc",
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


def test_cvat_refuses_the_black_class_before_work(project, tmp_path, capsys):
    """`shadow` is #000000 in meta.json, the colour of CVAT's background line: the default
    `cvat.colors` (the classes' own) is refused with one line and exit 2, before any work."""
    rc = run(["export", str(project), str(tmp_path / "out"), "--workers", "0",
              "--format", "cvat"])
    assert rc == 2 and not (tmp_path / "out" / "manifest.jsonl").exists()
    assert "'background' and 'shadow' both [0, 0, 0]" in capsys.readouterr().err
