"""Golden-file oracle: render the fixture projects with the REAL Supervisely SDK.

Runs ONLY in the oracle venv (supervisely==6.74.51, see run_supervisely_oracle.sh), never in
maskjob's own venv. It loads every annotation with `sly.Annotation.load_json_file`, so the SDK's
own parsing, flooring and load-time crop (reference/supervisely.md B.3-B.6) apply, and draws
with the SDK's own `geometry.draw` / `label.draw`. It writes goldens under
tests/golden/supervisely/<mode>/ in maskjob's output layout (relative to OUTPUT/supervisely/):

  app    export-as-masks app (tests/data/configs/app.yaml, thickness 2) on tests/data/sly_project:
         obj_class_to_machine_color.json, <ds>/masks_machine, masks_human (app style),
         masks_semantic_rgb, masks_instances/<stem>/<class>.png, <class>_01.png, ...
  app16  machine masks of tests/data/sly_many_classes (300 classes) as 16-bit grayscale PNGs
         (tests/data/configs/app16.yaml), plus obj_class_to_machine_color.json
  dtl    DTL/ml-nodes save_masks (tests/data/configs/dtl_save_masks.json) on sly_project:
         <ds>/masks_machine (RGB), masks_human ([original | green column | 50% overlay])

The app's and DTL's logic is re-implemented here from reading their sources (not copied); the
drawing itself is the SDK's. Where upstream is buggy we render the intended behaviour instead.
Each such DEVIATION is marked below and listed in tests/oracles/README.md.

Usage: python supervisely_oracle.py [--repo REPO_ROOT] [--mode app|app16|dtl ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import PIL
import shapely
import supervisely as sly
import yaml
from fixture_hash import FIXTURE_TREES, fixture_sha256
from PIL import Image
from supervisely._utils import generate_free_name

SDK_VERSION = "6.74.51"

# The five visible faces of a Cuboid2d, as the export-as-masks app lists them (its
# get_cuboid_sorted_points): front (face1), top, right, bottom, left. The back face (face2) is
# covered by the four side faces. Each face is one cv2.fillPoly with its 4 [x, y] corners.
CUBOID_FACES = (
    ("face1-topleft", "face1-topright", "face1-bottomright", "face1-bottomleft"),
    ("face1-topleft", "face2-topleft", "face2-topright", "face1-topright"),
    ("face1-topright", "face2-topright", "face2-bottomright", "face1-bottomright"),
    ("face1-bottomright", "face2-bottomright", "face2-bottomleft", "face1-bottomleft"),
    ("face1-bottomleft", "face2-bottomleft", "face2-topleft", "face1-topleft"),
)


# --------------------------------------------------------------------------- helpers


def fill_cuboid_faces(canvas: np.ndarray, geometry: sly.Cuboid2d, color) -> None:
    """DEVIATION (a), reference A.10.1: fill THIS cuboid's five faces.

    The app does this only in its human-mask branch; its machine/semantic/instance branches
    loop over a stale `faces_vertices` (the last cuboid of the human pass, or NameError).
    """
    nodes = geometry.nodes
    for face in CUBOID_FACES:
        pts = np.array([[nodes[k].location.col, nodes[k].location.row] for k in face], np.int32)
        cv2.fillPoly(canvas, [pts], color)


def fill_alpha_coverage(canvas: np.ndarray, geometry: sly.AlphaMask, color) -> None:
    """DEVIATION (b): an alpha mask as full coverage where alpha > 0, in `color`.

    The SDK alpha-blends (canvas*(1-a) + colour*a, truncated), which on an index canvas yields
    values that are not class ids. Used for index-valued outputs only: app masks_machine and
    masks_instances, DTL masks_machine. Human and semantic masks keep the SDK's blend.
    """
    region = geometry.to_bbox().get_cropped_numpy_slice(canvas)
    region[geometry.data > 0] = color


def strip_template_colours(config: dict) -> dict:
    """A graph template without per-node/per-edge colours: everything in the label colour."""
    cfg = json.loads(json.dumps(config))
    for edge in cfg.get("edges", []):
        edge.pop("color", None)
    for node in cfg.get("nodes", {}).values():
        node.pop("color", None)
    return cfg


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    """As sly.image.write / the DTL layer: RGB array -> BGR -> cv2.imwrite (3-channel PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert sly.image.write(str(path), rgb)


def write_gray_like_app(path: Path, rgb: np.ndarray) -> None:
    """As the app's convert2gray_and_save: write the RGB PNG with the SDK, re-open it with PIL,
    convert to mode L and save again (8-bit single channel; (i,i,i) -> i exactly)."""
    write_rgb_png(path, rgb)
    with Image.open(path) as im:
        gray = im.convert("L")
    gray.save(path)


def stem_of(item_name: str) -> str:
    """Image name without its last extension (the app: os.path.splitext(item_name)[0])."""
    return os.path.splitext(item_name)[0]


def iter_items(project: sly.Project, *, with_raw: bool = False):
    """(dataset dir relative to the project, item name, img path, Annotation[, raw JSON]),
    sorted by dataset dir and item name."""
    root = Path(project.directory)
    for ds in sorted(project.datasets, key=lambda d: d.directory):
        rel = Path(ds.directory).relative_to(root).as_posix()
        for name in sorted(ds.get_items_names()):
            paths = ds.get_item_paths(name)
            ann = sly.Annotation.load_json_file(paths.ann_path, project.meta)
            if with_raw:
                raw = json.loads(Path(paths.ann_path).read_text(encoding="utf-8"))
                yield rel, name, paths.img_path, ann, raw
            else:
                yield rel, name, paths.img_path, ann


def machine_colors(project: sly.Project) -> dict[str, list[int]]:
    """{class: [i, i, i]}, i from 1 in meta.json order (all classes, used or not)."""
    return {c.name: [i, i, i] for i, c in enumerate(project.meta.obj_classes, start=1)}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def by_area_desc(labels):
    """The app's machine-mask order: sorted by label.area, descending, Python's stable sort."""
    return sorted(labels, key=lambda lb: lb.area, reverse=True)


# --------------------------------------------------------------------------- mode: app


def draw_in_class_colour(canvas: np.ndarray, label: sly.Label, thickness: int) -> None:
    """`label` drawn in its class colour with its class's geometry config (the app's human and
    semantic masks); a cuboid by its 5 faces filled."""
    g = label.geometry
    if isinstance(g, sly.Cuboid2d):
        fill_cuboid_faces(canvas, g, label.obj_class.color)
    else:
        g.draw(canvas, color=label.obj_class.color, config=label.obj_class.geometry_config,
               thickness=thickness)


def app_item_masks(ann: sly.Annotation, img_path: str, settings: dict, colors: dict) -> dict:
    """The app's masks of one item as RGB arrays: {"machine", "human", "semantic": array or
    None (kind off), "instances": [(file name, array)]} (machine/instances before the app's
    conversion to gray)."""
    t = int(settings["thickness"])
    h, w = ann.img_size
    out: dict = {"machine": None, "human": None, "semantic": None, "instances": []}

    if settings.get("masks_machine"):
        canvas = np.zeros((h, w, 3), np.uint8)
        for label in by_area_desc(ann.labels):
            color = colors[label.obj_class.name]
            g = label.geometry
            if isinstance(g, sly.Cuboid2d):
                fill_cuboid_faces(canvas, g, color)  # DEVIATION (a)
            elif isinstance(g, sly.AlphaMask):
                fill_alpha_coverage(canvas, g, color)  # DEVIATION (b)
            else:
                g.draw(canvas, color=color, thickness=t)  # no config: graphs = nodes only
        out["machine"] = canvas

    if settings.get("masks_human"):
        raw = sly.image.read(img_path)  # cv2 IMREAD_COLOR -> RGB, alpha dropped
        overlay = raw.copy()
        for label in ann.labels:  # annotation order
            tmp = overlay.copy()
            draw_in_class_colour(tmp, label, t)  # cuboid faces: the app's human branch
            overlay = ((overlay.astype(np.uint16) + tmp.astype(np.uint16)) / 2).astype(np.uint8)
        out["human"] = np.concatenate([raw, overlay], axis=1)

    if settings.get("masks_semantic_rgb"):
        canvas = np.zeros((h, w, 3), np.uint8)
        for label in ann.labels:  # annotation order, no area sort
            draw_in_class_colour(canvas, label, t)  # cuboid faces: DEVIATION (a)
        out["semantic"] = canvas

    if settings.get("masks_instances"):
        used: list[str] = []
        for label in ann.labels:
            name = generate_free_name(used, f"{label.obj_class.name}.png", with_ext=True)
            used.append(name)
            canvas = np.zeros((h, w, 3), np.uint8)
            g = label.geometry
            if isinstance(g, sly.Cuboid2d):
                fill_cuboid_faces(canvas, g, [255, 255, 255])  # DEVIATION (a)
            elif isinstance(g, sly.AlphaMask):
                fill_alpha_coverage(canvas, g, [255, 255, 255])  # DEVIATION (b)
            else:
                g.draw(canvas, color=[255, 255, 255], thickness=t)  # no config
            out["instances"].append((name, canvas))
    return out


def render_app(project: sly.Project, settings: dict, out: Path) -> None:
    colors = machine_colors(project)
    if settings.get("masks_machine"):
        write_json(out / "obj_class_to_machine_color.json", colors)

    for ds_rel, item, img_path, ann in iter_items(project):
        ds_out = out / ds_rel
        stem = stem_of(item)
        masks = app_item_masks(ann, img_path, settings, colors)
        if masks["machine"] is not None:
            write_gray_like_app(ds_out / "masks_machine" / f"{stem}.png", masks["machine"])
        if masks["human"] is not None:
            write_rgb_png(ds_out / "masks_human" / f"{stem}.png", masks["human"])
        if masks["semantic"] is not None:
            write_rgb_png(ds_out / "masks_semantic_rgb" / f"{stem}.png", masks["semantic"])
        for name, canvas in masks["instances"]:
            write_gray_like_app(ds_out / "masks_instances" / stem / name, canvas)


# --------------------------------------------------------------------------- mode: app16


def render_app16(project: sly.Project, settings: dict, out: Path) -> None:
    """Machine masks for > 255 classes (the app cannot: cv2 saturates, numpy overflows).

    EXTENSION (documented): the app's rule (meta-order index from 1, area-descending stable
    order, no config, thickness) drawn by the SDK straight into a uint16 single-channel canvas
    with the scalar colour i, written as a 16-bit grayscale PNG. Cross-checked here against an
    independent per-label rendering (each label's SDK mask on its own canvas, then assigned).
    """
    t = int(settings["thickness"])
    colors = machine_colors(project)
    index = {name: c[0] for name, c in colors.items()}
    assert max(index.values()) > 255, "app16 needs a project with more than 255 classes"
    write_json(out / "obj_class_to_machine_color.json", colors)
    for ds_rel, item, _img_path, ann in iter_items(project):
        h, w = ann.img_size
        canvas = np.zeros((h, w), np.uint16)
        check = np.zeros((h, w), np.uint16)
        for label in by_area_desc(ann.labels):
            i = index[label.obj_class.name]
            g = label.geometry
            assert not isinstance(g, (sly.Cuboid2d, sly.AlphaMask)), "not used in this fixture"
            g.draw(canvas, color=i, thickness=t)
            alone = np.zeros((h, w), np.uint8)
            g.draw(alone, color=1, thickness=t)
            check[alone > 0] = i
        assert np.array_equal(canvas, check), f"uint16 SDK draw != per-label draw for {item}"
        path = out / ds_rel / "masks_machine" / f"{stem_of(item)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), canvas)
        back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16 and np.array_equal(back, canvas)


# --------------------------------------------------------------------------- mode: dtl


def dtl_color_mask(ann: sly.Annotation, mapping: dict, *, machine: bool) -> np.ndarray:
    """The DTL draw_colored_mask: annotation order, classes missing from `mapping` skipped,
    Label.draw (thickness 1, config = the class's geometry_config)."""
    h, w = ann.img_size
    canvas = np.zeros((h, w, 3), np.uint8)
    for label in ann.labels:
        color = mapping.get(label.obj_class.name)
        if color is None:
            continue
        g = label.geometry
        if isinstance(g, sly.Cuboid2d):
            fill_cuboid_faces(canvas, g, color)  # DEVIATION (a): 5 faces in the mapped colour
        elif machine and isinstance(g, sly.AlphaMask):
            fill_alpha_coverage(canvas, g, color)  # DEVIATION (b)
        elif machine and isinstance(g, sly.GraphNodes):
            # DEVIATION (c): edges + nodes all in the machine colour (the DTL leaks the
            # template's per-node/edge colours into the machine mask).
            g.draw(
                canvas,
                color,
                thickness=1,
                config=strip_template_colours(label.obj_class.geometry_config),
            )
        else:
            label.draw(canvas, color)
    return canvas


def dtl_item_masks(ann: sly.Annotation, img_path: str, settings: dict) -> dict:
    """The DTL layer's masks of one item as RGB arrays: {"machine", "human": array or None}."""
    out: dict = {"machine": None, "human": None}
    if settings.get("masks_machine"):
        machine_map = {k: list(v) for k, v in settings.get("gt_machine_color", {}).items()}
        out["machine"] = dtl_color_mask(ann, machine_map, machine=True)
    if settings.get("masks_human"):
        # the DTL's "hack to draw 'black' regions": pure black human colours become (1, 1, 1)
        human_map = {
            k: ([1, 1, 1] if max(v) == 0 else list(v))
            for k, v in settings.get("gt_human_color", {}).items()
        }
        fg = dtl_color_mask(ann, human_map, machine=False)
        orig = sly.image.read(img_path)  # the DTL reads with cv2.imread + BGR2RGB, same
        comb = (0.5 * fg + (1 - 0.5) * orig).astype(np.uint8)
        black = (fg[:, :, 0] == 0) & (fg[:, :, 1] == 0) & (fg[:, :, 2] == 0)
        comb[black] = orig[black]
        sep = np.zeros((orig.shape[0], 1, 3), np.uint8)
        sep[:, :, 1] = 255
        out["human"] = np.hstack([orig, sep, comb])
    return out


def render_dtl(project: sly.Project, settings: dict, out: Path) -> None:
    for ds_rel, item, img_path, ann in iter_items(project):
        stem = stem_of(item)
        masks = dtl_item_masks(ann, img_path, settings)
        for kind in ("machine", "human"):
            if masks[kind] is not None:
                write_rgb_png(out / ds_rel / f"masks_{kind}" / f"{stem}.png", masks[kind])


# --------------------------------------------------------------------------- main

MODES = {
    # mode: (fixture project, config file, renderer)
    "app": ("tests/data/sly_project", "tests/data/configs/app.yaml", render_app),
    "app16": ("tests/data/sly_many_classes", "tests/data/configs/app16.yaml", render_app16),
    "dtl": ("tests/data/sly_project", "tests/data/configs/dtl_save_masks.json", render_dtl),
}


def load_settings(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    if data.get("action") == "save_masks":
        return data["settings"]
    return data["supervisely"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    ap.add_argument("--mode", action="append", choices=sorted(MODES))
    args = ap.parse_args()
    repo = args.repo.resolve()
    installed = metadata.version("supervisely")
    if installed != SDK_VERSION:
        raise SystemExit(f"oracle needs supervisely=={SDK_VERSION}, found {installed}")
    golden_root = repo / "tests" / "golden" / "supervisely"
    modes = args.mode or sorted(MODES)
    for mode in modes:
        project_rel, config_rel, render = MODES[mode]
        # read from a temp copy: the SDK must never write into the fixture
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "project"
            shutil.copytree(repo / project_rel, src)
            project = sly.Project(str(src), sly.OpenMode.READ)
            out = golden_root / mode
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            render(project, load_settings(repo / config_rel), out)
        recompress_pngs(out)
        n = sum(1 for p in out.rglob("*") if p.is_file())
        print(f"{mode}: {n} golden files in {out.relative_to(repo)}")

    oracle_json = golden_root / "ORACLE.json"
    info = json.loads(oracle_json.read_text()) if oracle_json.exists() else {}
    info.update(
        {
            "generator": "tests/oracles/run_supervisely_oracle.sh",
            "supervisely": installed,
            "opencv": cv2.__version__,
            "opencv_dist": next(
                (d for d in ("opencv-python", "opencv-python-headless") if _has_dist(d)), None
            ),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "shapely": shapely.__version__,
            "python": platform.python_version(),
            "fixture_trees": list(FIXTURE_TREES),
            "fixture_sha256": fixture_sha256(repo),
            "modes": {m: {"project": MODES[m][0], "config": MODES[m][1]} for m in sorted(MODES)},
        }
    )
    write_json(oracle_json, info)
    print(f"wrote {oracle_json.relative_to(repo)}")


def recompress_pngs(root: Path) -> None:
    """Re-encode every golden PNG with zlib level 9 to keep the repo small. Lossless: the
    decoded array (dtype, channels, values) is checked to be identical. Tests compare decoded
    pixels only, never PNG bytes, so the encoder used here does not matter."""
    for path in sorted(root.rglob("*.png")):
        before = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        ok, buf = cv2.imencode(".png", before, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        after = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        assert after.dtype == before.dtype and np.array_equal(after, before), path
        path.write_bytes(buf.tobytes())


def _has_dist(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
