"""Synthetic Supervisely projects for the benchmarks (deterministic, cached under .data/).

    build_project(root, n_images, width, height, seed) -> Path

Each image is a photo-like JPEG (q90): a low-frequency colour field and vertical gradient,
three layers of random shapes blurred by different amounts (depth of field), multi-octave
texture and sensor noise. No flat colours, so it compresses and decodes like a real photo
(~1.5-2 bits per pixel). No third-party sample images are used.

Each annotation has ~40 objects in 6 classes, written as the Supervisely SDK writes them:
- 28 polygons (`car`, `person`) of 30-300 vertices, radii log-uniform over ~15-220 px at 1080p,
  ~1 in 4 with one or two holes; one in every second image crosses the image border
  (exercises the SDK's load-time crop);
- 6 rectangles (`sign`);
- 2 bitmaps (`vegetation`), `base64(zlib(PNG))` with a palette PNG and tRNS, as the SDK's
  `Bitmap.data_2_base64` writes them;
- 1 polyline (`lane`) and 3 points (`marker`).
Objects overlap, so the machine mask's draw order matters. Coordinates are integers, as
projects downloaded through the API store them.

A project is rebuilt only when its parameters (or GENERATOR_VERSION) change: a stamp file
`.complete.json` holds them.
"""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

GENERATOR_VERSION = 3
DATASET = "ds0"
CLASSES = [
    # (title, shape, colour) in meta.json order: machine index = position + 1
    ("car", "polygon", "#E53935"),
    ("person", "polygon", "#8E24AA"),
    ("vegetation", "bitmap", "#43A047"),
    ("sign", "rectangle", "#FDD835"),
    ("lane", "line", "#1E88E5"),
    ("marker", "point", "#FB8C00"),
]
CLASS_ID = {title: 9000 + i for i, (title, _, _) in enumerate(CLASSES)}
N_POLYGONS, N_RECTANGLES, N_BITMAPS, N_LINES, N_POINTS = 28, 6, 2, 1, 3


