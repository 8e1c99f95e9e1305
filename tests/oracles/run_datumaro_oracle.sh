#!/usr/bin/env bash
# Regenerate the CVAT Segmentation Mask 1.1 goldens with REAL datumaro (datumaro==1.13.12).
#
#   tests/oracles/run_datumaro_oracle.sh                     # goldens for both colour modes
#   tests/oracles/run_datumaro_oracle.sh --mode source       # one mode (source | voc)
#   tests/oracles/run_datumaro_oracle.sh --rebuild-fixture   # rebuild tests/data/cvat_task first
#   tests/oracles/run_datumaro_oracle.sh --check-import DIR  # strict datumaro import of DIR
#   tests/oracles/run_datumaro_oracle.sh --setup-only        # just create the venv
#   tests/oracles/run_datumaro_oracle.sh --fidelity          # files datumaro WRITES + goldens
#                                                            # (datumaro_fidelity.py, issue 12)
#   tests/oracles/run_datumaro_oracle.sh --toolfiles [--items N] [--out DIR]
#                                                            # messy-named COCO / CVAT XML files
#                                                            # datumaro writes (datumaro_toolfiles.py)
#   tests/oracles/run_datumaro_oracle.sh --toolfiles --goldens
#                                                            # CVAT's / pycocotools' masks of the
#                                                            # committed tests/data/toolfiles
#                                                            # -> tests/golden/toolfiles
#
# datumaro lives in its own cached venv, never in maskjob's:
# $MASKJOB_ORACLE_CACHE/datumaro-1.13.12 (default ~/.cache/maskjob/datumaro-1.13.12), created on
# first use (about 560 MB, a minute or two). The fixture is built with maskjob's venv
# (.venv/bin/python tests/oracles/datumaro_fixture.py).
set -euo pipefail

DM_VERSION=1.13.12
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${MASKJOB_ORACLE_CACHE:-$HOME/.cache/maskjob}"
VENV="$CACHE/datumaro-$DM_VERSION"
PY="${PYTHON:-python3}"

rebuild_fixture=0
setup_only=0
fidelity=0
toolfiles=0
args=()
for a in "$@"; do
  case "$a" in
    --rebuild-fixture) rebuild_fixture=1 ;;
    --setup-only) setup_only=1 ;;
    --fidelity) fidelity=1 ;;
    --toolfiles) toolfiles=1 ;;
    *) args+=("$a") ;;
  esac
done

have_dm() {
  [ -x "$VENV/bin/python" ] &&
    [ "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("datumaro"))' 2>/dev/null)" = "$DM_VERSION" ]
}

if ! have_dm; then
  echo "creating oracle venv $VENV (datumaro==$DM_VERSION)" >&2
  mkdir -p "$CACHE"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "datumaro==$DM_VERSION"
  have_dm || { echo "failed to set up $VENV" >&2; exit 1; }
fi
[ "$setup_only" = 1 ] && { echo "$VENV"; exit 0; }

if [ "$rebuild_fixture" = 1 ]; then
  "$REPO/.venv/bin/python" "$HERE/datumaro_fixture.py"
fi

cd "$HERE"
if [ "$fidelity" = 1 ]; then
  # the CVAT writer lists a label's attributes in set order: a fixed hash seed keeps default.xml
  export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
  exec "$VENV/bin/python" datumaro_fidelity.py --repo "$REPO"
fi
if [ "$toolfiles" = 1 ]; then
  # datumaro iterates subsets in set order, and its COCO writer numbers images in that order:
  # a fixed hash seed keeps the files (and the orders tests/jobs/test_listing_toolfiles.py
  # asserts: train-extra, test (hold-out), val, train) the same from run to run
  export PYTHONHASHSEED="${PYTHONHASHSEED:-81}"
  exec "$VENV/bin/python" datumaro_toolfiles.py --repo "$REPO" ${args[@]+"${args[@]}"}
fi
exec "$VENV/bin/python" datumaro_oracle.py --repo "$REPO" ${args[@]+"${args[@]}"}
