"""PNG encoders: maskjob's (maskcore/encode.py, ISA-L deflate) vs the zlib/cv2 baseline they
replaced, on the mask kinds a 1080p Supervisely/CVAT export writes. One command:

    .venv/bin/python benchmarks/bench_png.py [--rounds R]

Inputs are built from a photo-like 1080p image (benchmarks/datagen.py) and ~40 filled polygons:
class index (uint8), class index (uint16, >255 classes), paletted class+object masks (CVAT),
one 1-bit instance mask per object, the app-style human mask (image | overlay). For each kind:
median ms of baseline and ours (same run, interleaved), the speed ratio, both sizes, and a
check that both decode (cv2.IMREAD_UNCHANGED) to the same pixels. Prints this process's peak
RSS at the end.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen

from maskcore import encode


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def baseline_palettes(index: np.ndarray, palettes: list[np.ndarray]) -> list[bytes]:
    """The previous writer: zlib level 1, Z_RLE."""
    h, w = index.shape
    raw = np.zeros((h, w + 1), np.uint8)
    raw[:, 1:] = index
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = _chunk(b"IDAT", z.compress(raw.tobytes()) + z.flush())
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    out = []
    for p in palettes:
        pal = np.zeros((256, 3), np.uint8)
        pal[:len(p)] = p
        out.append(b"".join((b"\x89PNG\r\n\x1a\n", ihdr, _chunk(b"PLTE", pal.tobytes()), idat,
                             _chunk(b"IEND", b""))))
    return out


def baseline_bilevel(frame: np.ndarray) -> bytes:
    h, w = frame.shape
    raw = np.zeros((h, 1 + (w + 7) // 8), np.uint8)
    raw[:, 1:] = np.packbits(frame != 0, axis=1)
    return b"".join((b"\x89PNG\r\n\x1a\n",
                     _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)),
                     _chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)), _chunk(b"IEND", b"")))


def cv2_png(a: np.ndarray) -> bytes:
    return cv2.imencode(".png", a)[1].tobytes()


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    image = datagen.photo(rng, 1920, 1080)
    index = np.zeros((1080, 1920), np.uint8)
    instances = []
    for k in range(40):
        pts = (rng.random((9, 2)) * (300, 200) + rng.random(2) * (1600, 860)).astype(np.int32)
        cv2.fillPoly(index, [pts], k % 12 + 1)
        frame = np.zeros_like(index)
        cv2.fillPoly(frame, [pts], 255)
        instances.append(frame)
    overlay = image.copy()
    covered = index > 0
    overlay[covered] = (overlay[covered].astype(np.uint16) + 90) // 2
    return {"index8": index, "index16": index.astype(np.uint16) * 257,
            "human": np.hstack([image, overlay]), "instances": np.stack(instances)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    data = inputs()
    pal = [np.random.default_rng(1).integers(0, 255, (256, 3), dtype=np.uint8)] * 2
    kinds: dict[str, tuple[Callable[[], list[bytes]], Callable[[], list[bytes]]]] = {
        "class index uint8 (machine mask)": (lambda: [cv2_png(data["index8"])],
                                             lambda: [encode.png(data["index8"])]),
        "class index uint16": (lambda: [cv2_png(data["index16"])],
                               lambda: [encode.png(data["index16"])]),
        "paletted class+object (CVAT)": (lambda: baseline_palettes(data["index8"], pal),
                                         lambda: encode.png_palettes(data["index8"], pal)),
        "40 instance masks, 1-bit": (lambda: [baseline_bilevel(f) for f in data["instances"]],
                                     lambda: [encode.png_bilevel(f) for f in data["instances"]]),
        "human mask (image | overlay)": (lambda: [cv2_png(data["human"])],
                                         lambda: [encode.png_photo(data["human"])]),
    }
    print(f"{'kind':34} {'baseline ms':>11} {'ours ms':>8} {'ratio':>6} {'base kB':>8} "
          f"{'ours kB':>8} same pixels")
    ok = True
    for name, (base, ours) in kinds.items():
        tb, to = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            b = base()
            tb.append(time.perf_counter() - t)
            t = time.perf_counter()
            o = ours()
            to.append(time.perf_counter() - t)
        same = all(np.array_equal(cv2.imdecode(np.frombuffer(x, np.uint8), cv2.IMREAD_UNCHANGED),
                                  cv2.imdecode(np.frombuffer(y, np.uint8), cv2.IMREAD_UNCHANGED))
                   for x, y in zip(b, o, strict=True))
        ok &= same
        mb, mo = statistics.median(tb) * 1000, statistics.median(to) * 1000
        print(f"{name:34} {mb:11.1f} {mo:8.1f} {mb / mo:5.1f}x {sum(map(len, b)) / 1e3:8.0f} "
              f"{sum(map(len, o)) / 1e3:8.0f} {same}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
