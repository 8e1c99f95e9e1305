"""The Python API (`from jobs import export`): the same job as the CLI, returning its summary;
a given Client is used as is and never closed; the root logger is never configured; settings
and storage options are plain dicts; problems before work raise PreflightError (exit code 2),
a run that cannot finish raises RunFailed (3)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import ExportResult, PreflightError, RunFailed, export
from tests.conftest import rect

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_items(project):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "bad.png", [rect("zebra", 1, 1, 5, 5)])
    return p


def test_export_returns_the_summary_exit_code_and_manifest_url(two_items, tmp_path):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = tmp_path / "out"
    result = export(str(two_items.root), str(out), formats=["supervisely", "cvat"],
                    settings={"supervisely.thickness": 3, "partition_size": 1}, workers=0)
    assert isinstance(result, ExportResult)
    s = result.summary
    assert (s["items"], s["ok"], s["failed"], s["unchanged"]) == (2, 1, 1, 0)
    assert s["outputs"] > 0 and s["failures"][0]["item"] == "bad.png"
    assert result.exit_code == 1
    assert result.manifest_url == f"file://{out}/manifest.json"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["supervisely"]["thickness"] == 3
    assert manifest["config"]["partition_size"] == 1 and manifest["partitions"] == 2
    assert root.handlers == handlers and root.level == level  # the root logger is the app's

    again = export(str(two_items.root), str(out), formats=["supervisely", "cvat"],
                   settings={"supervisely.thickness": 3, "partition_size": 1}, workers=0,
                   incremental=True, max_failed=1)
    assert again.summary["unchanged"] == 1 and again.exit_code == 0  # 1 failure allowed


def test_problems_before_work_raise_preflight_error(two_items, tmp_path):
    with pytest.raises(PreflightError) as e:
        export(str(two_items.root), str(tmp_path / "o"), settings={"partition_size": "x"},
               workers=0)
    assert e.value.exit_code == 2 and "partition_size" in str(e.value)
    with pytest.raises(PreflightError, match="max-failed"):
        export(str(two_items.root), str(tmp_path / "o"), max_failed="lots", workers=0)
    with pytest.raises(PreflightError, match="inside the input"):
        export(str(two_items.root), str(two_items.root / "out"), workers=0)
    assert not (tmp_path / "o").exists() and not (two_items.root / "out").exists()


def test_a_run_that_cannot_finish_raises_run_failed_and_resumes(project, tmp_path):
    p = project()
    for i in range(4):
        p.add("ds", f"i{i}.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"

    def sabotage(_n: int) -> None:  # after the first partition: its commit folder is gone
        if (out / "_manifest").is_dir():
            shutil.move(out / "_manifest", tmp_path / "saved")
            (out / "_manifest").write_text("in the way")

    with pytest.raises(RunFailed) as e:
        export(str(p.root), str(out), settings={"partition_size": 1}, workers=0,
               progress=sabotage)
    assert e.value.exit_code == 3 and "resume" in str(e.value)
    (out / "_manifest").unlink()
    shutil.move(tmp_path / "saved", out / "_manifest")
    result = export(str(p.root), str(out), settings={"partition_size": 1}, workers=0)
    assert result.exit_code == 0 and result.resumed == 1 and result.summary["ok"] == 4


@pytest.mark.cluster
def test_a_given_client_is_used_as_is_and_left_open(two_items, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        result = export(str(two_items.root), str(tmp_path / "out"), client=client)
        assert result.exit_code == 1 and result.summary["ok"] == 1
        assert client.status == "running"
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3  # still usable


@pytest.mark.s3
def test_storage_options_are_a_dict(two_items, s3_bucket, moto_server, monkeypatch):
    from tests.e2e.helpers import new_fs
    from tests.jobs.conftest import drop_fs_caches

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # the endpoint comes from the dict only
    drop_fs_caches()
    result = export(str(two_items.root), f"s3://{s3_bucket}/out", workers=0,
                    storage_options={"endpoint_url": moto_server.endpoint})
    assert result.summary["ok"] == 1
    assert result.manifest_url == f"s3://{s3_bucket}/out/manifest.json"
    assert new_fs(endpoint_url=moto_server.endpoint).exists(f"{s3_bucket}/out/manifest.json")


def test_importing_jobs_is_cheap_and_exports_the_api():
    code = ("import sys, jobs; assert 'distributed' not in sys.modules; "
            "from jobs import export, ExportResult; print(export.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "jobs.api"
