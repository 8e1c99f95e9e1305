"""maskcore: the pure kernel of maskjob.

Annotation bytes in, numpy masks out, file bytes out. Nothing in this package imports dask or
fsspec or touches storage (a test enforces it); `jobs/` does the orchestration and I/O.
"""

__version__ = "0.1.0"