# ---------------------------------------------------------------------------- the photo
def _upsampled_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int
                     ) -> np.ndarray:
    """Smooth random field in [-1, 1]: a coarse grid upsampled with cubic interpolation."""
    gh, gw = max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))
    grid = rng.uniform(-1, 1, (gh + 2, gw + 2, channels)).astype(np.float32)
    big = cv2.resize(grid, (w + 2 * (w // gw), h + 2 * (h // gh)), interpolation=cv2.INTER_CUBIC)
    oy, ox = h // gh, w // gw
    out = big[oy:oy + h, ox:ox + w]
    return out.reshape(h, w, channels)


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like BGR uint8 image of the given size."""
    h, w = height, width
    scale = min(h, w) / 1080
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top = rng.uniform(120, 230, 3).astype(np.float32)
    bottom = rng.uniform(30, 120, 3).astype(np.float32)
    img = top * (1 - y) + bottom * y + np.zeros((1, w, 1), np.float32)
    img += 40 * _upsampled_noise(rng, h, w, 8, 3)
    for blur, count in ((12.0, 25), (4.0, 35), (0.8, 40)):  # far, middle, near (sharp)
        layer = img.copy()
        for _ in range(count):
            base = rng.uniform(40, 200)  # muted, natural-looking colours
            color = tuple(float(base + c) for c in rng.uniform(-50, 50, 3))
            cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            r = int(math.exp(rng.uniform(math.log(10), math.log(250))) * scale) + 2
            kind = rng.integers(3)
            if kind == 0:
                cv2.ellipse(layer, (cx, cy), (r, int(r * rng.uniform(0.3, 1.0))),
                            float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
            elif kind == 1:
                cv2.rectangle(layer, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
            else:
                pts = _star(rng, cx, cy, r, 12, 0.35).astype(np.int32)
                cv2.fillPoly(layer, [pts], color, cv2.LINE_AA)
        k = blur * scale
        img = cv2.GaussianBlur(layer, (0, 0), k) if k > 0.3 else layer
    # texture: a few octaves of grain, then sensor noise
    for cells, amp in ((64, 10.0), (256, 7.0), (640, 5.0)):
        img += amp * _upsampled_noise(rng, h, w, cells, 1)
    img += rng.normal(0, 4.0, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- geometries
def _star(rng: np.random.Generator, cx: float, cy: float, r: float, n: int, wobble: float
          ) -> np.ndarray:
    """A smooth star-shaped ring of n (x, y) points around (cx, cy), radius within r*(1 +-
    wobble) (never self-intersecting)."""
    theta = np.sort(rng.uniform(0, 2 * np.pi, n)) if n > 8 else np.linspace(0, 2 * np.pi, n,
                                                                                 endpoint=False)
    radius = np.ones(n)
    weights = rng.uniform(0, 1, 4)
    weights = wobble * weights / weights.sum()
    for k, a in zip((2, 3, 5, 7), weights, strict=True):
        radius += a * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius *= 1 + rng.normal(0, 0.01, n)
    return np.stack([cx + r * radius * np.cos(theta), cy + r * radius * np.sin(theta)], axis=1)


def _int_ring(ring: np.ndarray) -> list[list[int]]:
    pts = np.rint(ring).astype(np.int64)
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)  # no repeated consecutive vertices
    return pts[keep].tolist()


def _polygon(rng: np.random.Generator, w: int, h: int, scale: float, cross: bool
             ) -> dict:
    r = math.exp(rng.uniform(math.log(15), math.log(220))) * scale
    n = int(np.clip(r * 1.3 / scale, 34, 300))
    if cross:  # centre near an edge: part of it lies outside the image
        cx, cy = float(rng.uniform(0.2, 0.8) * w), -0.3 * r
    else:
        m = r * 1.4
        cx, cy = rng.uniform(min(m, w / 2), max(w - m, w / 2)), rng.uniform(min(m, h / 2),
                                                                          max(h - m, h / 2))
    ext = _star(rng, cx, cy, r, n, 0.4)
    if not cross:
        ext[:, 0] = np.clip(ext[:, 0], 0, w - 1)
        ext[:, 1] = np.clip(ext[:, 1], 0, h - 1)
    holes = []
    if r > 40 * scale and rng.uniform() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            hr = r * rng.uniform(0.12, 0.22)
            hx = cx + rng.uniform(-0.2, 0.2) * r
            hy = cy + rng.uniform(-0.2, 0.2) * r
            hole = _star(rng, hx, hy, hr, int(np.clip(hr * 1.3 / scale, 12, 80)), 0.3)
            holes.append(_int_ring(hole))
    return {"exterior": _int_ring(ext), "interior": holes}


def _bitmap_b64(mask: np.ndarray) -> str:
    """As the SDK's Bitmap.data_2_base64: a 0/1 palette PNG with tRNS, zlib, base64."""
    im = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    im.putpalette([0, 0, 0, 255, 255, 255])
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0, optimize=0)
    return base64.b64encode(zlib.compress(buf.getvalue())).decode()


def _bitmap(rng: np.random.Generator, w: int, h: int, scale: float) -> dict:
    bw, bh = int(rng.uniform(80, 320) * scale), int(rng.uniform(60, 240) * scale)
    field = _upsampled_noise(rng, bh, bw, 6, 1)[:, :, 0]
    yy, xx = np.mgrid[0:bh, 0:bw]
    blob = 1 - (((yy - bh / 2) / (bh / 2)) ** 2 + ((xx - bw / 2) / (bw / 2)) ** 2)
    mask = (blob + 0.5 * field) > 0.35
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # tight, as the SDK stores it
    left = int(rng.uniform(0, w - mask.shape[1]))
    top = int(rng.uniform(0, h - mask.shape[0]))
    return {"origin": [left, top], "data": _bitmap_b64(mask)}


def _obj(rng: np.random.Generator, oid: int, title: str, geometry_type: str, **payload) -> dict:
    return {
        "id": oid,
        "classId": CLASS_ID[title],
        "description": "",
        "geometryType": geometry_type,
        "labelerLogin": "bench",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "updatedAt": "2025-01-01T00:00:00.000Z",
        "nnCreated": False,
        "nnUpdated": False,
        "tags": [],
        "classTitle": title,
        **payload,
    }


def annotation(rng: np.random.Generator, width: int, height: int, image_no: int) -> dict:
    w, h = width, height
    scale = min(w, h) / 1080
    objects: list[dict] = []
    oid = 1000 * image_no

    def add(title: str, gtype: str, **payload) -> None:
        nonlocal oid
        oid += 1
        objects.append(_obj(rng, oid, title, gtype, **payload))

    for k in range(N_POLYGONS):
        cross = k == 0 and image_no % 2 == 1
        add("car" if k % 3 else "person", "polygon",
            points=_polygon(rng, w, h, scale, cross))
    for _ in range(N_RECTANGLES):
        rw, rh = int(rng.uniform(20, 300) * scale), int(rng.uniform(20, 200) * scale)
        x0, y0 = int(rng.uniform(0, w - rw)), int(rng.uniform(0, h - rh))
        add("sign", "rectangle", points={"exterior": [[x0, y0], [x0 + rw, y0 + rh]],
                                         "interior": []})
    for _ in range(N_BITMAPS):
        add("vegetation", "bitmap", bitmap=_bitmap(rng, w, h, scale))
    for _ in range(N_LINES):
        n = int(rng.integers(8, 16))
        xs = np.linspace(0.05 * w, 0.95 * w, n) + rng.normal(0, 10 * scale, n)
        ys = np.linspace(0.95 * h, 0.4 * h, n) + rng.normal(0, 25 * scale, n)
        pts = np.stack([np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)], 1)
        add("lane", "line", points={"exterior": np.rint(pts).astype(int).tolist(),
                                    "interior": []})
    for _ in range(N_POINTS):
        add("marker", "point", points={"exterior": [[int(rng.uniform(0, w)),
                                                    int(rng.uniform(0, h))]], "interior": []})
    order = rng.permutation(len(objects))  # interleave kinds, as annotators do
    return {
        "description": "",
        "size": {"height": h, "width": w},
        "tags": [],
        "objects": [objects[i] for i in order],
        "customBigData": {},
    }


def meta() -> dict:
    return {
        "classes": [
            {"title": t, "shape": s, "color": c, "geometry_config": {}, "id": CLASS_ID[t],
             "hotkey": "", "description": ""}
            for t, s, c in CLASSES
        ],
        "tags": [],
        "projectType": "images",
        "projectSettings": {"multiView": {"enabled": False, "tagName": None, "tagId": None,
                                          "isSynced": False}},
    }


# ---------------------------------------------------------------------------- projects
def build_project(root: Path, n_images: int, width: int, height: int, seed: int) -> Path:
    """The project at `root` (built unless its stamp says it is up to date)."""
    params = {"version": GENERATOR_VERSION, "n_images": n_images, "width": width,
              "height": height, "seed": seed}
    stamp = root / ".complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / DATASET / "img").mkdir(parents=True)
    (root / DATASET / "ann").mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(meta(), indent=2))
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        name = f"img_{i:04d}.jpg"
        img = photo(rng, width, height)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        (root / DATASET / "img" / name).write_bytes(buf.tobytes())
        ann = annotation(rng, width, height, i)
        (root / DATASET / "ann" / f"{name}.json").write_text(json.dumps(ann))
    stamp.write_text(json.dumps(params))
    return root


