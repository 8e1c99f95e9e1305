"""The `maskjob` command line (SPEC 1): export, validate, verify, demo.

Exit codes: 0 all items exported; 1 the job finished but some items failed (each is in the
manifest with its reason) or `verify` found a problem; 2 usage, config or input error found
before any work started. A tqdm progress bar on a terminal, plain log lines otherwise; the Dask
dashboard address is printed at start. `run(argv) -> int` is the in-process entry for tests.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from maskcore.errors import ConfigError, InputError, MaskjobError

from . import config as jobconfig
from .listing import Listing, list_input
from .storage import Root, parse_storage_options

log = logging.getLogger("maskjob")

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_USAGE = 0, 1, 2
WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": 268435456,
    "MALLOC_MMAP_THRESHOLD_": 33554432,
    "OMP_NUM_THREADS": 1,
    "OPENBLAS_NUM_THREADS": 1,
    "MKL_NUM_THREADS": 1,
}


class UsageFailure(click.ClickException):
    exit_code = EXIT_USAGE


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s maskjob %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("distributed", "bokeh", "tornado", "asyncio", "fsspec", "s3fs", "botocore",
                  "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _quiet_dask() -> None:
    """distributed configures its own loggers at INFO on import; keep the driver's log to
    maskjob's lines and warnings."""
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _roots(input_url: str, output_url: str | None, storage_options: Sequence[str]
           ) -> tuple[Root, Root | None]:
    try:
        opts = parse_storage_options(list(storage_options))
    except ValueError as e:
        raise UsageFailure(str(e)) from None
    return Root(input_url, opts), (Root(output_url, opts) if output_url else None)


def _prepare(spec: jobconfig.JobSpec, source: Root) -> Listing:
    """Read the input's metadata and list its items; config checks that need classes."""
    listing = list_input(source, spec.input_format, spec.images_url)
    spec.check_classes(listing.classes)
    return listing


def _client(scheduler: str | None, workers: int | None) -> tuple[Any, Any]:
    """(client, cluster or None); None, None for in-process runs (workers == 0)."""
    if workers == 0 and not scheduler:
        return None, None
    from distributed import Client, LocalCluster

    _quiet_dask()

    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address), None
    import dask

    n = workers or os.cpu_count() or 1
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which turns every full-frame
    # array into a fresh mmap (40x the page faults, ~25% more CPU, BENCHMARKS.md); a worker
    # here holds one image at a time, so let glibc keep and reuse those pages.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV,
                          "distributed.scheduler.allowed-failures": 1}):  # jobs/run.py
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.WARNING)
    return Client(cluster), cluster


