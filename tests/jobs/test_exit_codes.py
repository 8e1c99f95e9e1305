"""Exit codes, the scheduler-facing contract (SPEC 1, issue 9 part 6), with the bad input itself:

    0 ok (or failures within --max-failed)   1 finished, some items failed
    2 usage/config/input/credentials/endpoint/bucket, found BEFORE any work (no cluster started,
      nothing written)                      3 the job could not finish; rerunning resumes
    130 interrupted (SIGINT, SIGTERM): the cluster shuts down, no process left behind

S3 faults run against a real moto server on loopback; 3 and 130 on a real LocalCluster.
Each error is one line on stderr, without a traceback unless -v.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from jobs.cli import run
from tests.conftest import rect
from tests.e2e.helpers import die_with_parent, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("Error:")]


def assert_refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Exit 2, exactly one 'Error:' line naming `needles`, no traceback, no cluster."""
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in err and "dashboard" not in err, err
    return lines[0]


@pytest.fixture
def good(project):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", [rect("person", 2, 2, 6, 6)])
    return p


# --- 2: found before any work -----------------------------------------------------------------

@pytest.mark.parametrize(("sets", "key"), [
    (["partition_size=abc"], "partition_size"),
    (["limits=[1, 2]"], "limits"),
    (["supervisely.thickness=[1]"], "thickness"),
    (["supervisely=5"], "supervisely"),
    (["images_url=7"], "images_url"),
])
def test_a_config_value_of_the_wrong_type_is_exit_2(good, tmp_path, capsys, sets, key):
    out = tmp_path / "out"
    assert_refused(["export", str(good.root), str(out), "--workers", "2",
                    *[a for s in sets for a in ("--set", s)]], capsys, key)
    assert not out.exists()


