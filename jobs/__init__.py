"""maskjob's orchestration package. The Python API is exported lazily (importing `jobs` stays
cheap and pulls in no Dask): `from jobs import export, ExportResult`."""

from __future__ import annotations

from typing import Any

__all__ = ["ExportError", "ExportResult", "PreflightError", "RunFailed", "export"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")
