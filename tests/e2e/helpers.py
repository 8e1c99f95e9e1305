"""Processes and S3 helpers for the end-to-end tests: a moto S3 server, a loopback Dask cluster
(separate scheduler and worker processes), uploads, listings and manifests on S3.

Every wait is bounded; every process is started in its own session and torn down with SIGINT,
then SIGKILL of its whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent


def is_sidecar(key: str) -> bool:
    """Dataset-level files of a format tree (meta.json, obj_class_to_*.json), in no item's
    outputs."""
    _fmt, _, name = key.partition("/")
    return "/" not in name and (name == "meta.json" or (name.startswith("obj_class_to_")
                                                        and name.endswith(".json")))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
             ) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"Expected {what} within {timeout:.0f} s. Got nothing instead.")
        time.sleep(interval)


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # resolved here: the forked child must not load libraries or import


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the test process dies (Linux), so an interrupted or
    killed test run leaves no moto or dask process behind."""
    if _PRCTL is not None:
        _PRCTL(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGINT, then SIGKILL to the process group (it was started with start_new_session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers: children left in the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# -- moto ----------------------------------------------------------------------------------

class MotoServer:
    """moto's S3 in a subprocess on 127.0.0.1, port chosen by the OS (port 0): `moto_s3.py`
    beside this file (moto's own S3 app and request handler on werkzeug's threaded server, as
    `moto_server` runs them, without its per-request multi-service dispatch and access log:
    about twice the requests per CPU-second)."""

    def __init__(self, log_path: Path, preload: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        self.preload = preload  # BUCKET[/PREFIX]=DIR: objects there before it listens
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("moto_s3.py")), "-H", "127.0.0.1",
                "-p", "0", *(a for spec in self.preload for a in ("--preload", spec))]

    def start(self, timeout: float = 30) -> MotoServer:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.command(), stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=die_with_parent)

        def port() -> str | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_path.read_text()[-2000:]}")
            m = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log_path.read_text())
            return m.group(1) if m else None

        self.endpoint = f"http://127.0.0.1:{wait_for(port, timeout, 'moto_server to listen')}"
        wait_for(self._ready, timeout, "moto_server to answer")
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def counts(self, reset: bool = False) -> dict[str, int]:
        """S3 requests served so far by kind (LIST, GET, HEAD, PUT, POST, DELETE); `reset`:
        start counting again from zero."""
        req = urllib.request.Request(self.endpoint + "/_counts",
                                     method="POST" if reset else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()


def s3_env(endpoint: str, secret: str = "dummy") -> dict[str, str]:
    """The environment that points every AWS client (this process, subprocesses) at moto."""
    return {
        "AWS_ACCESS_KEY_ID": "dummy",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": "",
        "AWS_CONFIG_FILE": "",
        "BOTO_CONFIG": "/dev/null",
    }


def new_fs(**kwargs: Any) -> Any:
    """A fresh S3FileSystem (no instance cache, no listing cache) for test-side checks."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **kwargs)


def upload_folder(fs: Any, local: Path, url: str) -> int:
    """Copy every file under `local` to s3://bucket/prefix (created if needed)."""
    target = url.removeprefix("s3://").rstrip("/")
    bucket = target.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    objects = {f"{target}/{p.relative_to(local).as_posix()}": p.read_bytes()
               for p in sorted(local.rglob("*")) if p.is_file()}
    fs.pipe(objects)
    return len(objects)


def list_keys(fs: Any, url: str, prefix: str = "", detail: bool = False) -> Any:
    """Keys under s3://bucket/base[/prefix], relative to base (fresh listing, no cache)."""
    base = url.removeprefix("s3://").rstrip("/")
    top = f"{base}/{prefix}".rstrip("/")
    fs.invalidate_cache()
    try:
        found = fs.find(top, detail=True)
    except FileNotFoundError:
        found = {}
    rel = {p[len(base) + 1:]: info for p, info in found.items()}
    return rel if detail else sorted(rel)


def read_manifest(fs: Any, url: str) -> tuple[dict, list[dict]]:
    base = url.removeprefix("s3://").rstrip("/")
    summary = json.loads(fs.cat_file(f"{base}/manifest.json"))
    lines = [json.loads(x) for x in fs.cat_file(f"{base}/manifest.jsonl").decode().splitlines()
             if x.strip()]
    return summary, lines


# -- sample data ---------------------------------------------------------------------------

def demo_project(tmp: Path, copies: int = 0) -> Path:
    """The demo Supervisely project (8 images), plus `copies` renamed copies of each item."""
    from jobs.demo import make_demo_project

    project, _config = make_demo_project(str(tmp / "demo"))
    root = Path(project)
    for img in sorted(root.rglob("img/*")):
        ann_dir = img.parent.parent / "ann"
        for k in range(copies):
            name = f"copy{k:02d} {img.name}"
            shutil.copyfile(img, img.parent / name)
            shutil.copyfile(ann_dir / f"{img.name}.json", ann_dir / f"{name}.json")
    return root


def demo_config(project: Path) -> str:
    return str(project / "demo-job.yaml")


# -- a loopback Dask cluster ---------------------------------------------------------------

class LoopbackCluster:
    """`dask scheduler` + `dask worker --nworkers N --nthreads 1` as subprocesses on 127.0.0.1."""

    def __init__(self, workdir: Path, nworkers: int = 2, env: dict[str, str] | None = None
                 ) -> None:
        self.workdir = workdir
        self.nworkers = nworkers
        self.env = {**os.environ, **(env or {})}
        self.scheduler_file = workdir / "scheduler.json"
        self.scheduler: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.address = ""

    def _popen(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.workdir / log, "wb") as out:
            return subprocess.Popen([str(VENV_BIN / "dask"), *args], stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                                    start_new_session=True, preexec_fn=die_with_parent)

    def start(self, timeout: float = 45) -> LoopbackCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scheduler = self._popen(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
             "127.0.0.1:0", "--scheduler-file", str(self.scheduler_file)], "scheduler.log")

        def address() -> str | None:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError("dask scheduler exited:\n" + self.log("scheduler.log"))
            try:
                return json.loads(self.scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return None

        self.address = wait_for(address, timeout, "the dask scheduler file")
        self.worker = self._popen(
            ["worker", "--scheduler-file", str(self.scheduler_file), "--nworkers",
             str(self.nworkers), "--nthreads", "1", "--memory-limit", "2GiB", "--host",
             "127.0.0.1", "--local-directory", str(self.workdir / "workers")], "worker.log")
        self.wait_for_workers(self.nworkers, timeout)
        return self

    def client(self) -> Any:
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def workers(self) -> dict[str, dict]:
        with self.client() as c:
            return c.scheduler_info(n_workers=-1)["workers"]

    def wait_for_workers(self, n: int, timeout: float = 45) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=timeout)

    def log(self, name: str, tail: int | None = 4000) -> str:
        try:
            text = (self.workdir / name).read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:] if tail else text

    def stop(self) -> None:
        for proc in (self.worker, self.scheduler):
            if proc is not None:
                stop_process(proc, grace=5)
        self.worker = self.scheduler = None


