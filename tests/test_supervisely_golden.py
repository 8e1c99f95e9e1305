"""Pixel parity of the `supervisely` output format with the REAL Supervisely SDK.

The goldens under tests/golden/supervisely/<mode>/ were rendered by the SDK itself
(supervisely==6.74.51) emulating the export-as-masks app and the DTL save_masks layer, with the
documented fixes of upstream bugs (tests/oracles/README.md). They are regenerated with
tests/oracles/run_supervisely_oracle.sh, in the oracle's own venv; this module needs no SDK:
it runs maskjob in-process on the same fixture and config and compares DECODED pixels
(cv2.IMREAD_UNCHANGED: exact dtype, shape and values), never PNG bytes.

Modes (fixture project, job config):
  app    tests/data/sly_project       + tests/data/configs/app.yaml
  app16  tests/data/sly_many_classes  + tests/data/configs/app16.yaml
  dtl    tests/data/sly_project       + tests/data/configs/dtl_save_masks.json
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "supervisely"
DATA = REPO / "tests" / "data"


def _load_fixture_hash():
    """tests/oracles/fixture_hash.py (stdlib only, shared with the oracle), loaded by path."""
    path = REPO / "tests" / "oracles" / "fixture_hash.py"
    spec = importlib.util.spec_from_file_location("_sly_oracle_fixture_hash", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fixture_sha256


fixture_sha256 = _load_fixture_hash()

MODES = {
    "app": (DATA / "sly_project", DATA / "configs" / "app.yaml"),
    "app16": (DATA / "sly_many_classes", DATA / "configs" / "app16.yaml"),
    "dtl": (DATA / "sly_project", DATA / "configs" / "dtl_save_masks.json"),
}
MACHINE_COLOR_FILE = "obj_class_to_machine_color.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def golden_pngs(mode: str) -> list[str]:
    """Relative POSIX paths of a mode's golden PNGs (same paths as under OUTPUT/supervisely)."""
    root = GOLDEN / mode
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


