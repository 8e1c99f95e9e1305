#!/usr/bin/env bash
# Regenerate the Supervisely golden masks with the REAL SDK (supervisely==6.74.51).
#
#   tests/oracles/run_supervisely_oracle.sh                    # goldens for all modes
#   tests/oracles/run_supervisely_oracle.sh --mode app         # one mode (app | app16 | dtl)
#   tests/oracles/run_supervisely_oracle.sh --rebuild-fixture  # rebuild tests/data/sly_* first
#   tests/oracles/run_supervisely_oracle.sh --toolfiles            # the SDK writes tests/data/sly_toolfiles
#   tests/oracles/run_supervisely_oracle.sh --toolfiles --goldens  # -> tests/golden/sly_toolfiles
#
# The SDK lives in its own cached venv, never in maskjob's: $MASKJOB_ORACLE_CACHE/sly-6.74.51
# (default ~/.cache/maskjob/sly-6.74.51), created on first use (about 850 MB, a minute or so).
# --rebuild-fixture also needs scikit-image's sample photos; it installs scikit-image into a
# separate throwaway venv ($MASKJOB_ORACLE_CACHE/skimage) just to dump them.
# See tests/oracles/README.md.
set -euo pipefail

SLY_VERSION=6.74.51
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${MASKJOB_ORACLE_CACHE:-$HOME/.cache/maskjob}"
VENV="$CACHE/sly-$SLY_VERSION"
PY="${PYTHON:-python3}"

rebuild_fixture=0
toolfiles=0
goldens=0
args=()
for a in "$@"; do
  case "$a" in
    --rebuild-fixture) rebuild_fixture=1 ;;
    --toolfiles) toolfiles=1 ;;
    --goldens) goldens=1 ;;
    *) args+=("$a") ;;
  esac
done

have_sdk() {
  [ -x "$VENV/bin/python" ] &&
    [ "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("supervisely"))' 2>/dev/null)" = "$SLY_VERSION" ]
}

if ! have_sdk; then
  echo "creating oracle venv $VENV (supervisely==$SLY_VERSION)" >&2
  mkdir -p "$CACHE"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "supervisely==$SLY_VERSION"
  # opencv-python needs libGL; if it is missing (slim images), the headless build provides the
  # same cv2 module with the same drawing code.
  if ! "$VENV/bin/python" -c 'import cv2' 2>/dev/null; then
    cv2_version="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("opencv-python"))')"
    "$VENV/bin/python" -m pip uninstall --quiet --yes opencv-python
    "$VENV/bin/python" -m pip install --quiet "opencv-python-headless==$cv2_version"
  fi
  have_sdk || { echo "failed to set up $VENV" >&2; exit 1; }
fi

if [ "$rebuild_fixture" = 1 ]; then
  SKVENV="$CACHE/skimage"
  if ! [ -x "$SKVENV/bin/python" ] || ! "$SKVENV/bin/python" -c 'import skimage.data' 2>/dev/null; then
    echo "creating throwaway venv $SKVENV (scikit-image, for its sample photos only)" >&2
    "$PY" -m venv "$SKVENV"
    "$SKVENV/bin/python" -m pip install --quiet scikit-image
  fi
  photos="$(mktemp -d)"
  trap 'rm -rf "$photos"' EXIT
  "$SKVENV/bin/python" "$HERE/dump_skimage_photos.py" "$photos"
  (cd "$HERE" && "$VENV/bin/python" build_sly_fixture.py "$photos" "$REPO")
fi

cd "$HERE"
if [ "$toolfiles" = 1 ]; then
  # seeded; a fixed hash seed too, so nothing can depend on set order
  export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
  step=write
  [ "$goldens" = 1 ] && step=goldens
  exec "$VENV/bin/python" sly_toolfiles.py "$step" --repo "$REPO" ${args[@]+"${args[@]}"}
fi
exec "$VENV/bin/python" supervisely_oracle.py --repo "$REPO" ${args[@]+"${args[@]}"}
