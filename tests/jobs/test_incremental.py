"""--incremental: a nightly rerun re-exports only items whose annotation, image or settings
changed, carries the others forward untouched, removes outputs of deleted items, and still
writes a complete manifest."""

from __future__ import annotations

import json

import cv2
import numpy as np

from jobs.cli import run
from tests.conftest import rect


def lines(out):
    return {e["item"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text()
                                      .splitlines())}


def test_incremental_rerun_touches_only_what_changed(project, tmp_path):
    p = project()
    for k in range(6):
        p.add("ds", f"img{k}.png", [rect("car", k, k, 20 + k, 20)])
    out = tmp_path / "out"
    args = ["export", str(p.root), str(out), "--workers", "0", "--set", "partition_size=2"]
    assert run(args) == 0
    before = {f: (out / f).stat().st_mtime_ns for f in
              ("supervisely/ds/masks_machine/img0.png", "supervisely/ds/masks_machine/img3.png")}

    p.add("ds", "img1.png", [rect("car", 1, 1, 30, 30)], image=False)  # annotation changed
    img = np.full((48, 64, 3), 7, np.uint8)
    (p.root / "ds/img/img2.png").write_bytes(cv2.imencode(".png", img)[1].tobytes())
    (p.root / "ds/img/img5.png").unlink()
    (p.root / "ds/ann/img5.png.json").unlink()
    p.add("ds", "new.png", [rect("car", 2, 2, 9, 9)])

    assert run([*args, "--incremental"]) == 0
    got = lines(out)
    assert {k: v["status"] for k, v in got.items()} == {
        "img0.png": "unchanged", "img1.png": "ok", "img2.png": "ok", "img3.png": "unchanged",
        "img4.png": "unchanged", "new.png": "ok"}
    for f, mtime in before.items():
        assert (out / f).stat().st_mtime_ns == mtime, f"{f} was rewritten"
    assert not (out / "supervisely/ds/masks_machine/img5.png").exists()
    m = cv2.imread(str(out / "supervisely/ds/masks_machine/img1.png"), cv2.IMREAD_UNCHANGED)
    assert m[29, 29] == 1
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["summary"]["unchanged"] == 3 and summary["outputs_removed"] > 0
    assert run(["verify", str(out)]) == 0

    # settings changed: everything is exported again
    assert run([*args, "--incremental", "--set", "supervisely.thickness=3"]) == 0
    assert {v["status"] for v in lines(out).values()} == {"ok"}


def test_two_incremental_runs_in_a_row_see_a_content_change(project, tmp_path):
    """A second incremental run after a completed one must not replay the committed parts
    when an annotation's content changed (the plan includes the objects' tags)."""
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    args = ["export", str(p.root), str(out), "--workers", "0", "--incremental"]
    assert run(args) == 0
    assert run(args) == 0
    assert {v["status"] for v in lines(out).values()} == {"unchanged"}
    p.add("ds", "a.png", [rect("car", 1, 1, 30, 30)], image=False)
    assert run(args) == 0
    got = lines(out)
    assert got["a.png"]["status"] == "ok" and got["b.png"]["status"] == "unchanged"
    assert got["a.png"]["class_pixels"] == {"car": 30 * 30}
