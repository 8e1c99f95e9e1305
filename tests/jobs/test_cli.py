"""The other commands: `validate` reports bad items without exporting; `demo` builds the sample
project and exports it on a real LocalCluster; `--help` works."""

from __future__ import annotations

import json

import pytest

from jobs.cli import run
from tests.conftest import rect


def test_validate_reports_bad_items_and_writes_nothing(project, tmp_path, caplog):
    p = project()
    p.add("ds", "ok.png", [rect("car", 1, 1, 4, 4)])
    p.add("ds", "bad.png", [rect("zebra", 1, 1, 4, 4)])
    assert run(["validate", str(p.root)]) == 1
    assert "ds/bad.png" in caplog.text and "zebra" in caplog.text
    assert run(["validate", str(p.root), "--set", "supervisely.human_style=x"]) == 2


def test_help_lists_the_commands(capsys):
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in ("export", "validate", "verify", "demo"))


@pytest.mark.cluster
def test_demo_exports_every_mask_kind_on_a_local_cluster(tmp_path):
    out = tmp_path / "demo"
    assert run(["demo", str(out), "--workers", "2"]) == 0
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["summary"]["ok"] == 8 and summary["summary"]["failed"] == 0
    ds = out / "supervisely" / "street"
    for kind in ("masks_machine", "masks_human", "masks_semantic_rgb", "masks_instances"):
        assert any((ds / kind).iterdir()), kind
    assert run(["verify", str(out)]) == 0
