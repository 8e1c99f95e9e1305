"""Build the CVAT fixture task tests/data/cvat_task/ (annotations.xml + images/).

Deterministic (seeded); run with maskjob's venv from the repo root:
    .venv/bin/python tests/oracles/datumaro_fixture.py
Photos are reused from tests/data/sly_project (public-domain/CC0 scikit-image samples); the
300-box image is generated. Coordinates are written as CVAT writes them ("{:.2f}"), with many
on pycocotools' snap boundaries (x.10, x.30, x.50, x.70, x.90).

Every shape kind of CVAT for images 1.1: polygons (float points, outside the image, tiny),
boxes (plain, rotated by several angles, partly outside), ellipses (rotated, half-integer radii
that round half to even), masks (RLE), polylines, points, skeleton-free tags; overlaps decided
by z_order and by input order at equal z_order (including CVAT's rotated-boxes-last quirk);
groups merged under their largest member; a `background` label whose shapes erase; sub-folder
ids with dots; a second subset; an image without annotations; an image with points only; an
image with 300 instances (> 255).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "cvat_task"
PHOTOS = REPO / "tests" / "data" / "sly_project" / "ds1"

LABELS = [("person", "#fa3253"), ("car", "#33ddff"), ("Zebra", "#b83df5"),
          ("tree", "#3df53d"), ("unused", "#ff6a4d"), ("background", "#000000")]


def f2(v: float) -> str:
    return f"{v:.2f}"


def pts(points) -> str:
    return ";".join(f"{f2(x)},{f2(y)}" for x, y in points)


class Image:
    def __init__(self, iid: int, name: str, w: int, h: int, subset: str | None = None):
        self.head = (f'  <image id="{iid}" name={quoteattr(name)} width="{w}" height="{h}"'
                     + (f' subset="{subset}"' if subset else "") + ">")
        self.lines: list[str] = []

    def shape(self, tag: str, label: str, z: int = 0, group: int = 0, **attrs) -> None:
        a = {"label": label, "source": "manual", "occluded": "0", **attrs, "z_order": str(z)}
        if group:
            a["group_id"] = str(group)
        body = " ".join(f"{k}={quoteattr(str(v))}" for k, v in a.items())
        self.lines.append(f"    <{tag} {body}>\n    </{tag}>")

    def polygon(self, label, points, z=0, group=0):
        self.shape("polygon", label, z, group, points=pts(points))

    def box(self, label, x0, y0, x1, y1, z=0, group=0, rotation=0.0):
        extra = {"rotation": f2(rotation)} if rotation else {}
        self.shape("box", label, z, group, xtl=f2(x0), ytl=f2(y0), xbr=f2(x1), ybr=f2(y1),
                   **extra)

    def ellipse(self, label, cx, cy, rx, ry, z=0, group=0, rotation=0.0):
        extra = {"rotation": f2(rotation)} if rotation else {}
        self.shape("ellipse", label, z, group, cx=f2(cx), cy=f2(cy), rx=f2(rx), ry=f2(ry),
                   **extra)

    def mask(self, label, left, top, m: np.ndarray, z=0, group=0):
        flat = m.astype(bool).ravel()
        runs, cur, n = [], False, 0
        for v in flat:
            if v == cur:
                n += 1
            else:
                runs.append(n)
                cur, n = v, 1
        runs.append(n)
        self.shape("mask", label, z, group, rle=", ".join(map(str, runs)), left=left, top=top,
                   width=m.shape[1], height=m.shape[0])

    def xml(self) -> str:
        if not self.lines:
            return self.head[:-1] + ">\n  </image>"
        return "\n".join([self.head, *self.lines, "  </image>"])


def random_polygon(rng, cx, cy, r, n):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.4 * r, r, n)
    # snap to 0.1 steps so that many vertices sit on pycocotools' 0.2-grid boundaries
    return [(round(cx + q * np.cos(a), 1), round(cy + q * np.sin(a), 1))
            for a, q in zip(angles, radii, strict=True)]


def build() -> None:
    rng = np.random.default_rng(20240611)
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "images" / "many").mkdir(parents=True)
    shutil.copy(PHOTOS / "img" / "astronaut.jpg", OUT / "images" / "astronaut.jpg")
    (OUT / "images" / "Train" / "dir" / "sub").mkdir(parents=True)
    shutil.copy(PHOTOS / "img" / "a.b.c.jpeg",
                OUT / "images" / "Train" / "dir" / "sub" / "img.with.dots.jpg")
    shutil.copy(PHOTOS / "img" / "empty.png", OUT / "images" / "empty.png")
    shutil.copy(PHOTOS / "datasets" / "child" / "img" / "gray.jpg", OUT / "images" /
                "points_only.jpg")
    tiny = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(OUT / "images" / "many" / "boxes300.png"), tiny)

    images = []
    # ---- 1. astronaut.jpg 320x240: every kind, z_order, groups, background erasing
    a = Image(0, "astronaut.jpg", 320, 240)
    a.polygon("person", [(12.3, 5.1), (140.7, 9.9), (120.5, 150.3), (30.9, 130.7)], z=0)
    a.box("car", 20.5, 40.3, 90.7, 100.1, z=1)  # above the person
    a.box("Zebra", 60.1, 60.9, 180.3, 120.5, z=0, rotation=30.0)  # rotated: painted last at z 0
    a.polygon("tree", [(100.1, 70.3), (200.9, 80.7), (150.5, 140.1)], z=0)  # under the Zebra box
    a.ellipse("car", 250.3, 60.5, 40.5, 20.5, z=0, rotation=15.0)
    a.ellipse("person", 250.0, 150.0, 11.5, 12.5, z=2)  # half radii: round half to even
    m = np.zeros((30, 40), bool)
    m[5:25, 3:30] = True
    m[10:15, 10:20] = False
    a.mask("tree", 200, 190, m, z=1)
    # a group: car (small) + person (large) -> all person, z of the person
    a.polygon("car", [(10.5, 160.5), (40.5, 160.5), (40.5, 190.5), (10.5, 190.5)], group=3, z=4)
    a.polygon("person", [(30.7, 170.1), (110.3, 170.9), (100.5, 235.7), (25.1, 230.3)], group=3,
              z=0)
    a.polygon("Zebra", [(400.0, 10.0), (450.0, 10.0), (420.0, 50.0)])  # outside: empty mask
    a.box("car", 290.5, 200.5, 340.5, 260.5, z=0)  # partly outside
    a.polygon("background", [(60.5, 20.5), (80.5, 20.5), (70.5, 60.5)], z=5)  # erases
    a.shape("polyline", "car", 3, 0, points=pts([(5, 5), (300, 230)]))
    a.shape("points", "person", 3, 0, points=pts([(7, 7), (8.5, 9.5)]))
    for k in range(6):
        poly = random_polygon(rng, 60 + 40 * k, 215, 18, 7)
        a.polygon(["person", "car", "Zebra", "tree"][k % 4], poly, z=int(rng.integers(-1, 2)))
    images.append(a)

    # ---- 2. dir/sub/img.with.dots.jpg 320x240 in subset Train
    d = Image(1, "dir/sub/img.with.dots.jpg", 320, 240, subset="Train")
    d.box("person", 10.1, 10.9, 150.3, 110.7, rotation=45.5)
    d.box("car", 40.5, 40.5, 200.5, 90.5)  # same z, later in input: on top of the person
    d.box("tree", 150.2, 120.8, 300.4, 230.6, rotation=-15.25)
    d.box("Zebra", 250.0, 20.0, 310.0, 60.0, rotation=90.0)
    d.ellipse("Zebra", 80.5, 180.5, 60.5, 30.5, rotation=-33.3, group=7)
    d.polygon("car", [(60.1, 170.3), (90.9, 170.3), (90.9, 190.7)], group=7)
    d.box("person", 120.9, 150.1, 140.3, 170.7, group=7, z=1)
    for k in range(10):
        poly = random_polygon(rng, rng.uniform(20, 300), rng.uniform(20, 220), 25, 9)
        d.polygon(["person", "car", "Zebra", "tree"][k % 4], poly, z=int(rng.integers(0, 3)),
                  group=int(rng.choice([0, 0, 11, 12])))
    mm = rng.random((12, 17)) > 0.4
    d.mask("person", 290, 200, mm, z=3)
    images.append(d)

    # ---- 3. empty.png: no annotations; 4. points only
    images.append(Image(2, "empty.png", 160, 120))
    p = Image(3, "points_only.jpg", 240, 180)
    p.shape("points", "tree", 0, 0, points=pts([(10, 10), (20.5, 30.5), (100, 100)]))
    p.shape("polyline", "car", 0, 0, points=pts([(1, 1), (50, 60), (100, 20)]))
    images.append(p)

    # ---- 5. 300 instances in a 40x30 image
    b = Image(4, "many/boxes300.png", 40, 30)
    for k in range(300):
        x, y = float(rng.integers(0, 38)), float(rng.integers(0, 28))
        b.box(["person", "car", "Zebra", "tree"][k % 4], x, y, x + float(rng.integers(1, 4)),
              y + float(rng.integers(1, 4)))
    images.append(b)

    labels = "\n".join(
        f"      <label>\n        <name>{n}</name>\n        <color>{c}</color>\n"
        "        <type>any</type>\n        <attributes>\n        </attributes>\n      </label>"
        for n, c in LABELS)
    xml = ("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<annotations>\n  <version>1.1</version>\n"
           "  <meta>\n    <task>\n      <id>7</id>\n      <name>maskjob fixture</name>\n"
           f"      <size>{len(images)}</size>\n      <mode>annotation</mode>\n"
           f"      <labels>\n{labels}\n      </labels>\n    </task>\n  </meta>\n"
           + "\n".join(i.xml() for i in images) + "\n</annotations>\n")
    (OUT / "annotations.xml").write_text(xml, encoding="utf-8")
    print(f"wrote {OUT} ({len(images)} images)")


if __name__ == "__main__":
    build()
