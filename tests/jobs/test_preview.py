"""OUTPUT/preview.html: written at finalize for every export, self-contained (inline base64
thumbnails and an inline SVG chart, nothing fetched), untrusted names escaped, and it renders
in a real headless Chromium (skipped when `chromium` is not installed: `apt-get install -y
chromium`)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from jobs.cli import run
from tests.conftest import poly, rect

COCO = Path(__file__).resolve().parents[1] / "data" / "coco_small"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")



def thumbnails(page: str) -> list[np.ndarray]:
    out = []
    for b64 in re.findall(r"src='data:image/jpeg;base64,([A-Za-z0-9+/=]+)'", page):
        out.append(cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8),
                                cv2.IMREAD_COLOR))
    return out


def test_preview_is_self_contained_with_chart_and_samples(tmp_path):
    out = tmp_path / "out"
    assert run(["export", str(COCO), str(out), "--workers", "0", "--format", "zarr"]) == 1
    page = (out / "preview.html").read_text()
    bare = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in bare and "https://" not in bare
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing to fetch
    assert page.count("<svg") == 1 and page.count("<rect") == 3  # person, car, tree
    assert "fill=\"rgb(128,0,0)\"" in page  # person, VOC colour 1
    thumbs = thumbnails(page)
    assert len(thumbs) == 6  # 3 exported items: image + overlay each
    assert all(t is not None and t.shape[0] > 100 for t in thumbs)
    for name in ("default/b.png", "default/street/a.jpg", "Failed items (4)",
                 "category_id declared"):
        assert name in page
    # the input's format is in the manifest: the preview decodes images as its tool does
    assert json.loads((out / "manifest.json").read_text())["input"]["format"] == "coco"


def test_preview_escapes_names_and_shows_masks_without_images(project, tmp_path):
    p = project([{"title": "<img src=x onerror=alert(1)>", "shape": "rectangle",
                  "color": "#FF0000"},
                 {"title": "person", "shape": "polygon", "color": "#00FF00"}])
    p.add("ds", "<i>bold&co.png", [rect("<img src=x onerror=alert(1)>", 2, 2, 30, 30),
                                    poly("person", (5, 5), (40, 5), (20, 40))])
    out = tmp_path / "out"
    assert run(["export", str(p.root), str(out), "--workers", "0",
                "--set", "supervisely.masks_human=false", "--set", "supervisely.images=false"
                ]) == 0
    page = (out / "preview.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<i>bold" not in page and "&lt;i&gt;bold&amp;co.png" in page
    assert len(thumbnails(page)) == 2  # image + overlay, the mask read from masks_machine


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_preview_renders_in_headless_chromium(tmp_path):
    out = tmp_path / "out"
    assert run(["export", str(COCO), str(out), "--workers", "0", "--format", "clearml"]) == 1
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--window-size=1000,900",
             f"--screenshot={shot}", (out / "preview.html").as_uri()],
            capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (900, 1000)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 500  # photos, bars and text, not a blank or error page
    bars = {(0, 0, 128), (0, 128, 0), (0, 128, 128)}  # person, car, tree bars (BGR)
    found = {tuple(int(v) for v in c) for c in colours} & bars
    assert found == bars, found
