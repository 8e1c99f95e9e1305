"""Build the Supervisely fixture projects used by the golden tests.

Writes (replacing them):
- tests/data/sly_project/       every geometry, border crops, odd names, a nested dataset;
- tests/data/sly_many_classes/  300 classes, so class indices go past 255.

Runs in the oracle venv (it uses the real SDK, supervisely==6.74.51, to write meta.json and to
encode bitmaps exactly as the SDK writes them) and needs a folder of lossless sample photos
made by dump_skimage_photos.py. `run_supervisely_oracle.sh --rebuild-fixture` does both.
The fixture is committed: rebuilding it is only needed when it is changed on purpose, and
then the goldens must be regenerated too (the test checks the fixture hash in ORACLE.json).

Usage: python build_sly_fixture.py PHOTOS_DIR [REPO_ROOT]

Everything is deterministic (no randomness), so a rebuild gives the same annotations; image
bytes depend on the local OpenCV's JPEG/PNG encoders.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import sys
import unicodedata
import zlib
from pathlib import Path

import cv2
import numpy as np
import supervisely as sly

# --------------------------------------------------------------------------- photos


def load_photo(photos: Path, name: str) -> np.ndarray:
    """RGB uint8 array of a dumped sample photo."""
    bgr = cv2.imread(str(photos / f"{name}.png"), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"missing photo {name}.png in {photos}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def crop_resize(
    rgb: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]
) -> np.ndarray:
    """Crop rows/cols box=(top, left, height, width) then resize to size=(width, height)."""
    top, left, h, w = box
    return cv2.resize(rgb[top : top + h, left : left + w], size, interpolation=cv2.INTER_AREA)


def write_jpeg(path: Path, img: np.ndarray) -> None:
    data = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", data, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    path.write_bytes(buf.tobytes())


def write_png(path: Path, img: np.ndarray) -> None:
    if img.ndim == 3 and img.shape[2] == 4:
        data = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    elif img.ndim == 3:
        data = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    else:
        data = img
    ok, buf = cv2.imencode(".png", data, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    path.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------- bitmap encodings


def b64_sdk_bitmap(mask: np.ndarray) -> str:
    """base64(zlib(palette PNG with tRNS)) exactly as the SDK writes a Bitmap (RGBA on decode)."""
    return sly.Bitmap.data_2_base64(mask.astype(bool))


def b64_sdk_alpha(alpha: np.ndarray) -> str:
    """base64(zlib(mode L PNG)) exactly as the SDK writes an AlphaMask."""
    return sly.AlphaMask.data_2_base64(alpha.astype(np.uint8))


def b64_zlib_gray_png(gray: np.ndarray) -> str:
    """base64(zlib(8-bit grayscale PNG)); the SDK reads mask = value != 0."""
    ok, buf = cv2.imencode(".png", gray.astype(np.uint8))
    assert ok
    return base64.b64encode(zlib.compress(buf.tobytes())).decode()


def b64_plain_rgb_png(rgb: np.ndarray) -> str:
    """base64(RGB PNG) with no zlib layer; the SDK falls back to PIL and mask = any channel != 0."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def ellipse_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    return ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1.0


