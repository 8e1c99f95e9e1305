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


# --- conventions (issue 11 part 6) -------------------------------------------------------------

def test_version_and_formats_in_help(capsys):
    from maskcore import __version__
    from maskcore.formats import FORMATS, INPUT_FORMATS

    assert run(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    for argv in (["--help"], ["export", "--help"], ["validate", "--help"]):
        assert run(argv) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert all(f in text for f in FORMATS) and all(f in text for f in INPUT_FORMATS), argv
        assert "Exit codes" in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_is_accepted_before_and_after_the_subcommand(tmp_path, capsys, where):
    argv = ["validate", str(tmp_path / "missing.tar")]
    argv = ["-v", *argv] if where == "before" else [*argv, "-v"]
    assert run(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_log_lines_keep_their_logger_name(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    code = ("import logging, sys; from jobs import cli; cli._setup_logging(); "
            "logging.getLogger('maskjob').info('from maskjob'); "
            "logging.getLogger('distributed.worker').warning('from dask s3://u:LEAK@b'); "
            "logging.getLogger('distributed.worker').info('hidden')")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(root)})
    lines = out.stderr.splitlines()
    assert any(" maskjob INFO from maskjob" in line for line in lines), out.stderr
    assert any(" distributed.worker WARNING from dask s3://***@b" in line for line in lines)
    assert "hidden" not in out.stderr and "LEAK" not in out.stderr


def test_validate_is_a_dry_run_with_exports_exit_codes(project, tmp_path, caplog):
    p = project()
    p.add("ds", "ok.png", [rect("car", 1, 1, 4, 4)])
    p.add("ds", "noimage.png", [rect("car", 1, 1, 4, 4)], image=False)
    p.add("ds", "noann.png", ann=False)
    assert run(["validate", str(p.root)]) == 1
    assert "ds/noimage.png" in caplog.text and "ds/noann.png" in caplog.text
    assert "ds/ok.png" not in caplog.text
    out = tmp_path / "out"
    assert run(["validate", str(p.root), str(out)]) == 1  # OUTPUT probed, nothing left
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(["validate", str(p.root), str(out)]) == 2  # export would refuse it
    assert run(["validate", str(p.root), str(p.root / "masks")]) == 2
    assert run(["validate", str(p.root), "--set", "partition_size=x"]) == 2
    assert sorted(x.name for x in out.iterdir()) == ["notes.txt"]


@pytest.mark.cluster
def test_scheduler_file_and_a_loopback_dashboard(project, tmp_path, caplog):
    from distributed import Client, LocalCluster

    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 4, 4)])
    assert run(["export", str(p.root), str(tmp_path / "local"), "--workers", "1"]) == 0
    assert "dashboard: http://127.0.0.1:" in caplog.text
    sched = tmp_path / "scheduler.json"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None,
                      scheduler_kwargs={"scheduler_file": str(sched)}) as cluster, \
            Client(cluster) as client:
        assert run(["export", str(p.root), str(tmp_path / "out"), "--scheduler-file",
                    str(sched)]) == 0
        assert client.status == "running"
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["summary"]["ok"] == 1
