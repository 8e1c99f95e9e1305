"""Run a maskjob export on SLURM with dask-jobqueue (pip install dask-jobqueue).

    python deploy/slurm/export.py s3://datasets/project s3://exports/masks --jobs 8

Starts a SLURMCluster from deploy/slurm/jobqueue.yaml settings, scales it, and hands its
scheduler address to `maskjob export`; the cluster goes away with this script.
"""

import argparse
import sys

from dask_jobqueue import SLURMCluster

from jobs.cli import run


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--config")
    a = p.parse_args()
    with SLURMCluster() as cluster:
        cluster.scale(jobs=a.jobs)
        argv = ["export", a.input, a.output, "--scheduler", cluster.scheduler_address]
        if a.config:
            argv += ["--config", a.config]
        return run(argv)


if __name__ == "__main__":
    sys.exit(main())
