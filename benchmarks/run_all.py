"""Run maskjob's benchmarks: `make bench` = `.venv/bin/python benchmarks/run_all.py [ARGS]`.

Makes sure the Supervisely SDK venv exists (the peer runs there, never in maskjob's venv):
`$MASKJOB_ORACLE_CACHE/sly-6.74.51` (default `~/.cache/maskjob/sly-6.74.51`), created on
first use with `python3 -m venv` + `pip install supervisely==6.74.51` (~850 MB, a minute or
so; opencv-python is swapped for the headless build of the same version when libGL is
missing). Then runs benchmarks/bench_supervisely.py with the given arguments (`--quick`,
`--images N`, `--rounds R`, `--no-peer-memory`, `--write/--no-write`); see BENCHMARKS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SLY_VERSION = "6.74.51"
BENCHES = ["bench_supervisely.py"]


def sdk_venv() -> Path:
    cache = Path(os.environ.get("MASKJOB_ORACLE_CACHE", Path.home() / ".cache" / "maskjob"))
    return cache / f"sly-{SLY_VERSION}"


def have_sdk(py: Path) -> bool:
    if not py.exists():
        return False
    probe = subprocess.run(
        [str(py), "-c", "from importlib.metadata import version; import cv2; "
                        "print(version('supervisely'))"],
        capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == SLY_VERSION


def ensure_sdk() -> Path:
    venv = sdk_venv()
    py = venv / "bin" / "python"
    if have_sdk(py):
        return py
    print(f"[run_all] creating the SDK venv {venv} (supervisely=={SLY_VERSION})", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3") or sys.executable
    if not py.exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"supervisely=={SLY_VERSION}"], check=True)
    if subprocess.run([str(py), "-c", "import cv2"], capture_output=True).returncode != 0:
        # opencv-python needs libGL; the headless build has the same cv2 and drawing code
        version = subprocess.run(
            [str(py), "-c", "from importlib.metadata import version; "
                            "print(version('opencv-python'))"],
            capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([str(py), "-m", "pip", "uninstall", "--quiet", "--yes", "opencv-python"],
                       check=True)
        subprocess.run([*pip, f"opencv-python-headless=={version}"], check=True)
    if not have_sdk(py):
        raise SystemExit(f"[run_all] could not set up {venv}")
    return py


def main(argv: list[str]) -> int:
    ensure_sdk()
    rc = 0
    for bench in BENCHES:
        print(f"[run_all] {bench} {' '.join(argv)}", flush=True)
        rc = max(rc, subprocess.run([sys.executable, str(HERE / bench), *argv]).returncode)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
