"""Run a maskjob export on SLURM with dask-jobqueue (pip install dask-jobqueue).

    python deploy/slurm/export.py [--jobqueue-config FILE] [--jobs N] [--min-workers N]
                                  [--wait-timeout SECONDS] -- INPUT OUTPUT [export options]...

Everything after `--` is a `maskjob export` command line and is forwarded unchanged (every
option: --format, --config, --set, --incremental, --max-failed, --storage-option, ...); this
script only adds `--scheduler ADDRESS`. In order:

1. the export command line is checked with maskjob's own parser before anything is queued
   (exit 2 on a usage error, or when it already names a cluster: --scheduler, --workers,
   --scheduler-file);
2. the jobqueue config (default: jobqueue.yaml beside this script) is loaded into Dask's config,
   where SLURMCluster reads its `jobqueue.slurm` settings; the job script's prologue gets
   `export DASK_CONFIG=<deploy/dask.yaml>` (the workers' malloc settings, as in the image);
3. a SLURMCluster starts (its scheduler runs in this process), --jobs SLURM jobs are requested,
   and the script waits until at least --min-workers workers have connected (exit 3 after
   --wait-timeout: nothing was exported, rerun when the queue allows);
4. `maskjob export ... --scheduler ADDRESS` runs as a child process with this Python; its exit
   code is returned unchanged (0, 1, 2, 3, 130). Workers that join later are used as they come.

The cluster (and its SLURM jobs) goes away with this script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import dask.config
import yaml

EXIT_USAGE, EXIT_INFRA, EXIT_INTERRUPTED = 2, 3, 130
DEFAULT_CONFIG = Path(__file__).with_name("jobqueue.yaml")
# The Dask config the image installs as /etc/dask/maskjob.yaml (nanny pre-spawn environment).
WORKER_DASK_CONFIG = Path(__file__).resolve().parents[1] / "dask.yaml"
# Options that pick a cluster: this script provides it.
CLUSTER_OPTIONS = ("scheduler", "workers", "scheduler_file")


def check_export_argv(export_argv: Sequence[str]) -> None:
    """Parse the forwarded command line with the real `maskjob export` command; raise
    click.UsageError on an unknown option, a missing argument, or a cluster option."""
    from jobs.cli import main as cli

    command = cli.commands["export"]
    with command.make_context("maskjob export", list(export_argv)) as ctx:
        given = [f"--{k.replace('_', '-')}" for k in CLUSTER_OPTIONS if ctx.params.get(k)]
    if given:
        raise click.UsageError(f"{', '.join(given)}: the cluster is the SLURMCluster this "
                               "script starts; leave it out")


def load_jobqueue_config(path: Path) -> dict:
    """Load a jobqueue YAML file into Dask's config (it wins over ~/.config/dask); return its
    `jobqueue.slurm` section."""
    config = yaml.safe_load(path.read_text()) or {}
    slurm = (config.get("jobqueue") or {}).get("slurm")
    if not isinstance(slurm, dict):
        raise click.UsageError(f"{path}: no jobqueue.slurm section")
    key = next((k for k in ("job_script_prologue", "job-script-prologue") if k in slurm),
               "job-script-prologue")
    # Shared filesystem assumed, as for the workers' Python itself (see jobqueue.yaml).
    slurm[key] = [*(slurm.get(key) or []), f"export DASK_CONFIG={WORKER_DASK_CONFIG}"]
    dask.config.update(dask.config.config, config, priority="new")
    return slurm


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    if "--" not in argv:
        raise click.UsageError("put the `maskjob export` arguments after `--`")
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="deploy/slurm/export.py")
    p.add_argument("--jobqueue-config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--jobs", type=int, default=4, help="SLURM jobs to request")
    p.add_argument("--min-workers", type=int, default=1,
                   help="start the export once this many workers have connected")
    p.add_argument("--wait-timeout", type=float, default=3600.0,
                   help="seconds to wait for --min-workers (exit 3 after)")
    return p.parse_args(argv[:split]), argv[split + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, export_argv = parse_args(sys.argv[1:] if argv is None else argv)
        check_export_argv(export_argv)
        load_jobqueue_config(args.jobqueue_config)
    except click.ClickException as e:
        e.show()
        return EXIT_USAGE

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    with SLURMCluster() as cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        try:
            client.wait_for_workers(args.min_workers, timeout=args.wait_timeout)
        except TimeoutError:
            print(f"Error: fewer than {args.min_workers} workers after {args.wait_timeout:g} s "
                  "(SLURM queue?); nothing was exported, rerun later", file=sys.stderr)
            return EXIT_INFRA
        cmd = [sys.executable, "-m", "jobs.cli", "export", *export_argv,
               "--scheduler", cluster.scheduler_address]
        try:
            return subprocess.run(cmd, check=False).returncode
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
