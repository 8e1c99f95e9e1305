"""Job-level behaviour of `maskjob export`: every bad item fails alone with its reason, good
items are exported, exit code 1; nothing escapes OUTPUT; reruns finish without duplicates;
the same on a real multi-process LocalCluster."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from jobs.cli import run
from tests.conftest import poly, rect


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def by_item(out):
    return {e["item"]: e for e in manifest(out)}


def export(project_root, out, *extra):
    return run(["export", str(project_root), str(out), "--workers", "0", *extra])


@pytest.fixture
def bad_project(project):
    p = project()
    p.add("ds", "good.png", [rect("car", 2, 2, 20, 20), poly("person", (5, 5), (30, 5), (20, 30))])
    p.add("ds", "broken_json.png", ann=b"{oops")
    p.add("ds", "unknown_class.png", [rect("zebra", 1, 1, 4, 4)])
    p.add("ds", "nan.png", ann=b'{"size": {"width": 64, "height": 48}, "tags": [], "objects": '
                                b'[{"classTitle": "car", "tags": [], "points": {"exterior": '
                                b'[[NaN, 1], [4, 4]], "interior": []}}]}')
    p.add("ds", "absurd_coords.png", [poly("person", (1, 1), (10 ** 9, 1), (4, 4))])
    p.add("ds", "missing_image.png", [rect("car", 1, 1, 4, 4)], image=None)
    p.add("ds", "corrupt_image.png", [rect("car", 1, 1, 4, 4)], image=b"\x89PNG not really")
    p.add("ds", "smaller_image.png", [rect("car", 1, 1, 4, 4)],
          image=cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes())
    p.add("ds", "absurd_size.png", [], w=10 ** 6, h=10 ** 6, image=None)
    p.add("ds", "no_annotation.png", ann=None)
    p.add("ds", "empty.png", [])
    return p


def test_each_bad_item_fails_alone_with_its_reason(bad_project, tmp_path):
    out = tmp_path / "out"
    assert export(bad_project.root, out) == 1
    items = by_item(out)
    assert items["good.png"]["status"] == "ok" and items["empty.png"]["status"] == "ok"
    reasons = {
        "broken_json.png": "valid annotation JSON",
        "unknown_class.png": "zebra",
        "nan.png": "finite",
        "absurd_coords.png": "coordinate within",
        "missing_image.png": "image file",
        "corrupt_image.png": "do not decode",
        "smaller_image.png": "Got 10x10",
        "absurd_size.png": "65535",
        "no_annotation.png": "no annotation file",
    }
    for name, needle in reasons.items():
        assert items[name]["status"] == "failed", name
        assert needle in items[name]["error"], (name, items[name]["error"])
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["failed"] == len(reasons) and summary["ok"] == 2
    good = items["good.png"]
    machine = cv2.imread(str(out / "supervisely/ds/masks_machine/good.png"), cv2.IMREAD_UNCHANGED)
    assert good["class_pixels"] == {"car": int((machine == 1).sum()),
                                    "person": int((machine == 2).sum())}
    assert good["class_pixels"]["car"] + good["class_pixels"]["person"] == \
        int((machine > 0).sum()) > 19 * 19
    assert good["instances"] == 2 and all(o["checksum"].startswith("md5:")
                                          for o in good["outputs"])
    assert (out / "supervisely/ds/masks_machine/good.png").exists()
    assert (out / "supervisely/ds/masks_machine/empty.png").exists()
    assert not (out / "supervisely/ds/masks_machine/broken_json.png").exists()


def test_odd_names_stay_inside_the_output(project, tmp_path):
    p = project([{"title": "../../evil", "shape": "rectangle", "color": "#FF0000"},
                 {"title": "a/b", "shape": "rectangle", "color": "#00FF00"}])
    p.add("ds", "spaced name ü.v2.png", [rect("../../evil", 1, 1, 5, 5), rect("a/b", 3, 3, 9, 9),
                                         rect("a/b", 4, 4, 6, 6)])
    out = tmp_path / "out"
    assert export(p.root, out, "--set", "supervisely.masks_instances=true") == 0
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert all(not f.startswith("..") for f in files)
    inst = out / "supervisely/ds/masks_instances/spaced name ü.v2"
    assert sorted(f.name for f in inst.iterdir()) == [".._.._evil.png", "a_b.png", "a_b_01.png"]
    assert not (tmp_path / "evil.png").exists()


def test_more_than_255_classes_give_16_bit_machine_masks(project, tmp_path):
    classes = [{"title": f"c{i}", "shape": "rectangle", "color": "#010203"} for i in range(300)]
    p = project(classes)
    p.add("ds", "a.png", [rect("c0", 0, 0, 3, 3), rect("c299", 10, 10, 12, 12)])
    out = tmp_path / "out"
    assert export(p.root, out) == 0
    m = cv2.imread(str(out / "supervisely/ds/masks_machine/a.png"), cv2.IMREAD_UNCHANGED)
    assert m.dtype == np.uint16 and m[0, 0] == 1 and m[11, 11] == 300


def test_rerun_after_crash_finishes_without_duplicates(bad_project, tmp_path):
    """Simulate a crash: drop the summary, a committed part and the merged manifest; the rerun
    redoes only that partition, rewrites the same keys, and lists every item exactly once."""
    out = tmp_path / "out"
    args = ("--set", "partition_size=3")
    assert export(bad_project.root, out, *args) == 1
    parts = sorted((out / "_manifest").glob("part-*.jsonl"))
    assert len(parts) == 4
    kept = {p.name: p.stat().st_mtime_ns for p in parts[1:]}
    parts[0].unlink()
    (out / "manifest.json").unlink()
    (out / "manifest.jsonl").unlink()
    assert export(bad_project.root, out, *args) == 1
    for name, mtime in kept.items():
        assert (out / "_manifest" / name).stat().st_mtime_ns == mtime
    lines = manifest(out)
    assert len(lines) == 11 and len({e["item"] for e in lines}) == 11
    assert json.loads((out / "manifest.json").read_text())["partitions_resumed"] == 3
    assert run(["verify", str(out)]) == 0


def test_changed_input_discards_old_parts(project, tmp_path):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    assert export(p.root, out) == 0
    p.add("ds", "b.png", [rect("car", 1, 1, 5, 5)])
    assert export(p.root, out) == 0
    assert sorted(e["item"] for e in manifest(out)) == ["a.png", "b.png"]


def test_verify_names_a_missing_and_an_altered_object(project, tmp_path, caplog):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    assert export(p.root, out) == 0
    assert run(["verify", str(out)]) == 0
    (out / "supervisely/ds/masks_machine/a.png").unlink()
    (out / "supervisely/ds/masks_human/b.png").write_bytes(b"tampered")
    assert run(["verify", str(out)]) == 1
    assert "missing: supervisely/ds/masks_machine/a.png" in caplog.text
    assert "supervisely/ds/masks_human/b.png" in caplog.text


def test_tar_project_input(bad_project, tmp_path):
    import tarfile

    tar_path = tmp_path / "project.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(bad_project.root, arcname="")
    out = tmp_path / "out"
    assert export(tar_path, out) == 1
    assert by_item(out)["good.png"]["status"] == "ok"


@pytest.mark.cluster
def test_export_on_a_multiprocess_local_cluster(bad_project, tmp_path):
    """The same job on LocalCluster(processes=True, 2 workers): identical manifest lines."""
    local, dist = tmp_path / "local", tmp_path / "dist"
    assert export(bad_project.root, local, "--set", "partition_size=2") == 1
    assert run(["export", str(bad_project.root), str(dist), "--workers", "2",
                "--set", "partition_size=2"]) == 1
    assert manifest(local) == manifest(dist)
