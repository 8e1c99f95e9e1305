"""Third fuzz round: inputs as an attacker or a messy tool writes them, run through `maskjob
export` end to end (in process). Each bad item must fail alone with its reason, the others
export; what the run refuses as a whole stops before any work with one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from maskcore.formats import coco
from tests.conftest import rect


def export(inp: Path, out: Path, *extra: str) -> int:
    return run(["export", str(inp), str(out), "--workers", "0", *extra])


def manifest(out: Path) -> dict[str, dict]:
    return {e["item"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text()
                                      .splitlines())}


@pytest.fixture
def no_hang():
    """Fail (not block) a test whose run waits on a FIFO: SIGALRM interrupts the open."""
    def hung(*_):
        raise TimeoutError("the run blocked")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- COCO ids
def coco_file(tmp_path: Path, image_ids: list[str]) -> Path:
    """A COCO file whose annotations' image_id are written as given (raw JSON text), one
    box each, on images with ids 1, 2, ... (as a pandas export writes floats: `1.0`)."""
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for k, text in enumerate(image_ids, 1):
        cv2.imwrite(str(tmp_path / "images" / f"i{k}.png"), np.zeros((20, 30, 3), np.uint8))
        images.append(f'{{"id": {k}, "file_name": "i{k}.png", "width": 30, "height": 20}}')
        anns.append(f'{{"id": {k}, "image_id": {text}, "category_id": 1, '
                    f'"segmentation": [[2, 2, 9, 2, 9, 9, 2, 9]], "bbox": [2, 2, 7, 7]}}')
    path = tmp_path / "coco.json"
    path.write_text(f'{{"images": [{",".join(images)}], "annotations": [{",".join(anns)}], '
                    '"categories": [{"id": 1, "name": "car"}]}')
    return path


@pytest.mark.parametrize("ids", [["1", "2.0", "3"], ["1", "true", "3"], ["1.0", "2", "3e0"]])
def test_annotations_naming_an_image_by_a_float_or_bool_fail_that_image(tmp_path, ids):
    """`"image_id": 2.0` (pandas) or `true`: pycocotools and datumaro join them to image 2
    (or 1: True == 1) by dict lookup. Such an annotation was counted as naming no image, and
    its image exported as an EMPTY mask marked ok; now that image fails, naming it."""
    path = coco_file(tmp_path, ids)
    out = tmp_path / "out"
    assert export(path, out) == 1
    got = manifest(out)
    bad = {coco.id_alias(v): v for v in map(json.loads, ids) if coco.id_alias(v) is not None}
    for k in range(1, len(ids) + 1):
        e = got[f"i{k}.png"]
        if k in bad:
            assert e["status"] == "failed", e
            assert f"Expected an integer or string image_id. Got {bad[k]!r}" in e["error"]
        else:
            boxes = {"car": 49} if ids[k - 1] == str(k) else {}  # its own box, or none
            assert (e["status"], e["class_pixels"]) == ("ok", boxes)
    split = coco.split_dataset(path.read_bytes())  # the in-memory split joins them too
    assert split.orphans == 0


# ---------------------------------------------------------------------------- reasons
def test_a_reason_quoting_a_lone_surrogate_fails_its_item_not_the_job(project, tmp_path):
    """`"classTitle": "\\ud800"` (legal JSON, no UTF-8 text holds it): the item's reason
    quotes the title, and its manifest line could not be encoded - the partition failed on
    every attempt, the job exited 3 ("rerun to resume") and never finished."""
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", ann=b'{"size": {"width": 64, "height": 48}, "tags": [], "objects": '
                           b'[{"classTitle": "\\ud800", "points": {"exterior": [[1, 1], [5, 5]], '
                           b'"interior": []}}]}')
    out = tmp_path / "out"
    assert export(p.root, out) == 1
    got = manifest(out)
    assert got["a.png"]["status"] == "ok"
    assert got["b.png"]["status"] == "failed"
    assert "Expected a class declared in meta.json. Got '\\ud800'" in got["b.png"]["error"]
    assert json.loads((out / "manifest.json").read_text())["summary"]["failed"] == 1


def test_a_meta_class_title_of_a_lone_surrogate_exits_2_before_any_work(project, tmp_path,
                                                                       capsys):
    """A meta.json class `"title": "\\ud800"`: the items exported, then writing the class
    lists failed and the job exited 3 on every rerun; now one line, as a COCO category."""
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    meta = json.loads((p.root / "meta.json").read_text())
    meta["classes"].insert(0, {"title": "\ud800", "shape": "rectangle", "color": "#0000FF"})
    (p.root / "meta.json").write_text(json.dumps(meta))  # ensure_ascii: written as \ud800
    out = tmp_path / "out"
    assert export(p.root, out) == 2
    err = capsys.readouterr().err
    assert "meta.json classes[0]: Expected a class 'title' in valid Unicode." in err, err
    assert not out.exists()


# ---------------------------------------------------------------------------- job files
SECRET = "wJalrXUtnFEMI-K7MDENG"


@pytest.mark.parametrize("text", [
    f"formats: [supervisely]\nimages_url: s3://AKIAXX:{SECRET}@bucket/x: y\n",
    f"formats: [supervisely]\ntoken: {SECRET}: y\n",
    f'formats: [supervisely]\nimages_url: "s3://bucket/x" {SECRET}\n',
    f'{{"action": "save_masks", "settings": {{"password": "{SECRET}" ',
    f"formats: [supervisely]\nimages_url: 's3://bucket/{SECRET}\n",
], ids=["userinfo", "token", "trailing", "dtl-json", "unterminated"])
def test_a_job_file_that_does_not_parse_is_reported_by_position_never_quoted(
        tmp_path, capsys, text):
    """PyYAML's message quotes the offending line with a caret under it: a credential pasted
    into a job file (or a URL with userinfo next to a typo) was printed, whole or its tail."""
    config = tmp_path / "job.yaml"
    config.write_text(text)
    assert export(tmp_path / "nothing", tmp_path / "out", "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert "Expected valid YAML or JSON" in err and " at line " in err, err
    assert SECRET[-6:] not in err and "\n" not in err.strip(), err


def test_a_set_value_that_does_not_parse_is_not_echoed(tmp_path, capsys):
    assert export(tmp_path / "nothing", tmp_path / "out",
                  "--set", f"images_url=token: {SECRET}: x") == 2
    err = capsys.readouterr().err
    assert "config key 'images_url'" in err and SECRET[-6:] not in err, err


def test_a_job_file_in_utf16_is_one_clear_config_line(tmp_path, capsys):
    config = tmp_path / "job.yaml"
    config.write_bytes("formats: [supervisely]\n".encode("utf-16"))
    assert export(tmp_path / "nothing", tmp_path / "out", "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert "Expected a job file in UTF-8. Got 'byte 0xff at 0' instead." in err, err


# ---------------------------------------------------------------------------- OUTPUT
@pytest.mark.parametrize("linked", ["output", "input"])
def test_an_output_inside_the_input_through_a_link_is_refused_before_any_work(
        project, tmp_path, capsys, linked):
    """OUTPUT a link to a folder inside INPUT (or INPUT a link, OUTPUT inside its target): the
    check compared the paths as written, and the job wrote its outputs into its input."""
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    (p.root / "exports").mkdir()
    if linked == "output":
        (tmp_path / "out").symlink_to(p.root / "exports")
        inp, out = p.root, tmp_path / "out"
    else:
        (tmp_path / "in").symlink_to(p.root)
        inp, out = tmp_path / "in", p.root / "exports" / "out"
    assert export(inp, out) == 2
    assert "is inside the input" in capsys.readouterr().err
    assert list((p.root / "exports").iterdir()) == []


# ---------------------------------------------------------------------------- special files
def test_a_cvat_annotations_xml_that_is_a_fifo_is_one_input_line_not_a_hang(
        tmp_path, capsys, no_hang):
    """The CVAT listing opened annotations.xml with fs.open, past Root's checks: a FIFO there
    blocked the run forever (and a link out of the input was read)."""
    task = tmp_path / "task"
    (task / "images").mkdir(parents=True)
    os.mkfifo(task / "annotations.xml")
    assert export(task, tmp_path / "out") == 2
    assert "annotations.xml: Expected a regular file. Got a FIFO instead." in \
        capsys.readouterr().err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_job_file_that_is_a_fifo_or_dev_zero_is_refused_before_reading(
        tmp_path, capsys, no_hang, kind):
    """--config read the file whole: a FIFO blocked the run forever, /dev/zero (or a link to
    it) filled the memory until MemoryError."""
    config = tmp_path / "job.yaml"
    if kind == "fifo":
        os.mkfifo(config)
    else:
        config.symlink_to("/dev/zero")
    assert export(tmp_path / "nothing", tmp_path / "out", "--config", str(config)) == 2
    got = "a FIFO" if kind == "fifo" else "a character device"
    assert f"job.yaml: Expected a regular file. Got {got} instead." in capsys.readouterr().err


@pytest.mark.parametrize("block", [64, 1 << 18])
def test_a_float_image_id_after_plain_blocks_joins_its_image_on_every_listing_path(
        tmp_path, monkeypatch, block):
    """The same join on the msgspec pass (plain blocks before the odd one, many blocks) and
    on ijson's passes: the image of `"image_id": 15.0` carries that annotation."""
    from tests.jobs.test_listing_stream import coco_refs

    ids = [str(k) for k in range(1, 21)]
    ids[14] = "15.0"
    path = coco_file(tmp_path, ids)
    fast, _ = coco_refs(path, monkeypatch, fast=True, block=block)
    assert fast == coco_refs(path, monkeypatch, fast=False)[0]
    inline = {name: json.loads(ann) for _, name, _, ann, *_ in fast}
    assert [a["image_id"] for a in inline["i15.png"]["annotations"]] == [15.0]
    assert all(len(inline[f"i{k}.png"]["annotations"]) == 1 for k in range(1, 21))


