"""The `maskjob` command line (SPEC 1): export, validate, verify, demo — a thin layer over
`jobs.api` (the Python API runs the same job).

Exit codes (a contract for schedulers):
  0    all items exported (or the failures stay within --max-failed N|P%)
  1    the job finished, some items failed (each is in the manifest with its reason);
       `validate` found bad items; `verify` found a problem
  2    usage, config, input, credentials, endpoint or bucket error, found before any work
       (checked up front, before the cluster starts)
  3    the job could not finish (storage or cluster failure after retries); rerunning the
       same command resumes
  130  interrupted (Ctrl-C, SIGTERM): the cluster is shut down cleanly
One line per error on stderr, a traceback only with -v. Every log line, message and exception
text is redacted (jobs.secrets). A tqdm progress bar on a terminal, plain log lines otherwise;
the Dask dashboard address is logged at start. `run(argv) -> int` is the in-process entry for
tests; `main` is the click group, and calling it as the console script runs through `run`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from maskcore import __version__
from maskcore.errors import MaskjobError
from maskcore.formats import FORMATS, INPUT_FORMATS

from . import api
from .secrets import RedactFilter, install_log_filter, redact_text
from .storage import parse_storage_options

log = logging.getLogger("maskjob")

EXIT_OK, EXIT_ITEMS_FAILED, EXIT_USAGE = api.EXIT_OK, api.EXIT_ITEMS_FAILED, api.EXIT_USAGE
EXIT_NOT_FINISHED, EXIT_INTERRUPTED = api.EXIT_NOT_FINISHED, api.EXIT_INTERRUPTED
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
QUIET = ("distributed", "bokeh", "tornado", "asyncio", "fsspec", "s3fs", "botocore",
         "aiobotocore", "urllib3")
_state: dict[str, Any] = {"verbose": False, "handler": None}


class UsageFailure(click.ClickException):
    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))


def _setup_logging() -> None:
    """One stderr handler on the root logger (the CLI owns the process), redacting, with
    each line stamped by its logger's name; maskjob at INFO (DEBUG with -v), others WARNING."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactFilter())
    root.addHandler(handler)
    _state["handler"] = handler
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    _set_level()


def _set_level() -> None:
    log.setLevel(logging.DEBUG if _state["verbose"] else logging.INFO)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _quiet_dask() -> None:
    """distributed configures its own loggers at INFO (own handler) on import: keep the
    driver's log to maskjob's lines and warnings, redacted."""
    import distributed  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
    install_log_filter("", "distributed")


def _verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _state["verbose"] = True
        _set_level()


def verbose_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=_verbose, help="Debug logging and tracebacks.")(f)