def cluster_idle(cluster: LoopbackCluster) -> bool:
    """No task occupies a worker thread - including tasks the scheduler already forgot (a dead
    driver's), which keep running on their worker until they return."""
    with cluster.client() as c:
        running = c.run(lambda dask_worker: len(dask_worker.state.all_running_tasks))
        return not any(running.values()) and not any(c.processing().values())


# -- checks --------------------------------------------------------------------------------

def committed_parts(fs: Any, url: str) -> list[str]:
    """The manifest parts (`_manifest/part-NNNNN-TOKEN.jsonl`), not the records beside them."""
    return [k for k in list_keys(fs, url, "_manifest") if k.startswith("_manifest/part-")]


def project_items(root: Path) -> set[tuple[str, str]]:
    """(dataset, image name) of every image of a local Supervisely project."""
    return {(img.parent.parent.relative_to(root).as_posix(), img.name)
            for img in root.rglob("img/*") if img.is_file()}


def enable_versioning(fs: Any, bucket: str) -> None:
    fs.call_s3("put_bucket_versioning", Bucket=bucket,
               VersioningConfiguration={"Status": "Enabled"})


def versions(fs: Any, url: str) -> dict[str, list[str]]:
    """Every version id of every object under the URL, by key relative to it (oldest last)."""
    bucket, _, base = url.removeprefix("s3://").partition("/")
    prefix = base.rstrip("/") + "/"
    out: dict[str, list[str]] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = fs.call_s3("list_object_versions", **kwargs)
        for v in page.get("Versions", []):
            out.setdefault(v["Key"][len(prefix):], []).append(v["VersionId"])
        if not page.get("IsTruncated"):
            return out
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]


def check_complete_export(fs: Any, url: str, items: set[tuple[str, str]]
                          ) -> tuple[dict, list[dict]]:
    """The export at `url` completed, lists every item exactly once, every output it names
    exists with its recorded size, and nothing but those and the format's sidecars lies under
    the format trees (no duplicate, no half-written leftover of a retried partition)."""
    summary, lines = read_manifest(fs, url)
    seen = [(e["dataset"], e["item"]) for e in lines]
    assert len(seen) == len(set(seen)), "an item is listed twice in manifest.jsonl"
    assert set(seen) == items
    assert {e["status"] for e in lines} == {"ok"}, [e for e in lines if e["status"] != "ok"]
    assert summary["summary"]["items"] == len(items)
    listing = list_keys(fs, url, detail=True)
    outputs = {o["key"]: o for e in lines for o in e["outputs"]}
    assert sum(len(e["outputs"]) for e in lines) == len(outputs), "two items share an output"
    for key, out in outputs.items():
        assert key in listing, f"missing output {key}"
        assert listing[key]["size"] == out["size"], key
    trees = tuple(f"{fmt}/" for fmt in summary["formats"])
    for key in listing:  # format trees hold item outputs and sidecars, nothing else
        if key.startswith(trees) and not is_sidecar(key):
            assert key in outputs, f"stray object outside the manifest: {key}"
    return summary, lines