def radial_alpha(h: int, w: int, peak: int = 255) -> np.ndarray:
    """Alpha 0..peak falling off from the centre; zero outside the inscribed ellipse."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r = np.sqrt(((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2)
    return np.clip(np.floor(peak * (1.0 - r)), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- annotation objects


def obj(cls: str, geometry_type: str, **geometry) -> dict:
    d = {"classTitle": cls, "description": "", "tags": [], "geometryType": geometry_type}
    d.update(geometry)
    return d


def poly(cls: str, exterior, interior=(), gtype: str = "polygon") -> dict:
    return obj(
        cls,
        gtype,
        points={
            "exterior": [list(p) for p in exterior],
            "interior": [[list(p) for p in ring] for ring in interior],
        },
    )


def rect(cls: str, p1, p2, gtype: str = "rectangle") -> dict:
    return obj(cls, gtype, points={"exterior": [list(p1), list(p2)], "interior": []})


def line(cls: str, pts, gtype: str = "line") -> dict:
    return obj(cls, gtype, points={"exterior": [list(p) for p in pts], "interior": []})


def point(cls: str, x, y) -> dict:
    return obj(cls, "point", points={"exterior": [[x, y]], "interior": []})


def bitmap(cls: str, origin, data: str, gtype: str = "bitmap") -> dict:
    return obj(cls, gtype, bitmap={"origin": list(origin), "data": data})


def graph(cls: str, nodes: dict) -> dict:
    out = {}
    for key, val in nodes.items():
        x, y, *rest = val
        node = {"loc": [x, y]}
        if rest and rest[0] == "disabled":
            node["disabled"] = True
        out[key] = node
    return obj(cls, "graph", nodes=out)


CUBOID_KEYS = (
    "face1-topleft",
    "face1-topright",
    "face1-bottomright",
    "face1-bottomleft",
    "face2-topleft",
    "face2-topright",
    "face2-bottomright",
    "face2-bottomleft",
)


def cuboid(cls: str, face1, face2) -> dict:
    """face1/face2: 4 [x, y] corners each, in TL, TR, BR, BL order."""
    locs = list(face1) + list(face2)
    vertices = {k: {"loc": list(p)} for k, p in zip(CUBOID_KEYS, locs, strict=True)}
    return obj(cls, "cuboid_2d", vertices=vertices)


def multipoly(cls: str, parts) -> dict:
    return obj(
        cls,
        "multipolygon",
        parts=[
            {"exterior": [list(p) for p in ext], "interior": [[list(p) for p in r] for r in holes]}
            for ext, holes in parts
        ],
    )


def obb(cls: str, p1, p2, angle: float) -> dict:
    return obj(cls, "oriented_bbox", points=[list(p1), list(p2)], angle=angle)


def star(cx: float, cy: float, r: float, n: int = 5, step: int = 2) -> list[list[int]]:
    """A self-intersecting star polygon (pentagram for n=5, step=2), integer vertices."""
    pts = []
    for k in range(n):
        a = -math.pi / 2 + 2 * math.pi * ((k * step) % n) / n
        pts.append([round(cx + r * math.cos(a)), round(cy + r * math.sin(a))])
    return pts


def ann(w: int, h: int, objects: list[dict], tags=()) -> dict:
    return {
        "description": "",
        "size": {"height": h, "width": w},
        "tags": [{"name": t, "value": None} for t in tags],
        "objects": objects,
        "customBigData": {},
    }


# --------------------------------------------------------------------------- meta

POSE_TEMPLATE_JSON = {
    "nodes": {
        "head": {"label": "head", "loc": [10, 5], "color": "#FF0000"},
        "neck": {"label": "neck", "loc": [10, 15], "color": "#00FF00"},
        "lhand": {"label": "lhand", "loc": [2, 25], "color": "#0000FF"},
        "rhand": {"label": "rhand", "loc": [18, 25], "color": "#FFFF00"},
        # no colour: drawn in the label colour (class colour, or the mapped colour)
        "hip": {"label": "hip", "loc": [10, 35]},
    },
    "edges": [
        {"src": "head", "dst": "neck", "color": "#FF00FF"},
        {"src": "neck", "dst": "lhand", "color": "#00FFFF"},
        {"src": "neck", "dst": "rhand", "color": "#FF8000"},
        # no colour: drawn in the label colour
        {"src": "neck", "dst": "hip"},
    ],
}

# (title, shape, colour) in meta order: the machine index is the position from 1.
CLASSES = [
    ("person", "polygon", "#E53935"),
    ("box", "rectangle", "#FDD835"),
    ("road", "bitmap", "#3949AB"),
    ("smoke", "alpha_mask", "#8E24AA"),
    ("lane", "line", "#00ACC1"),
    ("pin", "point", "#FB8C00"),
    ("pose", "graph", "#43A047"),
    ("crate", "cuboid_2d", "#7CB342"),
    ("islands", "multipolygon", "#6D4C41"),
    ("tilted", "oriented_bbox", "#F06292"),
    ("misc", "any", "#9E9E9E"),
    ("cat", "polygon", "#FFB300"),
    ("unused", "rectangle", "#123456"),
    ("shadow", "polygon", "#000000"),
    ("stop sign", "rectangle", "#D81B60"),
]

SHAPE_TO_GEOMETRY = {
    "polygon": sly.Polygon,
    "rectangle": sly.Rectangle,
    "bitmap": sly.Bitmap,
    "alpha_mask": sly.AlphaMask,
    "line": sly.Polyline,
    "point": sly.Point,
    "graph": sly.GraphNodes,
    "cuboid_2d": sly.Cuboid2d,
    "multipolygon": sly.Multipolygon,
    "oriented_bbox": sly.OrientedBBox,
    "any": sly.AnyGeometry,
}


def build_meta_json(classes) -> dict:
    """meta.json as the SDK itself writes it (ProjectMeta.to_json), classes in the given order."""
    obj_classes = []
    for title, shape, color in classes:
        cfg = None
        if shape == "graph":
            cfg = sly.GraphNodes.config_from_json(POSE_TEMPLATE_JSON)
        obj_classes.append(
            sly.ObjClass(
                title, SHAPE_TO_GEOMETRY[shape], color=sly.color.hex2rgb(color), geometry_config=cfg
            )
        )
    tag_metas = [sly.TagMeta("difficult", sly.TagValueType.NONE, color=[170, 170, 170])]
    meta = sly.ProjectMeta(obj_classes=obj_classes, tag_metas=tag_metas)
    return meta.to_json()


# --------------------------------------------------------------------------- images + annotations


def project_items(photos: Path) -> dict[str, list[tuple[str, np.ndarray, str, dict]]]:
    """{dataset dir: [(image name, pixels, encoder, annotation json)]}."""
    astronaut = load_photo(photos, "astronaut")
    coffee = load_photo(photos, "coffee")
    chelsea = load_photo(photos, "chelsea")
    rocket = load_photo(photos, "rocket")
    hubble = load_photo(photos, "hubble_deep_field")

    W, H = 320, 240
    items: dict[str, list] = {"ds1": [], "ds1/datasets/child": []}

    # ---- 1. astronaut.jpg: overlaps, area order, holes, every fillable shape ---------------
    img = crop_resize(astronaut, (40, 0, 384, 512), (W, H))
    blob = ellipse_mask(50, 80)
    objects = [
        rect("box", [140, 60], [175, 95]),  # annotated before the big polygon that covers it
        poly(
            "person",
            [[90, 30], [230, 25], [270, 110], [225, 215], [100, 220], [55, 120]],
            [[[120, 140], [150, 135], [160, 170], [125, 180]]],
        ),
        bitmap("road", [200, 150], b64_sdk_bitmap(blob)),
        poly("person", [[20.7, 20.2], [60.9, 18.5], [70.4, 70.99], [15.2, 65.5]]),  # floats floor
        # same 10x10 pixels: polygon area (shoelace) 81 < rectangle area 100, so the SDK draws
        # the rectangle first and the polygon on top; a pixel-count area would tie instead
        poly("person", [[280, 10], [289, 10], [289, 19], [280, 19]]),
        rect("box", [280, 10], [289, 19]),
        poly("cat", [[10, 150], [70, 140], [80, 200], [20, 210]]),
        poly("cat", [[40, 170], [100, 160], [95, 230], [35, 225]]),
        poly("cat", [[25, 160], [45, 158], [44, 180], [27, 182]]),
        multipoly(
            "islands",
            [
                (
                    [[240, 30], [300, 30], [300, 80], [240, 80]],
                    [[[255, 45], [285, 45], [285, 65], [255, 65]]],
                ),
                ([[250, 90], [310, 95], [280, 130]], []),
            ],
        ),
        poly("person", star(185, 160, 32)),  # self-intersecting pentagram, inside the image
        obb("tilted", [110, 100], [170, 130], 0.5),
        line("lane", [[5, 235], [100, 190], [200, 235], [315, 180]]),
        point("pin", 160, 120),
        point("pin", 33.9, 44.5),
        poly("shadow", [[180, 190], [240, 190], [240, 230], [180, 230]]),
        rect("stop sign", [290, 200], [315, 235]),
        rect("box", [60.8, 100.3], [90.2, 130.9]),  # floats floor: (60,100)-(90,130)
        poly("misc", [[130, 200], [160, 200], [145, 228]]),  # 'any' class, polygon geometry
        poly(
            "person",
            [[240, 150], [310, 150], [310, 200], [240, 200]],
            [
                [[250, 160], [265, 160], [265, 175], [250, 175]],
                [[280, 165], [300, 165], [290, 190]],
            ],
        ),
    ]
    objects[1]["tags"] = [{"name": "difficult", "value": None}]
    items["ds1"].append(("astronaut.jpg", img, "jpg", ann(W, H, objects)))

    # ---- 2. img with space.jpg: keypoints, cuboids, lines, points, multipolygon, obb ---------
    img = crop_resize(coffee, (0, 33, 400, 533), (W, H))
    ring = np.zeros((40, 60), np.uint8)
    ring[ellipse_mask(40, 60)] = 7
    ring[5:35, 10:50][ellipse_mask(30, 40)] = 0
    ring[:, 28:32] = 255
    ring[18:22, :] = 1
    objects = [
        poly("person", [[20, 20], [300, 15], [310, 225], [15, 230]]),
        graph(
            "pose",
            {
                "head": (60, 40),
                "neck": (60, 70),
                "lhand": (30, 100),
                "rhand": (90, 100),
                "hip": (60, 130),
            },
        ),
        graph(
            "pose",
            {
                "head": (150, 40),
                "neck": (150, 70),
                "lhand": (120, 100, "disabled"),
                "rhand": (180, 100),
                "hip": (150, 130),
            },
        ),
        # a node outside the image: the SDK drops the whole graph at load time
        graph("pose", {"head": (100, 150), "neck": (100, 170), "rhand": (330, 190)}),
        # even a *disabled* node outside drops the whole graph
        graph("pose", {"head": (250, -5, "disabled"), "neck": (250, 20), "hip": (250, 60)}),
        # a subset of the template's nodes: only the head-neck edge exists
        graph("pose", {"head": (110, 190), "neck": (125, 215)}),
        cuboid(
            "crate",
            [[200, 60], [250, 60], [250, 110], [200, 110]],
            [[220, 40], [270, 40], [270, 90], [220, 90]],
        ),
        cuboid(
            "crate",
            [[220, 150], [280, 155], [275, 200], [215, 195]],
            [[195, 130], [255, 135], [250, 180], [190, 175]],
        ),
        # a vertex outside the image: dropped at load time like a graph
        cuboid(
            "crate",
            [[280, 10], [325, 10], [325, 40], [280, 40]],
            [[290, 0], [315, 0], [315, 30], [290, 30]],
        ),
        line("lane", [[10, 200], [300, 120]]),
        line("lane", [[10, 120], [300, 200], [200, 230], [30, 150]]),
        point("pin", 319, 239),  # last pixel: inside
        point("pin", 320, 100),  # x == width: outside, dropped
        point("pin", -1, 50),  # outside, dropped
        point("pin", 100, 200),
        point("pin", 250.99, 230.01),
        bitmap("road", [100, 150], b64_zlib_gray_png(ring)),  # zlib(grayscale PNG)
        obb("tilted", [280, 180], [340, 220], -0.3),  # crosses the border; never cropped
        obb("tilted", [-20, -10], [30, 20], 0.8),  # negative corners: floor, not truncation
        multipoly(
            "islands",
            [
                ([[290, 10], [340, 10], [340, 50], [290, 50]], []),  # crosses the right border
                ([[260, 60], [300, 60], [280, 90]], []),
            ],
        ),
    ]
    items["ds1"].append(("img with space.jpg", img, "jpg", ann(W, H, objects)))

    # ---- 3. ünï.côdé.jpg: load-time crop rules at the border --------------------------------
    img = crop_resize(chelsea, (0, 25, 300, 400), (W, H))
    part_out = np.zeros((60, 50), bool)
    part_out[ellipse_mask(60, 50)] = True
    objects = [
        # crossing x=0 at y=30.5 and y=33.5: shapely + Python round (banker's) -> 30 and 34
        poly("person", [[-1, 30], [1, 31], [60, 30], [60, 40], [1, 34], [-1, 33]]),
        # a U whose bottom bar is below the image: the crop splits it into two polygons
        poly(
            "person",
            [
                [100, 200],
                [120, 200],
                [120, 250],
                [140, 250],
                [140, 200],
                [160, 200],
                [160, 260],
                [100, 260],
            ],
        ),
        # self-intersecting bow-tie crossing the right border: buffer(0) + crop
        poly("person", [[280, 100], [330, 150], [330, 100], [280, 150]]),
        # a polygon with a hole crossing the top border
        poly(
            "person",
            [[180, -20], [260, -20], [260, 50], [180, 50]],
            [[[200, 10], [240, 10], [240, 30], [200, 30]]],
        ),
        # leaves and re-enters through the top: three pieces, coordinates floored
        line("lane", [[10, 100], [40, -20], [70, 100], [100, -30], [130, 100]]),
        line("lane", [[250, 200], [330, 180], [300, 230]]),
        rect("box", [290, 220], [340, 260]),  # clamped to (290,220)-(319,239)
        rect("box", [400, 10], [420, 30]),  # fully outside: dropped
        bitmap("road", [-10, 200], b64_sdk_bitmap(part_out)),  # partly outside: cropped
        bitmap("road", [330, 10], b64_sdk_bitmap(part_out)),  # fully outside: dropped
        point("pin", 330, 10),  # outside: dropped
        point("pin", 10.5, 230.7),
        poly("cat", [[150, 130], [200, 120], [210, 180], [160, 190]]),
        poly("cat", [[170, 140], [230, 150], [220, 200]]),
        poly("person", [[-50, -50], [-10, -50], [-30, -10]]),  # fully outside: dropped
        rect("box", [100.5, 150.5], [140.49, 170.51]),
        poly("person", [[300.9, 5.9], [319.9, 5.1], [319.99, 30.7]]),  # floats inside after floor
        point("pin", 0, 0),
    ]
    items["ds1"].append(
        (unicodedata.normalize("NFC", "ünï.côdé.jpg"), img, "jpg", ann(W, H, objects))
    )

    # ---- 4. a.b.c.jpeg: alpha masks and every bitmap encoding --------------------------------
    img = crop_resize(rocket, (0, 35, 427, 569), (W, H))
    plain = np.zeros((50, 50, 3), np.uint8)
    tri = np.tril(np.ones((50, 50), bool))
    plain[tri] = (0, 0, 5)
    plain[20:30, 5:15] = (9, 0, 0)
    plain[40:45, 0:50][tri[40:45, 0:50]] = (0, 1, 0)
    gray = np.zeros((60, 70), np.uint8)
    gray[5:25, 5:30] = 3
    gray[30:55, 10:60] = 128
    gray[10:50, 40:65] = 255
    gray[32:36, 20:50] = 0
    holes = ellipse_mask(50, 60)
    holes[15:35, 20:40] = False
    uniform = np.full((40, 60), 128, np.uint8)
    objects = [
        rect("box", [20, 20], [120, 100]),
        poly("person", [[60, 60], [200, 50], [220, 150], [80, 170]]),
        bitmap("smoke", [40, 40], b64_sdk_alpha(radial_alpha(80, 100)), gtype="alpha_mask"),
        bitmap("smoke", [150, 120], b64_sdk_alpha(uniform), gtype="alpha_mask"),
        bitmap("smoke", [280, 200], b64_sdk_alpha(radial_alpha(60, 60, 200)), gtype="alpha_mask"),
        bitmap("road", [230, 30], b64_plain_rgb_png(plain)),  # plain base64 PNG, no zlib
        bitmap("road", [10, 150], b64_zlib_gray_png(gray)),  # zlib(grayscale PNG)
        bitmap("road", [130, 170], b64_sdk_bitmap(holes)),  # SDK palette PNG with a hole
        rect("misc", [250, 100], [300, 140]),  # 'any' class, rectangle
        line("misc", [[250, 150], [310, 190]]),  # 'any' class, line
        bitmap("smoke", [100, 90], b64_sdk_alpha(radial_alpha(70, 90, 230)), gtype="alpha_mask"),
        poly("person", [[70, 70], [90, 70], [80, 90]]),
    ]
    items["ds1"].append(("a.b.c.jpeg", img, "jpg", ann(W, H, objects)))

    # ---- 5. empty.png: no objects (only an image tag) --------------------------------------
    img = crop_resize(chelsea, (40, 120, 240, 320), (160, 120))
    items["ds1"].append(("empty.png", img, "png", ann(160, 120, [], tags=["difficult"])))

    # ---- 6. rgba_cat.png: RGBA PNG, alpha dropped on read; three instances of one class -----
    rgb = crop_resize(coffee, (100, 200, 300, 400), (200, 150))
    alpha = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (150, 1))
    alpha[:, :40] = 0  # fully transparent, but with colours that IMREAD_COLOR keeps
    img = np.dstack([rgb, alpha])
    objects = [
        poly("cat", [[20, 20], [90, 30], [80, 100], [15, 90]]),
        poly("cat", [[60, 50], [150, 40], [160, 120], [70, 130]]),
        poly("cat", [[100, 10], [190, 15], [185, 70]]),
        rect("stop sign", [150, 100], [195, 145]),
        poly("shadow", [[5, 110], [60, 110], [60, 145], [5, 145]]),
    ]
    items["ds1"].append(("rgba_cat.png", img, "png", ann(200, 150, objects)))

    # ---- nested dataset ds1/datasets/child ------------------------------------------------
    g = cv2.cvtColor(crop_resize(hubble, (100, 100, 600, 800), (240, 180)), cv2.COLOR_RGB2GRAY)
    objects = [
        poly("person", [[20, 20], [120, 30], [100, 150], [30, 140]]),
        rect("box", [80, 60], [200, 120]),
        line("lane", [[0, 170], [239, 100]]),
        point("pin", 50, 50),
        point("pin", 200, 160),
        multipoly(
            "islands",
            [
                ([[150, 10], [230, 10], [230, 50]], []),
                ([[10, 160], [60, 160], [60, 175], [10, 175]], []),
            ],
        ),
        cuboid(
            "crate",
            [[150, 130], [190, 130], [190, 170], [150, 170]],
            [[165, 120], [205, 120], [205, 160], [165, 160]],
        ),
        graph(
            "pose",
            {
                "head": (200, 20),
                "neck": (200, 45),
                "lhand": (180, 70),
                "rhand": (220, 70),
                "hip": (200, 95, "disabled"),
            },
        ),
    ]
    items["ds1/datasets/child"].append(("gray.jpg", g, "jpg", ann(240, 180, objects)))
    img = crop_resize(astronaut, (0, 100, 300, 400), (240, 180))  # same name as in ds1
    objects = [
        poly("cat", [[30, 30], [120, 40], [110, 150]]),
        rect("box", [100, 80], [220, 170]),
        rect("stop sign", [0, 0], [239, 179]),
    ]
    items["ds1/datasets/child"].append(("astronaut.jpg", img, "jpg", ann(240, 180, objects)))
    return items


def many_classes_items(photos: Path) -> tuple[list, dict[str, list]]:
    """300 classes c001..c300 (odd: polygon, even: rectangle); indices > 255 are used."""
    classes = []
    for i in range(1, 301):
        shape = "polygon" if i % 2 else "rectangle"
        color = f"#{(i * 37) % 256:02X}{(i * 91) % 256:02X}{(i * 53 + 40) % 256:02X}"
        classes.append((f"c{i:03d}", shape, color))
    rocket = load_photo(photos, "rocket")
    coffee = load_photo(photos, "coffee")
    W, H = 64, 48
    m1 = [
        rect("c300", [0, 0], [40, 30]),
        rect("c256", [10, 10], [30, 25]),  # 256 = 0x100: a uint8 cast would make it background
        poly("c255", [[20, 5], [60, 5], [60, 40], [20, 40]]),
        poly("c001", [[5, 20], [25, 20], [15, 45]]),
        poly("c257", [[40, 20], [63, 30], [45, 47]]),
        poly("c299", [[50, 2], [58, 2], [54, 8]]),
        rect("c128", [0, 40], [63, 47]),
        rect("c258", [33, 33], [38, 38]),
    ]
    m2 = [  # only indices < 256: the file is still 16-bit, because the project has 300 classes
        rect("c002", [0, 0], [63, 47]),
        rect("c100", [5, 5], [25, 25]),
        poly("c151", [[30, 10], [60, 12], [50, 40]]),
        rect("c254", [40, 30], [55, 45]),
    ]
    items = {
        "ds": [
            ("m1.jpg", crop_resize(rocket, (0, 35, 427, 569), (W, H)), "jpg", ann(W, H, m1)),
            ("m2.jpg", crop_resize(coffee, (0, 33, 400, 533), (W, H)), "jpg", ann(W, H, m2)),
        ]
    }
    return classes, items


# --------------------------------------------------------------------------- writing


def write_project(root: Path, classes, items) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "meta.json").write_text(
        json.dumps(build_meta_json(classes), indent=4, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    for ds_dir, entries in items.items():
        (root / ds_dir / "img").mkdir(parents=True, exist_ok=True)
        (root / ds_dir / "ann").mkdir(parents=True, exist_ok=True)
        for name, pixels, enc, ann_json in entries:
            if enc == "jpg":
                write_jpeg(root / ds_dir / "img" / name, pixels)
            else:
                write_png(root / ds_dir / "img" / name, pixels)
            (root / ds_dir / "ann" / f"{name}.json").write_text(
                json.dumps(ann_json, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )


def check_with_sdk(root: Path) -> None:
    """Open the project with the SDK and load every annotation (raises on any problem)."""
    project = sly.Project(str(root), sly.OpenMode.READ)
    for ds in project.datasets:
        for name in sorted(ds.get_items_names()):
            paths = ds.get_item_paths(name)
            raw = json.loads(Path(paths.ann_path).read_text(encoding="utf-8"))
            a = sly.Annotation.load_json_file(paths.ann_path, project.meta)
            n_obj, n_lab = len(raw["objects"]), len(a.labels)
            print(f"  {ds.name}/{name}: {n_obj} objects -> {n_lab} labels after load")


def main() -> None:
    photos = Path(sys.argv[1])
    repo = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2]
    data = repo / "tests" / "data"
    write_project(data / "sly_project", CLASSES, project_items(photos))
    classes, items = many_classes_items(photos)
    write_project(data / "sly_many_classes", classes, items)
    for name in ("sly_project", "sly_many_classes"):
        print(name)
        check_with_sdk(data / name)


if __name__ == "__main__":
    main()
