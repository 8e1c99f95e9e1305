"""Fixtures for the end-to-end tests: a moto S3 server in its own process, the AWS environment
that points this process and every subprocess (Dask workers, CLI drivers) at it, unique buckets,
and a real loopback Dask cluster (separate `dask scheduler` / `dask worker` processes).

    .venv/bin/python -m pytest tests/e2e -q -x          # everything (~1.5 min on 2 cores)
    .venv/bin/python -m pytest tests/e2e -m "not cluster"  # S3 only, no Dask processes
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from .helpers import LoopbackCluster, MotoServer, cluster_idle, new_fs, s3_env, wait_for

# Variables that could point the job somewhere else than the test's moto and cluster.
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
         "AWS_REGION", "FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3", "DASK_SCHEDULER_ADDRESS",
         "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")


@pytest.fixture(scope="package")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A `moto_server` subprocess on 127.0.0.1 (port 0) and the AWS_* environment for it, set
    in os.environ so that in-process runs and every subprocess started later inherit it."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    mp = pytest.MonkeyPatch()
    try:
        server.start()
        for name in UNSET:
            mp.delenv(name, raising=False)
        for name, value in s3_env(server.endpoint).items():
            mp.setenv(name, value)
        yield server
    finally:
        mp.undo()
        server.stop()


@pytest.fixture(autouse=True)
def _clean_s3(moto: MotoServer) -> None:
    """Every test starts with an empty S3 (buckets are unique per test as well)."""
    moto.reset()


@pytest.fixture
def s3(moto: MotoServer):
    """A test-side S3FileSystem (no caches) talking to moto directly."""
    return new_fs()


@pytest.fixture
def bucket(s3) -> Callable[[str], str]:
    """new_bucket(prefix) -> the name of a fresh, unique, empty bucket."""
    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        s3.mkdir(name)
        return name
    return make


@pytest.fixture(scope="package")
def _shared_cluster(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[LoopbackCluster]:
    c = LoopbackCluster(tmp_path_factory.mktemp("cluster"), nworkers=2, env=dict(os.environ))
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
def cluster(_shared_cluster: LoopbackCluster) -> LoopbackCluster:
    """The loopback cluster (shared by the tests of this folder), with its 2 workers up and
    nothing running: a test that killed a worker leaves it to its nanny to restart, a test that
    killed a driver waits for the orphaned tasks to end."""
    _shared_cluster.wait_for_workers(2, timeout=45)
    wait_for(lambda: cluster_idle(_shared_cluster), 30, "an idle cluster", interval=0.2)
    return _shared_cluster
