"""S3 in, S3 out: the real CLI against a moto server in its own process, on a loopback Dask
cluster (separate scheduler and worker processes) and on an embedded LocalCluster; `verify` on
S3; credentials kept out of every output."""

from __future__ import annotations

import uuid

import pytest

from jobs.cli import run

from .helpers import (
    check_complete_export,
    demo_config,
    demo_project,
    list_keys,
    project_items,
    read_manifest,
    upload_folder,
)

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]


@pytest.fixture
def s3_demo(s3, bucket, tmp_path):
    """The demo project uploaded to s3://in-*/proj, and an empty output bucket."""
    project = demo_project(tmp_path)
    src, dst = f"s3://{bucket('in')}/proj", f"s3://{bucket('out')}/run"
    upload_folder(s3, project, src)
    return project, src, dst


@pytest.mark.cluster
def test_s3_to_s3_on_a_loopback_cluster(s3, s3_demo, cluster):
    project, src, dst = s3_demo
    assert run(["export", src, dst, "--config", demo_config(project),
                "--scheduler", cluster.address]) == 0
    summary, _lines = check_complete_export(s3, dst, project_items(project))
    assert summary["output"]["url"] == dst and summary["partitions_resumed"] == 0
    assert run(["verify", dst]) == 0


@pytest.mark.cluster
def test_s3_to_s3_on_an_embedded_local_cluster(s3, s3_demo):
    project, src, dst = s3_demo
    assert run(["export", src, dst, "--config", demo_config(project), "--workers", "2"]) == 0
    check_complete_export(s3, dst, project_items(project))
    assert run(["verify", dst]) == 0


def test_verify_on_s3_names_a_deleted_and_an_altered_object(s3, s3_demo, caplog):
    project, src, dst = s3_demo
    assert run(["export", src, dst, "--config", demo_config(project), "--workers", "0"]) == 0
    assert run(["verify", dst]) == 0
    base = dst.removeprefix("s3://")
    _, lines = read_manifest(s3, dst)
    outputs = [o["key"] for e in lines for o in e["outputs"]]
    deleted = next(k for k in outputs if "/masks_machine/" in k)
    altered = next(k for k in outputs if "/masks_human/" in k)
    s3.rm(f"{base}/{deleted}")
    data = bytearray(s3.cat_file(f"{base}/{altered}"))
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    s3.pipe_file(f"{base}/{altered}", bytes(data))
    caplog.clear()
    assert run(["verify", dst]) == 1
    assert f"missing: {deleted}" in caplog.text
    assert f"checksum differs: {altered}" in caplog.text
    assert caplog.text.count("missing:") == 1 and caplog.text.count("differs:") == 1


def test_credentials_never_reach_the_outputs_or_the_log(s3, s3_demo, monkeypatch, caplog,
                                                         capfd):
    """Credentials given every way the CLI takes them (environment, --storage-option key/secret,
    nested client_kwargs) appear in no output object and in no log line."""
    project, src, dst = s3_demo
    env_secret, opt_secret, token = (f"{k}-{uuid.uuid4().hex}" for k in ("ENV", "OPT", "TOK"))
    key_id = "AKIA" + uuid.uuid4().hex[:16].upper()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env_secret)
    assert run(["export", src, dst, "--config", demo_config(project), "--workers", "0",
                "--storage-option", f"key={key_id}", "--storage-option", f"secret={opt_secret}",
                "--storage-option", f"client_kwargs.aws_session_token={token}"]) == 0
    base = dst.removeprefix("s3://")
    summary_text = s3.cat_file(f"{base}/manifest.json").decode()
    for value in (env_secret, opt_secret, token, key_id):
        assert value not in summary_text
    for key in list_keys(s3, dst):
        data = s3.cat_file(f"{base}/{key}")
        for value in (env_secret, opt_secret, token, key_id):
            assert value.encode() not in data, f"a credential is written in {key}"
    printed = caplog.text + "".join(capfd.readouterr())
    for value in (env_secret, opt_secret, token, key_id):
        assert value not in printed
