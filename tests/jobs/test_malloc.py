"""The malloc thresholds of exporting processes (jobs/malloc.py): Dask workers get them in their
environment, in-process runs through mallopt."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from jobs import malloc
from jobs.api import WORKER_ENV


def test_workers_and_in_process_runs_share_one_policy():
    assert {k: WORKER_ENV[k] for k in malloc.MALLOC_ENV} == malloc.MALLOC_ENV


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are glibc's")
def test_in_process_thresholds_are_set_and_user_settings_kept():
    code = ("import jobs.malloc as m, sys; "
            "sys.stdout.write(str(m.apply_in_process()))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert got.stdout == "True"
    # a threshold the user set is not overridden (and not reported as a failure)
    env = {"MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_MMAP_THRESHOLD_": "131072",
           "PYTHONPATH": ":".join(sys.path)}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert got.stdout == "True"
