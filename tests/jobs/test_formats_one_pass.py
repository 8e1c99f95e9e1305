"""Several formats from one pass (`--format supervisely --format clearml --format zarr
--format cvat`): each item is rendered once and every format encodes from the same stamps, so
each format's tree is byte-identical to the one a single-format run writes (output URLs inside
ClearML frames aside, which name their own output root)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jobs.cli import run
from jobs.demo import make_demo_project
from maskcore.formats import FORMATS

COCO = Path(__file__).resolve().parents[1] / "data" / "coco_small"
ALL = [f for f in ("supervisely", "clearml", "zarr", "cvat") if f in FORMATS]


def tree(out: Path, fmt: str) -> dict[str, bytes]:
    """Every file of a format's tree, with the output root's own path made neutral."""
    root = out / fmt
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            files[p.relative_to(out).as_posix()] = p.read_bytes().replace(
                out.as_uri().encode(), b"OUT").replace(str(out).encode(), b"OUT")
    return files


def outputs(out: Path, fmt: str) -> dict[str, list]:
    got = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        e = json.loads(line)
        got[e["item"]] = [(o["key"], e["status"], e["error"]) for o in e["outputs"]
                          if o["key"].startswith(fmt + "/")]
    return got


def check_one_pass_equals_single_runs(inp: Path, tmp_path: Path, *extra: str) -> None:
    multi = tmp_path / "all"
    fmt_args = [a for f in ALL for a in ("--format", f)]
    rc = run(["export", str(inp), str(multi), "--workers", "0", *fmt_args, *extra])
    assert rc in (0, 1)
    for fmt in ALL:
        single = tmp_path / f"only-{fmt}"
        assert run(["export", str(inp), str(single), "--workers", "0", "--format", fmt,
                    *extra]) == rc
        a, b = tree(multi, fmt), tree(single, fmt)
        assert a.keys() == b.keys(), fmt
        assert len(a) > 3, fmt
        for key in a:
            assert a[key] == b[key], key
        assert outputs(multi, fmt) == outputs(single, fmt)


def test_supervisely_project_all_formats_in_one_pass(tmp_path):
    """The demo project (every geometry, every supervisely mask kind); its nested dataset is
    dropped because a CVAT subset cannot be named 'a/datasets/b' - in one pass, an item that one
    format refuses fails for every format."""
    project, config = make_demo_project(str(tmp_path / "demo"))
    shutil.rmtree(Path(project) / "street" / "datasets")
    check_one_pass_equals_single_runs(Path(project), tmp_path, "--config", config)


def test_coco_all_formats_in_one_pass(tmp_path):
    check_one_pass_equals_single_runs(COCO, tmp_path, "--set", "zarr.chunk=32")


def test_all_formats_render_each_item_once(tmp_path, monkeypatch):
    """One render per item and pixel rule, whatever the number of formats."""
    import maskcore.formats.base as base

    calls = []
    real = base.render

    def counting(item, *a, **kw):
        calls.append((item.name, kw.get("rule"), kw.get("thickness"), kw.get("templated")))
        return real(item, *a, **kw)

    monkeypatch.setattr(base, "render", counting)
    fmt_args = [a for f in ALL for a in ("--format", f)]
    assert run(["export", str(COCO), str(tmp_path / "o"), "--workers", "0", *fmt_args]) == 1
    per_item: dict[str, int] = {}
    for name, *_ in calls:
        per_item[name] = per_item.get(name, 0) + 1
    assert per_item == {"street/a.jpg": 1, "b.png": 1, "c.png": 1}


def class_pixels(out: Path) -> dict[str, tuple]:
    got = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        e = json.loads(line)
        got[e["dataset"] + "/" + e["item"]] = (e["status"], e["class_pixels"], e["instances"])
    return got


def test_class_pixels_are_the_same_whatever_the_formats_and_their_order(tmp_path):
    """One composition per item: the manifest's class_pixels and instances do not depend on
    which format comes first (lines 3 px wide everywhere: the job's render thickness)."""
    project, config = make_demo_project(str(tmp_path / "demo"))
    shutil.rmtree(Path(project) / "street" / "datasets")
    seen = []
    for k, fmts in enumerate([ALL, ALL[::-1], ["zarr"], ["supervisely"]]):
        out = tmp_path / f"run{k}"
        args = [a for f in fmts for a in ("--format", f)]
        assert run(["export", project, str(out), "--workers", "0", "--config", config,
                    "--set", "supervisely.thickness=3", *args]) == 0
        seen.append(class_pixels(out))
    assert any(v[1] for v in seen[0].values())
    assert all(s == seen[0] for s in seen[1:])
