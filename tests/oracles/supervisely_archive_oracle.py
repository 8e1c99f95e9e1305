"""Oracle for the supervisely packaging options, run in the SDK venv (supervisely==6.74.51).

    python supervisely_archive_oracle.py EXTRACTED_DIR GOLDEN_APP_DIR PERCENT

EXTRACTED_DIR is maskjob's archive (pieces concatenated) extracted with plain tarfile, as
`cat name.tar.* | tar -x` does. The SDK must open it as a project (`sly.Project`, READ) and
every item must load (`Dataset.get_item_paths`, `sly.Annotation.load_json_file` with the
project meta, `sly.image.read`). For resizeHumanMasks, each SDK-made golden human mask
(tests/golden/supervisely/app, the app's side-by-side) is resized the way the app does it -
`cv2.resize(out, (int(width * p / 100), int(height * p / 100)), interpolation=INTER_AREA)`
with the SDK venv's own OpenCV - and compared with maskjob's resized mask in the archive.

Prints one JSON object: {"datasets": [...], "items": n, "loaded": n, "errors": [...],
"human_compared": n, "human_mismatch": [...], "cv2": version}.
"""

from __future__ import annotations

import json
import os
import sys

import cv2
import numpy as np
import supervisely as sly


def main(extracted: str, golden: str, percent: int) -> dict:
    out: dict = {"datasets": [], "items": 0, "loaded": 0, "errors": [], "human_compared": 0,
                 "human_mismatch": [], "cv2": cv2.__version__}
    project = sly.Project(extracted, sly.OpenMode.READ)
    for ds in project.datasets:
        out["datasets"].append(ds.name)
        for name in ds:
            out["items"] += 1
            try:
                img_path, ann_path = ds.get_item_paths(name)
                sly.Annotation.load_json_file(ann_path, project.meta)
                sly.image.read(img_path)
                out["loaded"] += 1
            except Exception as e:  # reported, the test fails on it
                out["errors"].append(f"{ds.name}/{name}: {type(e).__name__}: {e}")
            stem = os.path.splitext(name)[0] + ".png"
            rel = os.path.relpath(os.path.join(ds.directory, "masks_human", stem), extracted)
            ref = os.path.join(golden, rel)
            if not os.path.exists(ref):
                continue
            app = cv2.imread(ref, cv2.IMREAD_UNCHANGED)
            h, w = app.shape[:2]
            want = cv2.resize(app, (int(w * percent / 100), int(h * percent / 100)),
                              interpolation=cv2.INTER_AREA)
            got = cv2.imread(os.path.join(extracted, rel), cv2.IMREAD_UNCHANGED)
            out["human_compared"] += 1
            if got is None or got.shape != want.shape or not np.array_equal(got, want):
                out["human_mismatch"].append(rel)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
