"""SPEC 3: an item whose annotation lacks the image size takes it from its image's header
(datumaro's reading of CVAT for images 1.1 and COCO). Real inputs where some images lack
width/height: the sized items export exactly as before, the size-less ones exactly as if their
true size had been written, an image whose header claims an absurd size is refused from the
header (never decoded), a size-less item without its image file fails alone with its reason."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from jobs.cli import run
from jobs.listing import read_image_size
from jobs.storage import Root
from maskcore.errors import ItemError
from maskcore.limits import DEFAULT_LIMITS, Limits

# name -> (true width, height, file format); written with or without their size below
IMAGES = {"sized.png": (40, 30, "PNG"), "nosize.png": (50, 20, "PNG"),
          "empty.jpg": (33, 17, "JPEG"), "zero.png": (24, 16, "PNG")}
HUGE = {"huge.png": (100_000, 100_000), "big.png": (20_000, 20_000)}  # IHDR only
MISSING = "missing.png"  # no size, no file
BOX = (4, 3, 14, 12)  # x0, y0, x1, y1 (CVAT box corners; COCO bbox x, y, w, h from them)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG holding only its signature and an IHDR that claims width x height: no decoder
    could make pixels of it, so a size read from it is a header read."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + crc


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, (w, h, fmt) in IMAGES.items():
        Image.new("RGB", (w, h), (90, 120, 150)).save(folder / name, fmt)
    for name, (w, h) in HUGE.items():
        (folder / name).write_bytes(header_only_png(w, h))


def cvat_xml(with_sizes: bool, bad: bool = True) -> str:
    def image(i: int, name: str, size: str) -> str:
        x0, y0, x1, y1 = BOX
        return (f'<image id="{i}" name="{name}" {size}><box label="car" occluded="0" '
                f'xtl="{x0}" ytl="{y0}" xbr="{x1}" ybr="{y1}" z_order="0"/></image>')

    sizes = {n: f'width="{w}" height="{h}"' for n, (w, h, _) in IMAGES.items()}
    if not with_sizes:
        sizes.update({"nosize.png": "", "empty.jpg": 'width="" height=""',
                      "zero.png": 'height="16"'})  # one of the two missing: both read
    sizes.update({n: "" for n in (*HUGE, MISSING) if bad})
    body = "".join(image(i, n, s) for i, (n, s) in enumerate(sizes.items()))
    return ('<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>'
            "<meta><task><labels><label><name>car</name><color>#33ddff</color></label>"
            f"</labels></task></meta>{body}</annotations>")


def coco_json(with_sizes: bool, bad: bool = True) -> str:
    records = [{"id": i + 1, "file_name": n, "width": w, "height": h}
               for i, (n, (w, h, _)) in enumerate(IMAGES.items())]
    if not with_sizes:
        del records[1]["width"], records[1]["height"]  # nosize.png: no keys
        records[2].update(width=None, height=None)  # empty.jpg: null (datumaro: absent)
        records[3].update(width=0)  # zero.png: 0 is absent to datumaro too
    records += [{"id": len(records) + i + 1, "file_name": n}
                for i, n in enumerate((*HUGE, MISSING) if bad else ())]
    x0, y0, x1, y1 = BOX
    anns = [{"id": r["id"], "image_id": r["id"], "category_id": 1, "iscrowd": 0,
             "segmentation": [], "bbox": [x0, y0, x1 - x0, y1 - y0]} for r in records]
    return json.dumps({"images": records, "annotations": anns,
                       "categories": [{"id": 1, "name": "car"}]})


def make_input(root: Path, fmt: str, with_sizes: bool, bad: bool = True) -> Path:
    write_images(root / "images")
    if fmt == "cvat":
        (root / "annotations.xml").write_text(cvat_xml(with_sizes, bad))
    else:
        (root / "annotations").mkdir()
        (root / "annotations" / "instances_default.json").write_text(coco_json(with_sizes, bad))
    return root


def export(inp: Path, out: Path) -> tuple[int, dict[str, dict], dict[str, bytes]]:
    code = run(["export", str(inp), str(out), "--format", "clearml", "--workers", "0"])
    lines = (out / "manifest.jsonl").read_text().splitlines()
    items = {e["item"]: e for e in map(json.loads, lines)}
    masks = {p.stem: p.read_bytes() for p in (out / "clearml" / "masks").rglob("*.png")}
    return code, items, masks


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_sizes_missing_from_the_annotation_come_from_the_image_header(tmp_path, fmt):
    code, items, masks = export(make_input(tmp_path / "in", fmt, with_sizes=False),
                                tmp_path / "out")
    # the control: the same input with every size written (and the same failures)
    control_code, control, control_masks = export(
        make_input(tmp_path / "in_sized", fmt, with_sizes=True), tmp_path / "out_sized")
    assert code == control_code == 1
    assert {n for n, e in items.items() if e["status"] == "ok"} == set(IMAGES)
    for name, (w, h, _) in IMAGES.items():
        stem = name.rsplit(".", 1)[0]
        assert masks[stem] == control_masks[stem], name  # byte for byte: as if sized
        mask = cv2.imdecode(np.frombuffer(masks[stem], np.uint8), cv2.IMREAD_UNCHANGED)
        assert mask.shape[:2] == (h, w), name  # the image's size
        x0, y0, x1, y1 = BOX
        painted = np.argwhere(mask[:, :, 0] if mask.ndim == 3 else mask)
        assert painted.min(axis=0).tolist() == [y0, x0], name  # the box, where it was
        assert (painted.max(axis=0) <= [y1, x1]).all(), name
        assert items[name]["class_pixels"] == control[name]["class_pixels"], name
    # the header's size goes through the limits before anything is decoded
    assert "65535" in items["huge.png"]["error"]
    assert "100000" in items["huge.png"]["error"]
    assert "100000000 pixels" in items["big.png"]["error"]
    assert "400000000" in items["big.png"]["error"]
    bad = items[MISSING]
    assert bad["status"] == "failed" and MISSING in bad["error"]
    assert "no such file" in bad["error"]
    for name in (*HUGE, MISSING):  # sized or not, the same failures
        assert control[name]["status"] == "failed", name


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_the_dry_run_reads_sizes_as_the_export_does(tmp_path, fmt):
    inp = make_input(tmp_path / "in", fmt, with_sizes=False, bad=False)
    assert run(["validate", str(inp), "--format", "clearml"]) == 0
    (inp / "images" / "nosize.png").write_bytes(header_only_png(70_000, 5))
    assert run(["validate", str(inp), "--format", "clearml"]) == 1


def test_a_task_zip_and_an_object_store_read_the_header(tmp_path):
    """The two other read paths of `Root.read_head`: an archive member, a ranged GET."""
    inp = make_input(tmp_path / "in", "cvat", with_sizes=False, bad=False)
    archive = tmp_path / "task.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(inp.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(inp).as_posix())
    code, items, masks = export(archive, tmp_path / "out")
    assert code == 0 and set(items) == set(IMAGES) and len(masks) == len(IMAGES)
    mem = Root("memory://maskjob-sizes")
    mem.write("a/b.png", header_only_png(70, 9) + b"\0" * (1 << 18))
    assert read_image_size(mem, "a/b.png", DEFAULT_LIMITS) == (70, 9)
    with pytest.raises(ItemError, match=r"no image file a/gone\.png"):
        read_image_size(mem, "a/gone.png", DEFAULT_LIMITS)


def test_header_read_fails_alone_naming_size_and_file(tmp_path):
    """The worker-side read (the file gone after listing): one clear reason naming both."""
    with pytest.raises(ItemError) as e:
        read_image_size(Root(str(tmp_path)), "images/gone.png", DEFAULT_LIMITS)
    assert "image size in the annotation" in str(e.value)
    assert "images/gone.png" in str(e.value)


def test_header_read_is_bounded_and_ignores_exif(tmp_path):
    """Only the first bytes are read when they hold the header (a PNG whose pixel data is
    garbage still gives its size); a JPEG's size is its stored one, EXIF orientation ignored
    (datumaro loads images with cv2 IMREAD_UNCHANGED); a long JPEG header is read whole."""
    (tmp_path / "trunc.png").write_bytes(header_only_png(70, 9) + b"\0" * (1 << 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: shown as 20x40
    buf = io.BytesIO()
    Image.new("RGB", (40, 20)).save(buf, "JPEG", exif=exif)
    (tmp_path / "rot.jpg").write_bytes(buf.getvalue())
    com = b"\xff\xfe" + struct.pack(">H", 65535) + b"x" * 65533  # one comment segment
    jpg = buf.getvalue()
    (tmp_path / "long.jpg").write_bytes(jpg[:2] + com + com + jpg[2:])
    root = Root(str(tmp_path))
    assert read_image_size(root, "trunc.png", DEFAULT_LIMITS) == (70, 9)
    assert read_image_size(root, "rot.jpg", DEFAULT_LIMITS) == (40, 20)
    assert read_image_size(root, "long.jpg", DEFAULT_LIMITS) == (40, 20)


def test_a_progressive_jpeg_fails_its_listing_size_read(tmp_path):
    """An item without a size reads it from the header (jobs/listing.py): the same charge."""
    buf = io.BytesIO()
    Image.new("RGB", (200, 100)).save(buf, "JPEG", progressive=True)
    (tmp_path / "a.jpg").write_bytes(buf.getvalue())
    with pytest.raises(ItemError, match=r"limits\.max_image_pixels; a progressive JPEG"):
        read_image_size(Root(str(tmp_path)), "a.jpg", Limits(max_image_pixels=20_000))
