"""The format registry: one line per format. Readers and writers live beside this file.

Writer modules (FORMATS) offer:
    NAME                                  the format name, also the output sub-folder
    Options                               frozen dataclass with
        .from_mapping(raw, *, prefix, defaults) -> Options   (validates, ConfigError naming keys)
        .check_classes(classes, prefix)                      (checks needing the class list)
    write_item(ctx: ItemContext, opts) -> ItemOutput         (blobs of one item, pure)
    dataset_files(classes, opts) -> list[Blob]               (sidecars written at finalize)

Reader modules (INPUT_FORMATS) offer:
    NAME, RULE                            the pixel rule of its items ("opencv" | "coco")
    parse_classes(bytes) -> ClassTable
    parse_item(bytes, classes, *, dataset, name, image_key, ann_key, limits) -> Item
Listing an input (I/O) is done per reader in jobs/listing.py.
"""

from __future__ import annotations

from types import ModuleType

from . import clearml, coco, cvat, cvat_masks, supervisely, supervisely_masks, zarr_masks

FORMATS: dict[str, ModuleType] = {
    supervisely_masks.NAME: supervisely_masks,
    cvat_masks.NAME: cvat_masks,
    clearml.NAME: clearml,
    zarr_masks.NAME: zarr_masks,
}

INPUT_FORMATS: dict[str, ModuleType] = {
    supervisely.NAME: supervisely,
    cvat.NAME: cvat,  # CVAT for images 1.1 XML and Segmentation Mask 1.1
    coco.NAME: coco,
}