def do_export(input_url: str, output_url: str, *, formats: Sequence[str], config: str | None,
              sets: Sequence[str], scheduler: str | None, workers: int | None,
              input_format: str | None, storage_options: Sequence[str],
              incremental: bool = False) -> int:
    from tqdm import tqdm

    from .job import export

    try:
        spec = jobconfig.load(config, sets, formats, input_format)
        source, dest = _roots(input_url, output_url, storage_options)
        assert dest is not None
        listing = _prepare(spec, source)
    except (ConfigError, InputError) as e:
        raise UsageFailure(str(e)) from None
    classes, refs = listing.classes, listing.refs
    if "supervisely" in spec.formats and listing.meta_json:
        options = dict(spec.options)
        options["supervisely"] = dataclasses.replace(options["supervisely"],
                                                     meta_json=listing.meta_json)
        spec = dataclasses.replace(spec, options=options)
    log.info("input %s: %d items in %d classes; output %s; formats %s", input_url, len(refs),
             len(classes), output_url, ",".join(spec.formats))
    client, cluster = _client(scheduler, workers)
    try:
        if client is not None:
            log.info("dashboard: %s", client.dashboard_link)
        bar = tqdm(total=len(refs), unit="img", disable=not sys.stderr.isatty(),
                   dynamic_ncols=True)
        state = {"done": 0, "logged": 0}

        def progress(n: int) -> None:
            bar.update(n)
            state["done"] += n
            if bar.disable and state["done"] - state["logged"] >= max(len(refs) // 10, 1):
                state["logged"] = state["done"]
                log.info("progress: %d/%d items", state["done"], len(refs))

        result = export(source=listing.image_root or source, dest=dest,
                        refs=lambda: iter(sorted(refs, key=lambda r: (r.dataset, r.name))
                                          if incremental else refs), count=len(refs),
                        classes=classes, spec=spec, reader=listing.reader, client=client,
                        progress=progress, incremental=incremental)
        bar.close()
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    s = result.summary.to_dict()
    log.info("done: %d items, %d ok, %d unchanged, %d failed, %d outputs in %.1fs "
             "(%d partitions resumed)", s["items"], s["ok"], s["unchanged"], s["failed"],
             s["outputs"], result.seconds, result.skipped)
    for f in s["failures"][:20]:
        log.warning("failed: %s/%s: %s", f["dataset"], f["item"], f["error"])
    return EXIT_ITEMS_FAILED if s["failed"] else EXIT_OK


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """maskjob: annotated image datasets -> segmentation masks, on Dask."""
    _setup_logging(verbose)


@main.command("export")
@click.argument("input_url", metavar="INPUT")
@click.argument("output_url", metavar="OUTPUT")
@click.option("--format", "formats", multiple=True, help="Output format (repeatable).")
@click.option("--config", type=click.Path(dir_okay=False), help="YAML job or DTL save_masks JSON.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--scheduler", help="Address of a running Dask scheduler.")
@click.option("--workers", type=click.IntRange(min=0),
              help="Local worker processes (default: CPU count; 0 = run in this process).")
@click.option("--input-format", help="Input format, when detection is not wanted.")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000.")
@click.option("--incremental", is_flag=True,
              help="Re-export only items whose annotation, image or settings changed since the "
                   "last manifest; carry the rest forward; remove outputs of deleted items.")
def export_cmd(input_url: str, output_url: str, formats: tuple[str, ...], config: str | None,
               sets: tuple[str, ...], scheduler: str | None, workers: int | None,
               input_format: str | None, storage_options: tuple[str, ...],
               incremental: bool) -> None:
    """Export INPUT (path or URL) to masks under OUTPUT."""
    sys.exit(do_export(input_url, output_url, formats=formats, config=config, sets=sets,
                       scheduler=scheduler, workers=workers, input_format=input_format,
                       storage_options=storage_options, incremental=incremental))


@main.command("validate")
@click.argument("input_url", metavar="INPUT")
@click.option("--config", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@click.option("--format", "formats", multiple=True)
@click.option("--input-format")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE")
def validate_cmd(input_url: str, config: str | None, sets: tuple[str, ...],
                 formats: tuple[str, ...], input_format: str | None,
                 storage_options: tuple[str, ...]) -> None:
    """Check the config and the input (every annotation parsed) without a cluster."""
    from .validate import validate

    try:
        spec = jobconfig.load(config, sets, formats, input_format)
        source, _ = _roots(input_url, None, storage_options)
        listing = _prepare(spec, source)
    except (ConfigError, InputError) as e:
        raise UsageFailure(str(e)) from None
    sys.exit(validate(source, listing, spec))


@main.command("verify")
@click.argument("output_url", metavar="OUTPUT")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE")
def verify_cmd(output_url: str, storage_options: tuple[str, ...]) -> None:
    """Re-check every output object against the manifest (exists, size, checksum)."""
    from .verify import verify

    dest, _ = _roots(output_url, None, storage_options)
    sys.exit(verify(dest))


@main.command("demo")
@click.argument("output_url", metavar="[OUTPUT]", default="demo-out")
@click.option("--workers", type=click.IntRange(min=0), default=None)
def demo_cmd(output_url: str, workers: int | None) -> None:
    """Build a small sample project and export it with every mask kind."""
    from .demo import make_demo_project

    project, config_path = make_demo_project(output_url)
    log.info("sample project written to %s", project)
    rc = do_export(project, output_url, formats=("supervisely",), config=config_path, sets=(),
                   scheduler=None, workers=workers, input_format=None, storage_options=())
    log.info("open %s/preview.html for a look at the result (masks in %s/supervisely, "
             "manifest %s/manifest.json)", output_url, output_url, output_url)
    sys.exit(rc)


def run(argv: Sequence[str]) -> int:
    """Run the CLI in this process and return its exit code (for tests and embedding)."""
    try:
        main.main(args=list(argv), prog_name="maskjob", standalone_mode=False)
    except SystemExit as e:
        return int(e.code or 0)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except MaskjobError as e:
        click.echo(f"Error: {e}", err=True)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    main()
