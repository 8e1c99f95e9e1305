"""The Python API: `from jobs import export` runs the same job as `maskjob export`.

    result = export("s3://bucket/project", "s3://bucket/masks", formats=["supervisely", "zarr"],
                    storage_options={"endpoint_url": "http://127.0.0.1:9000"}, max_failed="1%")
    result.summary["failed"], result.exit_code, result.manifest_url

Contract:
- Everything export would refuse is checked BEFORE any cluster starts or any output is written
  (`prepare`): the config, the input (listed: credentials, endpoint, bucket, a corrupt archive,
  a storage option the filesystem does not take), OUTPUT (not a file, not inside INPUT or any
  root the job reads, not holding files maskjob did not write unless `overwrite=True`), and a
  probe object written and deleted under OUTPUT (credentials, endpoint, bucket, permissions).
  Any such problem raises `PreflightError` (exit code 2).
- Anything escaping the run afterwards (storage or cluster failure after Dask's retries) raises
  `RunFailed` (exit code 3): rerunning the same call resumes. KeyboardInterrupt propagates.
- Otherwise an `ExportResult`: `.summary` (items, ok, failed, unchanged, outputs, failures...),
  `.exit_code` (0, or 1 when more items failed than `max_failed` allows), `.manifest_url`.
- A given dask `client` is used as is and never closed; without one, `scheduler` /
  `scheduler_file` / DASK_SCHEDULER_ADDRESS connect to a running scheduler, else a LocalCluster
  of `workers` processes (dashboard on 127.0.0.1 unless `dashboard_address`; Dask's
  statistical profiler off and its periodic monitors slowed: `CLUSTER_CONFIG`) runs the job and
  is closed at the end; `workers=0` runs in this process.
- Where the job runs when nobody said (`choose_workers`): no client, scheduler, scheduler
  file, DASK_SCHEDULER_ADDRESS or `workers` given -> in this process when the job is small
  (starting a LocalCluster, ~3 s, would cost more than its parallelism saves: estimated work
  `items x formats x ITEM_SECONDS x (1 - 1/CPUs)` < `CLUSTER_START_SECONDS`, and at most
  `MAX_IN_PROCESS_ITEMS` items), else a LocalCluster of CPU-count workers. In process, a native
  crash on an item (segfault in a decoder) ends the run; the rerun of that unfinished job (a plan
  under OUTPUT, no manifest.json) always starts the cluster, whose crash isolation fails that
  item alone; an item that never ends (over `limits.max_item_seconds`) is only warned about in
  process - this process is never killed - and the rerun after an interrupt stops it there.
  `workers=N` always wins. The choice and its reason are logged.
- Never configures the root logger; logs to the "maskjob" logger. Error messages are redacted
  (jobs.secrets); the workers of the job get the same redaction on their log handlers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from maskcore.errors import ConfigError, InputError, MaskjobError

from . import config as jobconfig
from .listing import Listing, list_input
from .malloc import MALLOC_ENV
from .manifest_store import MANIFEST_DIR, MANIFEST_SUMMARY, PLAN_KEY
from .secrets import redact_text, worker_plugin
from .storage import Root

log = logging.getLogger("maskjob")

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_USAGE, EXIT_NOT_FINISHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
WORKER_ENV = {
    **MALLOC_ENV,  # jobs/malloc.py
    "OMP_NUM_THREADS": 1,
    "OPENBLAS_NUM_THREADS": 1,
    "MKL_NUM_THREADS": 1,
}
# Dask settings of the LocalCluster the job starts (`connect`). On top of the workers'
# environment and one allowed failure (see `connect`): the periodic background work of Dask's
# processes, which competes with the items for the machine's cores - at 2 workers on 2 CPUs
# ~0.14 cores idle, ~0.05 with these (BENCHMARKS.md "Scaling"). The statistical profiler
# (the dashboard's Profile page) samples every worker's task stack every 10 ms on the worker's
# event loop; the event-loop health check ticks every 20 ms in every process (500 ms is what
# Dask's own test clusters use; a loop blocked > `tick.limit` is still reported); the system
# monitor (the dashboard's CPU/memory plots) samples every 0.5 s. The memory monitor (the
# nanny's memory limit) is left at Dask's interval.
# What this process was started with, for WORKER_ENV's variables: Dask's nanny lets
# os.environ win over `pre-spawn-environ` - and writes its own values into os.environ when it
# spawns a worker, so after any other LocalCluster in this process os.environ holds Dask's
# defaults, not the user's choice (`_worker_environ`).
_STARTED_WITH = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
CLUSTER_CONFIG = {
    "distributed.nanny.pre-spawn-environ": WORKER_ENV,
    "distributed.scheduler.allowed-failures": 1,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
}


class ExportError(MaskjobError):
    """A job that could not run or finish; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_NOT_FINISHED

    def __init__(self, message: object) -> None:
        super().__init__(redact_text(message))