def storage_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--storage-option", "storage_options", multiple=True,
                        metavar="KEY=VALUE",
                        help="fsspec storage option (dotted keys nest), e.g. "
                             "endpoint_url=http://127.0.0.1:9000.")(f)


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed((
        click.option("--format", "formats", multiple=True, metavar="NAME",
                     help=f"Output format, repeatable: {', '.join(FORMATS)} "
                          "(default supervisely)."),
        click.option("--config", type=click.Path(dir_okay=False),
                     help="YAML job or Supervisely DTL save_masks JSON."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override a config key (value parsed as YAML)."),
        click.option("--input-format", metavar="NAME",
                     help=f"Input format when detection is not wanted: "
                          f"{', '.join(INPUT_FORMATS)}."),
    )):
        f = opt(f)
    return storage_option(f)


def _storage(pairs: Sequence[str]) -> dict[str, Any]:
    try:
        return parse_storage_options(list(pairs))
    except ValueError as e:
        raise UsageFailure(str(e)) from None


def _progress(total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    state = {"done": 0, "logged": 0}

    def progress(n: int) -> None:
        bar.update(n)
        state["done"] += n
        if bar.disable and state["done"] - state["logged"] >= max(total // 10, 1):
            state["logged"] = state["done"]
            log.info("progress: %d/%d items", state["done"], total)

    return progress, bar.close


def do_export(input_url: str, output_url: str, *, formats: Sequence[str] = (),
              config: str | None = None, sets: Sequence[str] = (),
              scheduler: str | None = None, scheduler_file: str | None = None,
              workers: int | None = None, input_format: str | None = None,
              storage_options: Sequence[str] = (), incremental: bool = False,
              max_failed: str | None = None, overwrite: bool = False,
              dashboard_address: str | None = None) -> int:
    api.parse_max_failed(max_failed)
    job = api.prepare(input_url, output_url, formats=formats, config=config, sets=sets,
                      input_format=input_format, storage_options=_storage(storage_options),
                      overwrite=overwrite)
    if workers != 0 or scheduler or scheduler_file:
        _quiet_dask()
    progress, close = _progress(job.listing.count)
    try:
        result = api.run_prepared(job, scheduler=scheduler, scheduler_file=scheduler_file,
                                  workers=workers, dashboard_address=dashboard_address,
                                  incremental=incremental, max_failed=max_failed,
                                  progress=progress)
    finally:
        close()
    s = result.summary
    log.info("done: %d items, %d ok, %d unchanged, %d failed, %d outputs in %.1fs "
             "(%d partitions resumed); manifest %s", s["items"], s["ok"], s["unchanged"],
             s["failed"], s["outputs"], result.seconds, result.resumed, result.manifest_url)
    for f in s["failures"][:20]:
        log.warning("failed: %s/%s: %s", f["dataset"], f["item"], f["error"])
    return result.exit_code


EPILOG = (f"Output formats: {', '.join(FORMATS)}. Input formats (detected, or "
          f"--input-format): {', '.join(INPUT_FORMATS)}. Exit codes: 0 ok (or failures within "
          "--max-failed), 1 some items failed, 2 usage/config/input/credentials error before any "
          "work, 3 the job could not finish (rerun resumes), 130 interrupted.")


class MaskjobGroup(click.Group):
    """The `maskjob` group: called as a console script (standalone), it runs through `run`,
    which maps every error to its exit code and one redacted line."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if standalone_mode:
            sys.exit(run(sys.argv[1:] if args is None else list(args)))
        return super().main(args, prog_name, complete_var, standalone_mode, **extra)


@click.group(cls=MaskjobGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EPILOG)
@click.version_option(__version__, "--version", prog_name="maskjob")
@verbose_option
def main() -> None:
    """maskjob: annotated image datasets -> segmentation masks, on Dask."""


@main.command("export", epilog=EPILOG)
@click.argument("input_url", metavar="INPUT")
@click.argument("output_url", metavar="OUTPUT")
@config_options
@click.option("--scheduler", help="Address of a running Dask scheduler "
                                  "(default: DASK_SCHEDULER_ADDRESS).")
@click.option("--scheduler-file", type=click.Path(dir_okay=False),
              help="Dask scheduler file (dask-jobqueue / HPC convention).")
@click.option("--workers", type=click.IntRange(min=0),
              help="Local worker processes (0 = run in this process; default: in this "
                   "process for a small job, else CPU count - the choice is logged).")
@click.option("--dashboard-address", metavar="HOST:PORT",
              help="Dashboard of the local cluster (default: 127.0.0.1, a free port).")
@click.option("--incremental", is_flag=True,
              help="Re-export only items whose annotation, image or settings changed since the "
                   "last manifest; carry the rest forward; remove outputs of deleted items.")
@click.option("--max-failed", metavar="N|P%",
              help="Exit 0 while at most N items (or P% of them) failed.")
@click.option("--overwrite", is_flag=True,
              help="Write into an OUTPUT holding files maskjob did not write.")
@verbose_option
def export_cmd(input_url: str, output_url: str, **kwargs: Any) -> None:
    """Export INPUT (path or URL) to masks under OUTPUT."""
    sys.exit(do_export(input_url, output_url, **kwargs))


@main.command("validate", epilog=EPILOG)
@click.argument("input_url", metavar="INPUT")
@click.argument("output_url", metavar="[OUTPUT]", required=False)
@config_options
@verbose_option
def validate_cmd(input_url: str, output_url: str | None, formats: tuple[str, ...],
                 config: str | None, sets: tuple[str, ...], input_format: str | None,
                 storage_options: tuple[str, ...]) -> None:
    """Dry run: everything export would refuse or fail per item, without a cluster.

    Checks the config, lists INPUT, parses every annotation and checks that every item's
    image is present; with OUTPUT, also the OUTPUT checks and a write probe. Same exit codes
    as export."""
    from .validate import dry_run

    sys.exit(dry_run(input_url, output_url, formats=formats, config=config, sets=sets,
                     input_format=input_format, storage_options=_storage(storage_options)))


@main.command("verify")
@click.argument("output_url", metavar="OUTPUT")
@storage_option
@verbose_option
def verify_cmd(output_url: str, storage_options: tuple[str, ...]) -> None:
    """Re-check every output object against the manifest (exists, size, checksum)."""
    from .storage import Root
    from .verify import verify

    sys.exit(verify(Root(output_url, _storage(storage_options))))


@main.command("demo")
@click.argument("output_url", metavar="[OUTPUT]", default="demo-out")
@click.option("--workers", type=click.IntRange(min=0), default=None)
@verbose_option
def demo_cmd(output_url: str, workers: int | None) -> None:
    """Build a small sample project and export it with every mask kind."""
    from .demo import make_demo_project

    project, config_path = make_demo_project(output_url)
    log.info("sample project written to %s", project)
    rc = do_export(project, output_url, config=config_path, workers=workers)
    log.info("open %s/preview.html for a look at the result (masks in %s/supervisely, "
             "manifest %s/manifest.json)", output_url, output_url, output_url)
    sys.exit(rc)


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _fail(message: str, code: int, exc: BaseException | None = None) -> int:
    click.echo(f"Error: {redact_text(message)}", err=True)
    if exc is not None and _state["verbose"]:
        log.error("traceback", exc_info=exc)
    return code


def run(argv: Sequence[str]) -> int:
    """Run the CLI in this process and return its exit code (for tests and embedding)."""
    _state["verbose"] = False
    _setup_logging()
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        main.main(args=list(argv), prog_name="maskjob", standalone_mode=False)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except click.exceptions.Abort:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except click.ClickException as e:
        return _fail(e.format_message(), e.exit_code, e)
    except KeyboardInterrupt as e:
        return _fail("interrupted; rerunning the same command resumes", EXIT_INTERRUPTED, e)
    except api.ExportError as e:
        return _fail(str(e), e.exit_code, e)
    except MaskjobError as e:
        return _fail(str(e), EXIT_USAGE, e)
    except Exception as e:
        return _fail(api.describe(e), EXIT_NOT_FINISHED, e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logging.getLogger().removeHandler(_state["handler"])
        _state["handler"] = None
    return EXIT_OK


if __name__ == "__main__":
    main()
