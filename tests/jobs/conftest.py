"""Fixtures of the job-level tests: a moto S3 server of the module's own on loopback, with the
AWS environment pointing at it and every S3 filesystem cache dropped around each test (a cached
S3FileSystem or Root would hide a change of credentials or endpoint)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import MotoServer, new_fs, s3_env

UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
         "AWS_REGION", "FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3", "DASK_SCHEDULER_ADDRESS")


def drop_fs_caches() -> None:
    import s3fs

    from jobs import storage

    s3fs.S3FileSystem.clear_instance_cache()
    storage._FS_CACHE.clear()


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the module's moto server; AWS_* variables point at it (and so do the
    subprocesses started by the test); no IMDS lookups."""
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_env(moto_server.endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    drop_fs_caches()
    name = f"mj-{uuid.uuid4().hex[:10]}"
    new_fs().mkdir(name)
    try:
        yield name
    finally:
        drop_fs_caches()