def test_output_being_a_file_is_exit_2(good, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    assert_refused(["export", str(good.root), str(out), "--workers", "2"], capsys, "a file")
    assert out.read_text() == "not a folder"


def test_a_corrupt_archive_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "project.tar"
    bad.write_bytes(b"\x00garbage, not a tar archive" * 40)
    assert_refused(["export", str(bad), str(tmp_path / "out"), "--workers", "2"], capsys,
                   "project.tar")


def test_a_missing_input_and_bad_usage_are_exit_2(tmp_path, capsys):
    assert_refused(["export", str(tmp_path / "nothing"), str(tmp_path / "o")], capsys,
                   "nothing")
    assert_refused(["export", str(tmp_path)], capsys, "OUTPUT")
    assert_refused(["export", "a", "b", "--no-such-flag"], capsys, "--no-such-flag")
    assert_refused(["export", "a", "b", "--max-failed", "ten"], capsys, "max-failed")


def test_output_with_foreign_files_is_refused_unless_overwrite(good, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_bytes(b"precious")
    assert_refused(["export", str(good.root), str(out), "--workers", "0"], capsys,
                   "thesis.docx", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]
    assert run(["export", str(good.root), str(out), "--workers", "0", "--overwrite"]) == 0
    assert (out / "thesis.docx").read_bytes() == b"precious"
    # an OUTPUT maskjob wrote (a manifest) is reused without --overwrite: reruns, --incremental
    assert run(["export", str(good.root), str(out), "--workers", "0"]) == 0
    assert run(["export", str(good.root), str(out), "--workers", "0", "--incremental"]) == 0


def test_output_inside_or_equal_to_input_is_refused_for_every_input_format(good, tmp_path,
                                                                        capsys):
    for out in (good.root, good.root / "masks", good.root / "ds" / "x"):
        assert_refused(["export", str(good.root), str(out), "--workers", "0"], capsys,
                       "inside the input")
    assert not (good.root / "masks").exists() and not (good.root / "ds" / "x").exists()
    # normalized paths: a trailing slash, `..` and file:// name the same folder
    for out in (f"{good.root}/", f"{good.root}/ds/../masks", f"file://{good.root}/m"):
        assert_refused(["export", str(good.root), out, "--workers", "0", "--overwrite"],
                       capsys, "inside the input")
    # a .tar project: OUTPUT "inside" the archive file
    tar = tmp_path / "p.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(good.root, arcname="")
    assert_refused(["export", str(tar), str(tar / "out"), "--workers", "0"], capsys,
                   "inside the input")
    # COCO: inside the folder holding the JSON, and inside the images folder it resolves
    coco = ROOT / "tests" / "data" / "coco_small"
    local = tmp_path / "coco"
    shutil.copytree(coco, local)
    for out in (local / "out", local / "images" / "out"):
        assert_refused(["export", str(local), str(out), "--workers", "0"], capsys,
                       "inside the input")


# --- 2 on S3 (moto): credentials, endpoint, bucket, storage options ---------------------------

@pytest.mark.s3
def test_s3_bucket_credentials_endpoint_and_option_errors_are_exit_2(good, s3_bucket, capsys,
                                                                     monkeypatch, tmp_path):
    from tests.jobs.conftest import drop_fs_caches

    src = str(good.root)
    line = assert_refused(["export", src, "s3://no-such-bucket-mj/out", "--workers", "2"],
                          capsys, "no-such-bucket-mj", "bucket does not exist")
    assert "OUTPUT" in line
    assert_refused(["export", "s3://no-such-bucket-mj/in", str(tmp_path / "o"), "--workers",
                    "2"], capsys, "no-such-bucket-mj")
    assert_refused(["export", src, f"s3://{s3_bucket}/out", "--workers", "2",
                    "--storage-option", "endpoint_ur=http://127.0.0.1:1"], capsys,
                   "TypeError", "endpoint_ur")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    drop_fs_caches()
    assert_refused(["export", src, f"s3://{s3_bucket}/out", "--workers", "2",
                    "--storage-option", "endpoint_url=http://127.0.0.1:9"], capsys,
                   "EndpointConnectionError", "127.0.0.1:9")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    drop_fs_caches()
    assert_refused(["export", src, f"s3://{s3_bucket}/out", "--workers", "2"], capsys,
                   "NoCredentialsError")


@pytest.mark.s3
def test_a_good_s3_output_passes_the_probe_and_leaves_no_probe_behind(good, s3_bucket):
    from tests.e2e.helpers import new_fs

    assert run(["export", str(good.root), f"s3://{s3_bucket}/out", "--workers", "0"]) == 0
    keys = new_fs().find(f"{s3_bucket}/out")
    assert f"{s3_bucket}/out/manifest.json" in keys
    assert not [k for k in keys if ".probe-" in k]


# --- 0 / 1 and --max-failed ---------------------------------------------------------------------

@pytest.mark.parametrize(("max_failed", "code"), [
    (None, 1), ("0", 1), ("1", 0), ("2", 0), ("25%", 1), ("50%", 0), ("100%", 0)])
def test_max_failed_turns_a_few_failures_into_exit_0(project, tmp_path, caplog, max_failed,
                                                     code):
    p = project()
    p.add("ds", "ok.png", [rect("car", 1, 1, 4, 4)])
    p.add("ds", "bad.png", [rect("zebra", 1, 1, 4, 4)])  # unknown class: fails alone
    extra = ["--max-failed", max_failed] if max_failed else []
    assert run(["export", str(p.root), str(tmp_path / "o"), "--workers", "0", *extra]) == code
    assert "ds/bad.png" in caplog.text  # still logged, and in the manifest, whatever the code
    assert '"status": "failed"' in (tmp_path / "o" / "manifest.jsonl").read_text()


def test_a_traceback_only_with_verbose(tmp_path, capsys):
    argv = ["export", str(tmp_path / "missing.tar"), str(tmp_path / "o")]
    assert run(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert run([*argv, "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and len(error_lines(err)) == 1


# --- 3: the job could not finish; rerunning resumes (real LocalCluster) ------------------------

def _break_manifest_dir_when_a_part_lands(out: Path, stop: threading.Event) -> None:
    """Once the first partition committed, `_manifest/` becomes a file: every later commit
    fails (a storage fault that Dask's retries cannot fix)."""
    mdir = out / "_manifest"
    while not stop.is_set():
        if mdir.is_dir() and any(mdir.glob("part-*.jsonl")):
            shutil.move(mdir, out / "_manifest.saved")
            mdir.write_text("in the way")
            return
        time.sleep(0.005)


@pytest.mark.cluster
def test_a_storage_failure_after_retries_is_exit_3_and_a_rerun_resumes(project, tmp_path,
                                                                       capsys, caplog):
    p = project()
    for i in range(12):
        p.add("ds", f"i{i:02d}.png", [rect("car", 1, 1, 4, 4)])
    out = tmp_path / "out"
    argv = ["export", str(p.root), str(out), "--workers", "1", "--set", "partition_size=1",
            "--set", "max_in_flight=1"]
    stop = threading.Event()
    watcher = threading.Thread(target=_break_manifest_dir_when_a_part_lands, args=(out, stop))
    watcher.start()
    try:
        capsys.readouterr()
        assert run(argv) == 3
    finally:
        stop.set()
        watcher.join(10)
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err, err
    assert "could not finish" in error_lines(err)[0] and "resume" in error_lines(err)[0]
    assert not (out / "manifest.json").exists()
    (out / "_manifest").unlink()
    shutil.move(out / "_manifest.saved", out / "_manifest")
    caplog.clear()
    assert run(["export", str(p.root), str(out), "--workers", "0", "--set", "partition_size=1",
                "--set", "max_in_flight=1"]) == 0
    assert "partitions resumed" in caplog.text and "(0 partitions resumed)" not in caplog.text
    assert run(["verify", str(out)]) == 0


# --- 130: interrupted ---------------------------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_is_exit_130_and_leaves_no_process(project, tmp_path, sig):
    p = project()
    for i in range(300):
        p.add("ds", f"i{i:03d}.png", [rect("car", 1, 1, 4, 4)], w=16, h=16, image=False)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "export", str(p.root), str(out), "--workers", "1",
         "--set", "partition_size=1", "--set", "max_in_flight=1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_for(lambda: any((out / "_manifest").glob("part-*.jsonl"))
                 if (out / "_manifest").is_dir() else proc.poll() is not None, 90,
                 "a first partition")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "interrupted" in err, err
        assert not (out / "manifest.json").exists()
        # the whole process group (LocalCluster nannies and workers) is gone
        def gone() -> bool:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return True
            return False
        wait_for(gone, 30, "every process of the job to exit", interval=0.2)
    finally:
        stop_process(proc, grace=5)
