"""The REAL Supervisely SDK opens maskjob's archive, and resizeHumanMasks is the app's rule.

maskjob exports tests/data/sly_project with the app's settings (tests/data/configs/app.yaml),
`archive: tar` split into 64 KiB pieces and `resize_human_masks: 50`; the pieces are
concatenated and extracted (as `cat project.tar.* | tar -x`), then
tests/oracles/supervisely_archive_oracle.py runs in the cached SDK venv
(~/.cache/maskjob/sly-6.74.51, made by tests/oracles/run_supervisely_oracle.sh): the SDK opens
the project and loads every item, and the app's resize of each SDK-made golden human mask
equals maskjob's resized mask, pixel for pixel. Skipped when the venv is absent."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from jobs.cli import run

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MASKJOB_ORACLE_CACHE", Path.home() / ".cache" / "maskjob"))
SDK_PYTHON = CACHE / "sly-6.74.51" / "bin" / "python"

pytestmark = pytest.mark.skipif(not SDK_PYTHON.exists(),
                                reason=f"no Supervisely SDK venv at {SDK_PYTHON.parent.parent}")


def test_sdk_opens_the_extracted_archive_and_resize_is_the_apps(tmp_path):
    out = tmp_path / "out"
    assert run(["export", str(REPO / "tests/data/sly_project"), str(out), "--workers", "0",
                "--config", str(REPO / "tests/data/configs/app.yaml"),
                "--set", "supervisely.archive=tar", "--set", "supervisely.archive_split=64KiB",
                "--set", "supervisely.resize_human_masks=50"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    pieces = [out / p["key"] for p in man["format_details"]["supervisely"]["archive"]["pieces"]]
    assert len(pieces) > 1
    extracted = tmp_path / "extracted"
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in pieces))) as t:
        t.extractall(extracted, filter="data")
    got = subprocess.run(
        [str(SDK_PYTHON), str(REPO / "tests/oracles/supervisely_archive_oracle.py"),
         str(extracted), str(REPO / "tests/golden/supervisely/app"), "50"],
        capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(got.stdout.strip().splitlines()[-1])
    assert sorted(result["datasets"]) == ["ds1", "ds1/child"]
    assert result["items"] == result["loaded"] == 8 and result["errors"] == []
    assert result["human_compared"] == 8 and result["human_mismatch"] == []