class PreflightError(ExportError):
    """Found before any work: usage, config, input, credentials, endpoint or bucket (exit 2)."""

    exit_code = EXIT_USAGE


class RunFailed(ExportError):
    """The job started and could not finish (exit 3); rerunning it resumes."""

    exit_code = EXIT_NOT_FINISHED


@dataclass(frozen=True)
class ExportResult:
    summary: dict[str, Any]  # items, ok, failed, unchanged, outputs, failures, class_pixels...
    exit_code: int
    manifest_url: str
    seconds: float = 0.0
    partitions: int = 0
    resumed: int = 0


@dataclass(frozen=True)
class Prepared:
    """What a job knows before any work: the spec, its roots and the input's listing."""

    spec: jobconfig.JobSpec
    source: Root
    listing: Listing
    dest: Root | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def describe(e: BaseException) -> str:
    """One line for an exception, redacted: its message, prefixed by its type when the type is
    not one of maskjob's own (whose messages are written to be read)."""
    text = " ".join(str(e).split()) or repr(e)
    if not isinstance(e, MaskjobError):
        text = f"{type(e).__name__}: {text}"
    return redact_text(text[:500])


def parse_max_failed(value: int | str | None) -> tuple[str, float] | None:
    """`N` (a count) or `P%` (a share of the items) -> ('count', N) / ('percent', P)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            p = float(text[:-1])
            if not 0 <= p <= 100:
                raise ValueError
            return "percent", p
        n = int(text)
        if n < 0:
            raise ValueError
        return "count", float(n)
    except ValueError:
        raise PreflightError(f"Expected --max-failed N (a count >= 0) or P% (0-100). "
                             f"Got {value!r} instead.") from None


def exit_code_for(failed: int, items: int, max_failed: tuple[str, float] | None) -> int:
    if not failed:
        return EXIT_OK
    if max_failed is None:
        return EXIT_ITEMS_FAILED
    kind, n = max_failed
    allowed = n if kind == "count" else n / 100 * items
    return EXIT_OK if failed <= allowed else EXIT_ITEMS_FAILED


def _sets(settings: Mapping[str, Any] | None, sets: Sequence[str]) -> list[str]:
    """Dotted settings {"supervisely.thickness": 3} as --set strings (JSON is YAML)."""
    out = list(sets)
    for k, v in (settings or {}).items():
        out.append(f"{k}={json.dumps(v)}")
    return out


def _location(root: Root) -> tuple[str, str]:
    """(filesystem protocol, normalized path) of a root; an archive root is its file; a local
    path with its links resolved (an OUTPUT that is a link into the input is inside it)."""
    import fsspec

    url = root.url
    if url.endswith((".tar", ".zip")) and "::" not in url:
        fs, path = fsspec.core.url_to_fs(url, **dict(root.storage_options))
    else:
        fs, path = root.fs_path
    if type(fs).__name__ == "LocalFileSystem":
        path = os.path.realpath(path)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    proto = {"s3a": "s3", "gcs": "gs"}.get(proto, proto)
    return proto, posixpath.normpath(path.rstrip("/") or "/")


def _inside(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    if inner[0] != outer[0]:
        return False
    a, b = inner[1], outer[1]
    return a == b or a.startswith(b.rstrip("/") + "/") or b == "/"


def check_output(dest: Root, inputs: Sequence[Root], *, overwrite: bool) -> None:
    """OUTPUT is a folder or prefix outside every input root, holding only maskjob's outputs
    (or nothing) unless `overwrite`. Raises PreflightError."""
    out = _location(dest)
    for root in inputs:
        if _inside(out, _location(root)):
            raise PreflightError(f"OUTPUT {dest.url} is inside the input {root.url}: the job "
                                 "would read its own outputs. Choose an OUTPUT outside INPUT.")
    fs, path = dest.fs_path
    if fs.isfile(path):
        raise PreflightError(f"Expected OUTPUT {dest.url} to be a folder or prefix. Got a file "
                             "instead.")
    try:
        names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    except (FileNotFoundError, NotADirectoryError):
        names = set()
    finally:
        fs.invalidate_cache()
    names.discard(posixpath.basename(path.rstrip("/")))  # some stores list the prefix itself
    if names and not names & {MANIFEST_DIR, MANIFEST_SUMMARY} and not overwrite:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        raise PreflightError(f"OUTPUT {dest.url} holds files maskjob did not write ({shown}); "
                             "pass --overwrite (overwrite=True) to write there anyway.")


def probe_output(dest: Root) -> None:
    """Write and delete one small object under OUTPUT: credentials, endpoint, bucket and
    permissions are proven before the cluster starts."""
    key = f"{MANIFEST_DIR}/.probe-{uuid.uuid4().hex[:12]}"
    created: list[str] = []
    if dest.is_local:  # folders the probe creates are removed again: a dry run leaves nothing
        d = os.path.dirname(dest.full(key))
        while d and not os.path.exists(d):
            created.append(d)
            d = os.path.dirname(d)
    try:
        dest.write(key, b"maskjob write probe\n")
        dest.delete([key])
    except Exception as e:
        raise PreflightError(f"cannot write under OUTPUT {dest.url}: {describe(e)}") from e
    for d in created:
        with contextlib.suppress(OSError):
            os.rmdir(d)


def prepare(input: str, output: str | None = None, *, formats: Sequence[str] | None = None,
            config: str | os.PathLike[str] | None = None,
            settings: Mapping[str, Any] | None = None, sets: Sequence[str] = (),
            input_format: str | None = None, storage_options: Mapping[str, Any] | None = None,
            overwrite: bool = False, probe: bool = True) -> Prepared:
    """Every check that needs no cluster (see the module doc); PreflightError on the first
    problem. With `output`, the OUTPUT checks and the write probe run too."""
    try:
        spec = jobconfig.load(os.fspath(config) if config is not None else None,
                              _sets(settings, sets), tuple(formats or ()), input_format)
    except ConfigError as e:
        raise PreflightError(str(e)) from e
    except Exception as e:  # a config value of a type the loader did not expect
        raise PreflightError(f"config: {describe(e)}") from e
    opts = dict(storage_options or {})
    source = Root(str(input), opts)
    dest = Root(str(output), opts) if output is not None else None
    try:
        listing = list_input(source, spec.input_format, spec.images_url, limits=spec.limits)
    except InputError as e:
        raise PreflightError(str(e)) from e
    except Exception as e:  # credentials, endpoint, bucket, archive, storage option typo
        raise PreflightError(f"cannot read INPUT {input}: {describe(e)}") from e
    try:
        spec.check_classes(listing.classes)
    except ConfigError as e:
        raise PreflightError(str(e)) from e
    if listing.meta_json:
        spec = dataclasses.replace(spec, options={
            name: opts.with_input_meta(listing.meta_json) for name, opts in spec.options.items()})
    if dest is not None:
        inputs = [source] + ([listing.image_root] if listing.image_root is not None else [])
        try:
            check_output(dest, inputs, overwrite=overwrite)
        except PreflightError:
            raise
        except Exception as e:
            raise PreflightError(f"cannot use OUTPUT {output}: {describe(e)}") from e
        if probe:
            probe_output(dest)
    return Prepared(spec, source, listing, dest)


# `choose_workers`: what a LocalCluster costs and what an item is estimated to cost
CLUSTER_START_SECONDS = 3.0  # LocalCluster of 2 workers, 2 cores (benchmarks/bench_small_jobs)
ITEM_SECONDS = 0.1  # one 1080p item, one format, one core (BENCHMARKS.md: 50-200 ms)
MAX_IN_PROCESS_ITEMS = 256  # beyond this, always a cluster (crash isolation, progress)


def choose_workers(*, items: int, formats: int, cpus: int, unfinished: bool
                   ) -> tuple[int | None, str]:
    """(0, why) to run a job in this process, (None, why) for a LocalCluster of CPU-count
    workers, when the caller named neither workers nor a scheduler (module doc)."""
    if unfinished:
        return None, ("on a LocalCluster: this resumes an unfinished run under OUTPUT, and "
                      "the cluster fails an item that crashed it alone")
    work = items * max(formats, 1) * ITEM_SECONDS
    saved = work * (1 - 1 / max(cpus, 1))
    if items <= MAX_IN_PROCESS_ITEMS and saved < CLUSTER_START_SECONDS:
        return 0, (f"in this process: {items} items x {formats} formats ~ {work:.1f} s of work; "
                   f"{cpus} workers would save ~{saved:.1f} s and take ~"
                   f"{CLUSTER_START_SECONDS:.0f} s to start (--workers N to choose)")
    return None, (f"on a LocalCluster of {cpus} workers: {items} items x {formats} formats ~ "
                  f"{work:.1f} s of work (--workers 0 runs in this process)")


def _auto_workers(job: Prepared) -> int | None:
    assert job.dest is not None
    try:
        unfinished = (job.dest.exists(PLAN_KEY)
                      and not job.dest.exists(MANIFEST_SUMMARY))
    except Exception:  # the probe wrote there: a store that fails now fails the run later
        unfinished = True
    workers, why = choose_workers(items=job.listing.count, formats=len(job.spec.formats),
                                  cpus=os.cpu_count() or 1, unfinished=unfinished)
    log.info("runs %s", why)
    return workers


def connect(*, scheduler: str | None = None, scheduler_file: str | None = None,
            workers: int | None = None, dashboard_address: str | None = None
            ) -> tuple[Any, Any]:
    """(client, cluster or None) owned by the caller; (None, None) for in-process runs."""
    address = scheduler or (None if scheduler_file else os.environ.get("DASK_SCHEDULER_ADDRESS"))
    if workers == 0 and not (address or scheduler_file):
        return None, None
    import dask
    from distributed import Client, LocalCluster

    if scheduler_file:
        return Client(scheduler_file=scheduler_file), None
    if address:
        return Client(address), None
    n = workers or os.cpu_count() or 1
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns every full-frame
    # array into a fresh mmap (40x the page faults, ~25% more CPU, BENCHMARKS.md); a worker
    # here holds one image at a time, so let glibc keep and reuse those pages.
    # allowed-failures 1: a partition whose worker dies twice is re-run item by item in child
    # processes (jobs/run.py), so one poison item costs two worker processes, not four.
    # The rest of CLUSTER_CONFIG: less background work in Dask's own processes.
    with dask.config.set(CLUSTER_CONFIG), _worker_environ():
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1",
                               dashboard_address=dashboard_address or "127.0.0.1:0",
                               silence_logs=logging.WARNING)
    return Client(cluster), cluster


@contextlib.contextmanager
def _worker_environ() -> Any:
    """os.environ, while the job's LocalCluster starts, holding WORKER_ENV (or what the
    process was started with, which wins as Dask means it to): a nanny reads its workers'
    environment from there, where an earlier cluster of this process may have left Dask's
    own values (MALLOC_TRIM_THRESHOLD_=65536). Restored afterwards."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update({k: _STARTED_WITH.get(k, str(v)) for k, v in WORKER_ENV.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_prepared(job: Prepared, *, client: Any | None = None, scheduler: str | None = None,
                 scheduler_file: str | None = None, workers: int | None = None,
                 dashboard_address: str | None = None, incremental: bool = False,
                 max_failed: int | str | None = None,
                 progress: Callable[[int], None] | None = None) -> ExportResult:
    """Run a prepared export (see `export`)."""
    from .job import export as run_graph

    assert job.dest is not None
    threshold = parse_max_failed(max_failed)
    spec, listing, dest = job.spec, job.listing, job.dest
    log.info("input %s: %d items in %d classes; output %s; formats %s",
             redact_text(job.source.url), listing.count, len(listing.classes),
             redact_text(dest.url), ",".join(spec.formats))
    owned_client = owned_cluster = None
    try:
        if client is None:
            if (workers is None and not scheduler and not scheduler_file
                    and not os.environ.get("DASK_SCHEDULER_ADDRESS")):
                workers = _auto_workers(job)
            try:
                owned_client, owned_cluster = connect(
                    scheduler=scheduler, scheduler_file=scheduler_file, workers=workers,
                    dashboard_address=dashboard_address)
            except (OSError, TimeoutError, ValueError) as e:
                raise RunFailed(f"cannot start or reach the Dask cluster: {describe(e)}") from e
            client = owned_client
        if client is not None:
            client.register_plugin(worker_plugin(), name="maskjob-redact-logs")
            log.info("dashboard: %s", client.dashboard_link)
        try:
            result = run_graph(source=listing.image_root or job.source, dest=dest,
                               refs=listing.iter_refs, count=listing.count,
                               classes=listing.classes, spec=spec,
                               reader=listing.reader, client=client, progress=progress,
                               incremental=incremental)
        except (KeyboardInterrupt, ExportError):
            raise
        except Exception as e:
            raise RunFailed(f"the job could not finish: {describe(e)}. Rerun the same "
                            "command to resume.") from e
    finally:
        if owned_client is not None:
            owned_client.close()
        if owned_cluster is not None:
            owned_cluster.close()
    s = result.summary.to_dict()
    code = exit_code_for(s["failed"], s["items"], threshold)
    if s["failed"] and code == EXIT_OK:
        log.warning("%d items failed, within --max-failed %s: exit code 0", s["failed"],
                    max_failed)
    return ExportResult(s, code, dest.uri(MANIFEST_SUMMARY), result.seconds, result.partitions,
                        result.skipped)


