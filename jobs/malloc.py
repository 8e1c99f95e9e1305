"""glibc malloc thresholds for the processes that export items.

An item's arrays (index maps, run tables, PNG buffers) are a few hundred KB to a few MB and
short-lived. With glibc's defaults - or Dask's MALLOC_TRIM_THRESHOLD_=65536 - each one becomes a
fresh mmap (or a heap trimmed and grown again), so the process spends its time in page faults:
on a dense CVAT item the run decoding took 4x longer (BENCHMARKS.md). `MALLOC_ENV` lets glibc
keep and reuse those pages:

- Dask workers get it through their environment (jobs/api.py, `WORKER_ENV`);
- an in-process run (`--workers 0`, the partitions in the driver) calls `apply_in_process()`,
  which sets the same thresholds with `mallopt` (glibc reads the variables only at start).
  A threshold the user set in the environment is left alone; elsewhere than glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": 268435456, "MALLOC_MMAP_THRESHOLD_": 33554432}
_MALLOPT_PARAM = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # <malloc.h>


def apply_in_process() -> bool:
    """Set `MALLOC_ENV` in this process (see module docstring); True if glibc took them."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = True
    for key, value in MALLOC_ENV.items():
        if os.environ.get(key) is None:
            ok = mallopt(_MALLOPT_PARAM[key], value) == 1 and ok
    return ok