def replicate_project(src: Path, root: Path, copies: int) -> Path:
    """A bigger project made of `copies` copies of every item of `src` (images hard-linked),
    for throughput and scaling runs."""
    params = {"version": GENERATOR_VERSION, "src": str(src), "copies": copies,
              "src_stamp": json.loads((src / ".complete.json").read_text())}
    stamp = root / ".complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / DATASET / "img").mkdir(parents=True)
    (root / DATASET / "ann").mkdir(parents=True)
    shutil.copy(src / "meta.json", root / "meta.json")
    for img in sorted((src / DATASET / "img").iterdir()):
        ann = src / DATASET / "ann" / f"{img.name}.json"
        for c in range(copies):
            name = f"{img.stem}_c{c}{img.suffix}"
            target = root / DATASET / "img" / name
            try:
                target.hardlink_to(img)
            except OSError:
                shutil.copy(img, target)
            shutil.copy(ann, root / DATASET / "ann" / f"{name}.json")
    stamp.write_text(json.dumps(params))
    return root


if __name__ == "__main__":
    import sys
    import time

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / ".data" / "try"
    t = time.perf_counter()
    build_project(out, 2, 1920, 1080, 1)
    print(f"built {out} in {time.perf_counter() - t:.2f}s")
    for p in sorted((out / DATASET / "img").iterdir()):
        print(p.name, p.stat().st_size, "bytes", f"{p.stat().st_size * 8 / (1920 * 1080):.2f} bpp")