def export(input: str, output: str, *, formats: Sequence[str] | None = None,
           config: str | os.PathLike[str] | None = None,
           settings: Mapping[str, Any] | None = None,
           storage_options: Mapping[str, Any] | None = None, client: Any | None = None,
           workers: int | None = None, incremental: bool = False,
           max_failed: int | str | None = None, input_format: str | None = None,
           scheduler: str | None = None, scheduler_file: str | None = None,
           dashboard_address: str | None = None, overwrite: bool = False,
           sets: Sequence[str] = (), progress: Callable[[int], None] | None = None
           ) -> ExportResult:
    """Export `input` to masks under `output` (see the module doc for the contract).

    `config`: a YAML job file or a DTL save_masks JSON; `settings`: dotted overrides
    ({"supervisely.thickness": 3}, like --set); `max_failed`: N or "P%"."""
    parse_max_failed(max_failed)  # a usage error, before any work
    job = prepare(input, output, formats=formats, config=config, settings=settings, sets=sets,
                  input_format=input_format, storage_options=storage_options,
                  overwrite=overwrite)
    return run_prepared(job, client=client, scheduler=scheduler, scheduler_file=scheduler_file,
                        workers=workers, dashboard_address=dashboard_address,
                        incremental=incremental, max_failed=max_failed, progress=progress)
