"""The Python API (`from jobs import export`): the same job as the CLI, returning its summary;
a given Client is used as is and never closed; the root logger is never configured; settings
and storage options are plain dicts; problems before work raise PreflightError (exit code 2),
a run that cannot finish raises RunFailed (3)."""

from __future__ import annotations

import json
import logging
import os
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


@pytest.mark.cluster
def test_the_jobs_own_cluster_keeps_dask_background_work_low():
    """The LocalCluster `connect` starts: no statistical profiler on the workers, slower
    event-loop ticks and system monitor in every process, and one allowed failure
    (jobs.api.CLUSTER_CONFIG), read by the processes themselves."""
    from jobs.api import connect

    def probe(dask_worker=None, dask_scheduler=None):
        server = dask_worker or dask_scheduler
        pcs = server.periodic_callbacks
        return "profile" in pcs, pcs["tick"].callback_time, pcs["monitor"].callback_time

    client, cluster = connect(workers=1)
    try:
        (worker,) = client.run(probe).values()
        assert worker == (False, 500, 2000)
        assert client.run_on_scheduler(probe)[1:] == (500, 2000)
        assert client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.allowed_failures) == 1
    finally:
        client.close()
        cluster.close()


@pytest.mark.cluster
def test_the_jobs_own_workers_get_worker_env_after_another_cluster_in_the_process(monkeypatch):
    """Dask's nanny writes its `pre-spawn-environ` (MALLOC_TRIM_THRESHOLD_=65536) into this
    process's os.environ, where it would win over ours for every later cluster: a default
    LocalCluster first, then the job's own - whose workers still get WORKER_ENV, and the
    process's environment is as it was."""
    from distributed import Client, LocalCluster

    from jobs.api import WORKER_ENV, connect

    def env():
        return {k: os.environ.get(k) for k in WORKER_ENV}

    for k in WORKER_ENV:
        monkeypatch.delenv(k, raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as other, Client(other) as c:
        assert c.run(env).popitem()[1]["MALLOC_TRIM_THRESHOLD_"] == "65536"
    before = env()
    assert before["MALLOC_TRIM_THRESHOLD_"] == "65536"  # left behind by Dask's nanny
    client, cluster = connect(workers=1)
    try:
        (worker,) = client.run(env).values()
        assert worker == {k: str(v) for k, v in WORKER_ENV.items()}
        assert env() == before
    finally:
        client.close()
        cluster.close()


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


# --- where a job runs when nobody said (choose_workers) ----------------------------------------

@pytest.mark.parametrize(("items", "formats", "cpus", "unfinished", "where"), [
    (24, 1, 2, False, 0),  # a small job: ~2.4 s of work, a cluster saves ~1.2 s, costs ~3 s
    (59, 1, 2, False, 0),
    (60, 1, 2, False, None),  # saves ~3 s: worth starting
    (24, 4, 2, False, None),  # four formats: four times the work
    (200, 1, 1, False, 0),  # one CPU: a cluster saves nothing
    (257, 1, 1, False, None),  # but past MAX_IN_PROCESS_ITEMS a cluster isolates crashes
    (0, 1, 8, False, 0),
    (3, 1, 2, True, None),  # a rerun of an unfinished run: the cluster isolates a poison item
])
def test_small_jobs_run_in_process_unless_unfinished(items, formats, cpus, unfinished, where):
    from jobs.api import choose_workers

    workers, why = choose_workers(items=items, formats=formats, cpus=cpus, unfinished=unfinished)
    assert workers == where
    assert why.startswith("in this process" if where == 0 else "on a LocalCluster")
    assert ("resumes an unfinished run" in why) == unfinished


def test_a_small_job_without_workers_runs_in_process_and_says_why(two_items, tmp_path, caplog,
                                                                  monkeypatch):
    import jobs.api

    def no_cluster(**kwargs):
        assert kwargs["workers"] == 0, kwargs
        return None, None

    monkeypatch.setattr(jobs.api, "connect", no_cluster)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with caplog.at_level(logging.INFO, logger="maskjob"):
        result = export(str(two_items.root), str(tmp_path / "out"))
    assert result.summary["ok"] == 1
    assert "runs in this process: 2 items x 1 formats" in caplog.text


@pytest.mark.cluster
def test_a_native_crash_in_an_in_process_run_is_isolated_by_the_rerun(project, tmp_path):
    """The small job runs in process (no --workers): an item that segfaults ends that run; the
    rerun of the unfinished job starts a LocalCluster, which fails that item alone."""
    from jobs.tasks import CRASH_ENV, WORKER_DIED

    p = project()
    for k in range(3):
        p.add("ds", f"i{k}.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "jobs.cli", "export", str(p.root), str(out)]
    env = {**os.environ, CRASH_ENV: "i1.png", "PYTHONPATH": str(ROOT)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode != 0 and not (out / "manifest.json").exists()
    assert "runs in this process" in first.stderr
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1, second.stderr
    assert "runs on a LocalCluster: this resumes an unfinished run" in second.stderr
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {e["item"]: (e["status"], e["error"]) for e in lines} == {
        "i0.png": ("ok", None), "i1.png": ("failed", WORKER_DIED), "i2.png": ("ok", None)}
