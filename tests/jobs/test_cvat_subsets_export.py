"""`--format cvat` on a Supervisely project whose datasets CVAT cannot hold as subsets (nested
`a/datasets/b`, names with `_`): by default their items fail with a reason naming the options;
`cvat.subset_names: safe` and `cvat.subsets` export them, one list per dataset, never merged;
a dataset colliding with an explicit target fails alone at plan time; datumaro (CVAT's
importer) reads the subsets back (skipped without its cached venv)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from jobs.cli import run
from tests.conftest import rect

REPO = Path(__file__).resolve().parents[2]
DATUMARO = Path(os.environ.get("MASKJOB_ORACLE_CACHE", Path.home() / ".cache" / "maskjob")
                ) / "datumaro-1.13.12" / "bin" / "python"


@pytest.fixture
def nested(project):
    p = project()
    p.add("train", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("train/datasets/cats", "b.png", [rect("person", 2, 2, 9, 9)])
    p.add("my_val", "c.png", [rect("car", 3, 3, 7, 7)])
    p.add("100%", "d.png", [])
    return p


def export(src, out, *extra):
    return run(["export", str(src), str(out), "--format", "cvat", "--workers", "0", *extra])


def lines(out):
    return {json.loads(x)["item"]: json.loads(x)
            for x in (out / "manifest.jsonl").read_text().splitlines()}


def lists(out):
    root = out / "cvat/ImageSets/Segmentation"
    return {p.name: p.read_text().splitlines() for p in sorted(root.iterdir())}


def test_default_fails_the_items_it_cannot_place_and_says_how(nested, tmp_path):
    out = tmp_path / "out"
    assert export(nested.root, out) == 1
    got = lines(out)
    assert got["a.png"]["status"] == got["d.png"]["status"] == "ok"
    for item in ("b.png", "c.png"):
        assert got[item]["status"] == "failed"
        assert "cvat.subsets" in got[item]["error"] and "subset_names: safe" in got[item]["error"]


def test_safe_names_and_an_explicit_map_give_one_list_per_dataset(nested, tmp_path):
    out = tmp_path / "out"
    assert export(nested.root, out, "--set", "cvat.subset_names=safe",
                  "--set", 'cvat.subsets={"my_val": "val"}') == 0
    assert lists(out) == {"100%25.txt": ["d"], "train%2Fdatasets%2Fcats.txt": ["b"],
                          "train.txt": ["a"], "val.txt": ["c"]}
    details = json.loads((out / "manifest.json").read_text())["format_details"]["cvat"]
    assert details == {"subset_names": "safe", "subsets": {
        "100%": "100%25", "my_val": "val", "train/datasets/cats": "train%2Fdatasets%2Fcats"}}
    assert run(["verify", str(out)]) == 0
    if DATUMARO.exists():
        got = subprocess.run([str(DATUMARO), "datumaro_oracle.py", "--check-import",
                              str(out / "cvat")], cwd=REPO / "tests" / "oracles",
                             capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-2000:]
        assert sorted(json.loads(got.stdout)) == [
            "100%25/d", "train%2Fdatasets%2Fcats/b", "train/a", "val/c"]


def test_a_dataset_colliding_with_a_mapped_name_fails_alone(nested, tmp_path):
    nested.add("val", "e.png", [rect("car", 1, 1, 2, 2)])  # 'val' is where the map puts my_val
    out = tmp_path / "out"
    assert export(nested.root, out, "--set", "cvat.subset_names=safe",
                  "--set", 'cvat.subsets={"my_val": "val"}') == 1
    got = lines(out)
    assert got["e.png"]["status"] == "failed"
    assert "the subset cvat.subsets gives to dataset 'my_val'" in got["e.png"]["error"]
    assert got["c.png"]["status"] == "ok"
    assert lists(out)["val.txt"] == ["c"]  # never merged


def test_two_datasets_mapped_to_one_subset_exit_2(nested, tmp_path, capsys):
    out = tmp_path / "out"
    assert export(nested.root, out, "--set",
                  'cvat.subsets={"my_val": "val", "train/datasets/cats": "val"}') == 2
    assert "both mapped to 'val'" in capsys.readouterr().err
    assert not out.exists()