# ---------------------------------------------------------------------------- COCO parts
def test_a_polygon_of_very_many_parts_is_read_in_one_pass_and_paints_as_pycocotools(
        tmp_path, monkeypatch):
    """A segmentation of a million two-point parts (nothing to draw, no point budget to stop
    it) took ~15 CPU s in the reader, one numpy conversion per part (200 000 parts: 3.9 ->
    1.25 CPU s for the whole export, same run); now one pass over all parts. The pixels stay
    pycocotools' (annToMask) with tiny, empty and real parts mixed."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    rng = np.random.default_rng(3)
    real = [rng.uniform(0, 60, 2 * rng.integers(3, 7)).round(2).tolist() for _ in range(40)]
    tiny = [[1.5, 2.5, 7, 3], [], [4, 4]] * 10_000
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                            "segmentation": real[:20] + tiny + real[20:]}],
           "categories": [{"id": 1, "name": "car"}]}
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    per_part = []
    numbers = coco._numbers
    monkeypatch.setattr(coco, "_numbers", lambda *a: per_part.append(1) or numbers(*a))
    out = tmp_path / "out"
    assert export(tmp_path / "coco.json", out, "--format", "clearml") == 0
    assert len(per_part) == 0  # was one call per part
    got = cv2.imread(str(out / "clearml/masks/coco/a.png"), cv2.IMREAD_UNCHANGED)[:, :, 0]
    api = COCO()  # the real parts only: parts of fewer than 3 points paint nothing there
    api.dataset = {**doc, "annotations": [{**doc["annotations"][0], "segmentation": real}]}
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    want = api.annToMask(api.dataset["annotations"][0])
    assert want.any() and np.array_equal(got > 0, want > 0)


def test_a_bad_part_among_many_is_still_named():
    """The one-pass read falls back to the per-part loop, which names the offending part."""
    segm = [[1, 1, 5, 1, 5, 5]] * 100 + [[1, 2, float("nan"), 4, 5, 6]]
    data = json.dumps({"image": {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                       "annotations": [{"id": 1, "category_id": 1, "segmentation": segm}],
                       "categories": [[1, "car"]]}).encode()
    classes = coco.parse_classes(b'{"images": [], "annotations": [], '
                                 b'"categories": [{"id": 1, "name": "car"}]}')
    with pytest.raises(coco.ItemError, match=r"finite coordinates in segmentation\[100\]"):
        coco.parse_item(data, classes, dataset="d", name="a.png")


# ---------------------------------------------------------------------------- Supervisely holes
def test_many_holes_are_read_in_one_pass_exactly_as_ring_by_ring(monkeypatch):
    """A polygon of very many 1-2 point holes (what a hostile or buggy tool writes) cost ~30 us
    a ring; one pass now gives the same rings (floored, padded as the SDK pads them) and the
    same point charges."""
    from maskcore.formats import supervisely as sly
    from maskcore.limits import Budget, Limits

    rng = np.random.default_rng(5)
    rings = [[[float(x), int(y)] for x, y in rng.uniform(-50, 700, (int(n), 2))]
             for n in rng.integers(1, 7, 3000)]
    rings[7] = [[3, 4]]
    points = {"exterior": [[1, 1], [600, 1], [600, 400]], "interior": rings}
    fast_budget, loop_budget = Budget(Limits()), Budget(Limits())
    calls = []
    ring_by_ring = sly._points
    monkeypatch.setattr(sly, "_points", lambda *a: calls.append(1) or ring_by_ring(*a))
    fast = sly._polygon_from(points, fast_budget, "objects[0]")
    assert len(calls) == 1  # the exterior only
    monkeypatch.setattr(sly, "MANY_RINGS", 1 << 30)
    loop = sly._polygon_from(points, loop_budget, "objects[0]")
    assert len(fast.interiors) == len(loop.interiors) == 3000
    for a, b in zip(fast.interiors, loop.interiors, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert fast_budget.point_total == loop_budget.point_total


@pytest.mark.parametrize("bad", [[[1, float("nan")]], [[1, 2, 3]], [], "x", [[2e6, 1]]])
def test_a_bad_hole_among_many_is_still_named(bad):
    from maskcore.formats import supervisely as sly
    from maskcore.limits import Budget, Limits

    rings = [[[5, 5]]] * 100 + [bad]
    with pytest.raises(coco.ItemError, match=r"objects\[0\] interior\[100\]"):
        sly._polygon_from({"exterior": [[1, 1], [60, 1], [60, 40]], "interior": rings},
                          Budget(Limits()), "objects[0]")