GOLDEN_CASES = [(mode, rel) for mode in MODES for rel in golden_pngs(mode)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Run `maskjob export` once per mode (in-process, --workers 0) and cache the result.

    The fixture project is copied first, so a faulty exporter cannot touch the repo.
    Returns a function mode -> (exit code, OUTPUT/supervisely path).
    """
    cache: dict[str, tuple[int, Path]] = {}

    def get(mode: str) -> tuple[int, Path]:
        if mode not in cache:
            from jobs.cli import run

            project, config = MODES[mode]
            work = tmp_path_factory.mktemp(f"sly-golden-{mode}")
            src = work / "input"
            shutil.copytree(project, src)
            out = work / "out"
            rc = run(
                [
                    "export",
                    str(src),
                    str(out),
                    "--format",
                    "supervisely",
                    "--config",
                    str(config),
                    "--workers",
                    "0",
                ]
            )
            cache[mode] = (rc, out / "supervisely")
        return cache[mode]

    return get


def describe_mismatch(golden: np.ndarray, actual: np.ndarray) -> str | None:
    """None if identical; otherwise a message with the differing pixel count and bbox."""
    if actual.dtype != golden.dtype or actual.shape != golden.shape:
        return (
            f"array differs in type: golden {golden.dtype}{golden.shape}, "
            f"actual {actual.dtype}{actual.shape}"
        )
    diff = golden != actual
    if diff.ndim == 3:
        diff = diff.any(axis=2)
    count = int(diff.sum())
    if count == 0:
        return None
    ys, xs = np.nonzero(diff)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    samples = ", ".join(
        f"(x={x}, y={y}) golden={golden[y, x].tolist()} actual={actual[y, x].tolist()}"
        for y, x in list(zip(ys.tolist(), xs.tolist(), strict=True))[:5]
    )
    return (
        f"{count} of {diff.size} pixels differ, bbox x0,y0,x1,y1={bbox} "
        f"(channels are BGR as decoded by cv2); first: {samples}"
    )


@pytest.mark.parametrize("mode", sorted(MODES))
def test_export_exits_zero(exported, mode):
    """Pins that every fixture item exports without error (exit code 0) for each mode,
    including odd file names, the nested dataset, an image without objects, shapes that the
    SDK crops or drops at load time, all bitmap encodings and 300 classes."""
    rc, out = exported(mode)
    assert rc == 0, f"maskjob export returned {rc} for mode {mode}"
    assert out.is_dir(), f"no {out}"


@pytest.mark.parametrize(("mode", "rel"), GOLDEN_CASES, ids=[f"{m}:{r}" for m, r in GOLDEN_CASES])
def test_mask_pixels_match_sdk_golden(exported, mode, rel):
    """Pins pixel-for-pixel parity of one output PNG with the SDK-rendered golden: same dtype
    (uint8, or uint16 for >255 classes), same shape (grayscale vs RGB, side-by-side widths) and
    the same value at every pixel. This covers the SDK's rasterisation (OpenCV primitives,
    floored float coordinates, load-time crop), the app's area-descending machine order, its
    cumulative human blend, semantic/instance masks, and the DTL colour/human masks."""
    _, out = exported(mode)
    golden_path = GOLDEN / mode / rel
    actual_path = out / rel
    assert actual_path.is_file(), f"missing output {actual_path.relative_to(out.parent)}"
    with actual_path.open("rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE, f"{rel} is not a PNG file"
    golden = cv2.imread(str(golden_path), cv2.IMREAD_UNCHANGED)
    actual = cv2.imread(str(actual_path), cv2.IMREAD_UNCHANGED)
    assert golden is not None, f"unreadable golden {golden_path}"
    assert actual is not None, f"unreadable output {actual_path}"
    problem = describe_mismatch(golden, actual)
    if problem is not None:
        pytest.fail(f"{mode}:{rel}: {problem}", pytrace=False)


@pytest.mark.parametrize("mode", ["app", "app16"])
def test_machine_color_table_matches_golden(exported, mode):
    """Pins obj_class_to_machine_color.json: every meta.json class, in meta order, mapped to
    [i, i, i] with i from 1 (compared as parsed JSON, key order included)."""
    _, out = exported(mode)
    path = out / MACHINE_COLOR_FILE
    assert path.is_file(), f"missing {MACHINE_COLOR_FILE}"
    golden = json.loads((GOLDEN / mode / MACHINE_COLOR_FILE).read_text(encoding="utf-8"))
    actual = json.loads(path.read_text(encoding="utf-8"))
    assert actual == golden
    assert list(actual) == list(golden), "class order differs from meta.json order"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_mask_file_set_matches_golden(exported, mode):
    """Pins the set of mask files: no missing and no extra PNG under any masks_* folder.
    Catches instance naming (<class>.png, <class>_01.png, ... in annotation order, counting
    the extra labels made by load-time crop splits), no masks_instances/<stem>/ folder for an
    image without labels, stems that keep inner dots (a.b.c.jpeg -> a.b.c.png), and nested
    datasets mirrored as <parent>/datasets/<child>/."""
    _, out = exported(mode)
    expected = set(golden_pngs(mode))
    actual = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and any(part.startswith("masks_") for part in p.relative_to(out).parts)
    }
    missing, extra = sorted(expected - actual), sorted(actual - expected)
    if missing or extra:
        pytest.fail(
            f"{len(missing)} missing: {missing[:20]}; {len(extra)} extra: {extra[:20]}",
            pytrace=False,
        )
    dirs = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_dir()}
    golden_dirs = {
        p.relative_to(GOLDEN / mode).as_posix() for p in (GOLDEN / mode).rglob("*") if p.is_dir()
    }
    stray = sorted(d for d in dirs - golden_dirs if "/masks_instances/" in f"/{d}")
    assert not stray, (
        f"instance folders without a golden (e.g. for an image with no labels): {stray}"
    )


def test_goldens_present_for_every_mode():
    """Pins that the golden set itself is complete (guards against an empty or partial
    tests/golden/supervisely after a bad regeneration)."""
    for mode in MODES:
        assert golden_pngs(mode), f"no goldens for mode {mode}"
    assert (GOLDEN / "app" / MACHINE_COLOR_FILE).is_file()
    assert (GOLDEN / "app16" / MACHINE_COLOR_FILE).is_file()


def test_fixture_unchanged_since_goldens_were_made():
    """Pins that tests/data/sly_project, sly_many_classes and configs are byte-identical to the
    inputs the goldens were rendered from (hash in ORACLE.json). If you change the fixture or a
    config, rerun tests/oracles/run_supervisely_oracle.sh and commit the new goldens."""
    oracle = json.loads((GOLDEN / "ORACLE.json").read_text(encoding="utf-8"))
    assert oracle["supervisely"] == "6.74.51"
    assert fixture_sha256(REPO) == oracle["fixture_sha256"], (
        "fixture changed since the goldens were made: run tests/oracles/run_supervisely_oracle.sh"
    )
