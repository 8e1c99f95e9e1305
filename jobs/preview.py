"""`OUTPUT/preview.html`: a look at the result, in one self-contained page that opens offline.

Written at finalize (jobs/finalize.py), from what the run already has: the summary (pixel
totals per class: an inline SVG bar chart), the class table, and a sample of a few items
(evenly spread over the manifest, picked in the one finalize pass) whose mask is read back
from the outputs - the first requested format whose `preview_mask` finds one (the formats own
what they show) - and shown beside the image with the mask over it. Thumbnails are inline
base64 JPEGs; nothing is fetched when the page opens. Small: a dozen thumbnails, never the
whole dataset.
Images come from the input (`inputs.image.key` of the entry, under the input URL); when the
input cannot be read back (secrets given as storage options are not kept), the mask is shown
alone. The driver never decodes a full-size input image: every image's size is read from its
header first (`limits.check_image_header`, the workers' budget); a JPEG is decoded reduced
(libjpeg DCT scaling, 1/2 to 1/8, as Pillow's draft mode), any other type only when it is at
most PREVIEW_DECODE_PIXELS (else the mask is shown alone).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from maskcore.errors import ItemError
from maskcore.formats import FORMATS, INPUT_FORMATS
from maskcore.formats.base import FinalEntry, PreviewMask
from maskcore.limits import DEFAULT_LIMITS, check_image_header
from maskcore.palette import voc_color

from .storage import Root

log = logging.getLogger("maskjob")

PREVIEW_FILE = "preview.html"
SAMPLES = 12
THUMB = 320  # longest side of a thumbnail, pixels
MAX_ZOOM = 3.0  # small images are enlarged up to this factor
MAX_BARS = 60
PREVIEW_DECODE_PIXELS = 16_000_000  # a non-JPEG image is decoded whole only up to this size


@dataclass
class Sampler:
    """Up to `limit` exported entries spread evenly over the manifest, in one pass and constant
    memory without knowing the total: every `stride`-th is kept; when 2 x `limit` are kept,
    every other one is dropped and the stride doubles. Keeps the raw manifest lines."""

    limit: int = SAMPLES
    stride: int = 1
    seen: int = 0
    kept: list[bytes] = field(default_factory=list)

    def offer(self, entry: FinalEntry, line: bytes) -> None:
        if not entry.exported or not entry.outputs:
            return
        if self.seen % self.stride == 0:
            self.kept.append(line)
            if len(self.kept) >= 2 * self.limit:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.seen += 1

    @property
    def picked(self) -> list[dict[str, Any]]:
        step = max(1, len(self.kept) // self.limit)
        return [json.loads(line) for line in self.kept[::step][:self.limit]]


# ---------------------------------------------------------------------------- masks back
def _mask_of(dest: Root, entry: Mapping[str, Any], formats: Sequence[str]
             ) -> PreviewMask | None:
    """('index', HxW class indices) or ('bgr', HxWx3 colours) from the entry's outputs: the
    first requested format that shows one."""
    keys = [o["key"] for o in entry.get("outputs", [])]
    for name in formats:
        found = FORMATS[name].preview_mask(keys, dest.read)
        if found is not None:
            return found
    return None


REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
           (2, cv2.IMREAD_REDUCED_COLOR_2), (1, cv2.IMREAD_COLOR))


def thumb_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of a thumbnail: longest side THUMB, small images enlarged at most
    MAX_ZOOM times."""
    scale = min(MAX_ZOOM, THUMB / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _image_of(source: Root | None, entry: Mapping[str, Any], shape: tuple[int, int],
              exif: bool = True) -> np.ndarray | None:
    """The entry's input image, decoded at a reduced size (DCT scaling for JPEG) that is still
    at least the thumbnail's, turned by its EXIF orientation when the input's tool turns it
    (`exif`, the reader's EXIF; the other way when only that one has the mask's size, as
    `ItemContext.image` does); None when it cannot be read or is not the mask's size."""
    key = (entry.get("inputs", {}).get("image") or {}).get("key")
    if source is None or not key:
        return None
    h, w = shape
    try:
        data = source.read(key, max_bytes=DEFAULT_LIMITS.max_object_bytes)
        iw, ih = check_image_header(data, DEFAULT_LIMITS, what=f"image {key}")
    except (OSError, ValueError, ItemError) as e:
        log.info("preview: image %s not read back (%s)", key, e)
        return None
    if (iw, ih) not in ((w, h), (h, w)):  # not the mask's size: known before decoding
        return None
    factor, flag = next((f, fl) for f, fl in REDUCED if max(h, w) // f >= THUMB or f == 1)
    if data[:2] != b"\xff\xd8" and iw * ih > PREVIEW_DECODE_PIXELS:
        return None  # only JPEG decodes reduced; a big PNG/TIFF/... is not decoded here
    for turned in (exif, not exif):
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8),
                               flag if turned else flag | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error as e:
            log.info("preview: image %s not decoded (%s)", key, e)
            return None
        if img is not None and abs(img.shape[0] - h / factor) <= 1 \
                and abs(img.shape[1] - w / factor) <= 1:
            return img
        if img is None or iw == ih:  # a square image has the mask's size both ways
            return None
    return None


def _lut(classes: list[dict[str, Any]]) -> np.ndarray:
    """Class index -> BGR colour (background black; unknown indices get VOC colours)."""
    n = max([c["index"] for c in classes] + [255]) + 1
    lut = np.array([voc_color(i)[::-1] for i in range(n)], np.uint8)
    lut[0] = 0
    for c in classes:
        lut[c["index"]] = c["color"][::-1]
    return lut


def _data_uri(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("thumbnail encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def panels(image: np.ndarray | None, kind: str, mask: np.ndarray, lut: np.ndarray
           ) -> list[np.ndarray]:
    """[image thumbnail, overlay thumbnail] (or [coloured mask] without an image)."""
    size = thumb_size(*mask.shape[:2])
    small = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    if kind == "index":
        colors, covered = lut[np.minimum(small, len(lut) - 1)], small > 0
    else:
        colors, covered = small, small.any(axis=2)
    if image is None:
        return [colors]
    shrink = image.shape[0] > size[1]
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    over = img.copy()
    over[covered] = ((img[covered].astype(np.uint16) + colors[covered]) >> 1).astype(np.uint8)
    return [img, over]


# ---------------------------------------------------------------------------- page
def bar_chart(class_pixels: Mapping[str, int], colors: Mapping[str, list[int]]) -> str:
    """An inline SVG: one horizontal bar per class, longest first, with pixel counts."""
    rows = sorted(class_pixels.items(), key=lambda kv: (-kv[1], kv[0]))
    hidden = len(rows) - MAX_BARS
    rows = rows[:MAX_BARS]
    if not rows:
        return "<p>No class pixels were painted.</p>"
    top = max(v for _, v in rows) or 1
    total = sum(class_pixels.values()) or 1
    label_w, bar_w, row_h = 220, 520, 22
    height = row_h * len(rows) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 200}" '
           f'height="{height}" role="img" aria-label="pixels per class">']
    for k, (name, value) in enumerate(rows):
        y = 5 + k * row_h
        w = max(1, round(bar_w * value / top))
        r, g, b = colors.get(name, voc_color(k + 1))
        label = html.escape(name if len(name) <= 32 else name[:31] + "…")
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" '
                   f'font-size="13">{label}</text>')
        out.append(f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 6}" '
                   f'fill="rgb({r},{g},{b})" stroke="#333" stroke-width="0.5"/>')
        out.append(f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="12">'
                   f'{value:,} ({100 * value / total:.1f}%)</text>')
    out.append("</svg>")
    if hidden > 0:
        out.append(f"<p>… and {hidden} more classes.</p>")
    return "".join(out)


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table.s td{padding:2px 12px 2px 0}
.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px;border-radius:4px}
figure img{display:inline-block;margin-right:4px;vertical-align:top}
figcaption{font-size:12px;margin-top:4px;max-width:660px;word-break:break-all}
.fail td{font-size:12px;padding:2px 8px;border-bottom:1px solid #eee}
"""


def render_page(meta: Mapping[str, Any], summary: Mapping[str, Any],
                figures: list[tuple[str, list[str], list[str]]]) -> str:
    """The HTML page. `figures`: (caption, thumbnail data URIs, classes present)."""
    classes = meta.get("classes") or []
    colors = {c["name"]: c["color"] for c in classes}
    esc = html.escape
    rows = [("output", meta.get("output", {}).get("url", "")),
            ("formats", ", ".join(meta.get("formats", []))),
            ("items", summary.get("items", 0)), ("ok", summary.get("ok", 0)),
            ("unchanged", summary.get("unchanged", 0)), ("failed", summary.get("failed", 0)),
            ("instances", summary.get("instances", 0)), ("classes", len(classes)),
            ("seconds", meta.get("seconds", ""))]
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>maskjob preview</title><style>", STYLE, "</style></head><body>",
             "<h1>maskjob export preview</h1><table class='s'>"]
    parts += [f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in rows]
    parts.append("</table><h2>Pixels per class</h2>")
    parts.append(bar_chart(summary.get("class_pixels", {}), colors))
    parts.append(f"<h2>Sample of {len(figures)} items (image, mask over it)</h2>"
                 "<div class='grid'>")
    for caption, uris, present in figures:
        imgs = "".join(f"<img src='{u}' alt=''>" for u in uris)
        names = ", ".join(present) or "no class"
        parts.append(f"<figure>{imgs}<figcaption><b>{esc(caption)}</b><br>{esc(names)}"
                     "</figcaption></figure>")
    parts.append("</div>")
    failures = summary.get("failures", [])
    if failures:
        parts.append(f"<h2>Failed items ({summary.get('failed', len(failures))})</h2>"
                     "<table class='fail'>")
        parts += [f"<tr><td>{esc(f['dataset'])}/{esc(f['item'])}</td>"
                  f"<td>{esc(f['error'])}</td></tr>" for f in failures[:50]]
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def _input_root(meta: Mapping[str, Any]) -> Root | None:
    url = meta.get("input", {}).get("url")
    if not url:
        return None
    opts = {k: v for k, v in (meta.get("input", {}).get("storage_options") or {}).items()
            if v != "***"}
    return Root(url, opts)


def write_preview(dest: Root, meta: Mapping[str, Any], summary: Mapping[str, Any],
                  samples: list[dict[str, Any]]) -> None:
    """Build and write OUTPUT/preview.html. Never fails the export: a sample whose outputs
    cannot be read back is left out (and logged)."""
    classes = meta.get("classes") or []
    lut = _lut(classes)
    order = {c["name"]: c["index"] for c in classes}
    source = _input_root(meta)
    reader = INPUT_FORMATS.get(meta.get("input", {}).get("format", ""))
    exif = reader.EXIF if reader is not None else True
    figures = []
    for entry in samples:
        caption = f"{entry.get('dataset', '')}/{entry.get('item', '')}"
        try:
            found = _mask_of(dest, entry, meta.get("formats", []))
            if found is None:
                continue
            kind, mask = found
            image = _image_of(source, entry, mask.shape[:2], exif)
            uris = [_data_uri(p) for p in panels(image, kind, mask, lut)]
        except (OSError, ValueError, KeyError, ItemError) as e:  # a bad key: left out
            log.info("preview: %s left out (%s)", caption, e)
            continue
        present = sorted(entry.get("class_pixels", {}), key=lambda n: (order.get(n, 0), n))
        figures.append((caption, uris, present))
    dest.write(PREVIEW_FILE, render_page(meta, summary, figures).encode())
