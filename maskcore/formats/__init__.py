"""The format registry: one line per format. Readers and writers live beside this file.

Writer modules (FORMATS) satisfy `base.Writer` whole: NAME, Options (validation, check_classes,
needs_image, with_input_meta), SOURCE_DEFAULTS, write_item, dataset_files, a streaming
finalizer(classes, opts, io) with take/close/abort, and preview_mask. Adding a format =
adding its module and one line below; jobs/ never names one.

Reader modules (INPUT_FORMATS) offer:
    NAME, RULE                            the pixel rule of its items ("opencv" | "coco")
    ANN_FORMAT                            what an item's annotation bytes are (a writer
                                          copies them only into a project of that format)
    EXIF                                  its tool decodes images turned by EXIF orientation
    parse_classes(bytes) -> ClassTable
    parse_item(bytes, classes, *, dataset, name, image_key, ann_key, limits,
               image_size) -> Item          image_size: `limits.SizeReader` or None, called
                                          only when the annotation lacks the size (SPEC 3)
Listing an input (I/O) is done per reader in jobs/listing.py.
"""

from __future__ import annotations

from types import ModuleType
from typing import cast

from . import clearml, coco, cvat, cvat_masks, supervisely, supervisely_masks, zarr_masks
from .base import Writer

FORMATS: dict[str, Writer] = {
    m.NAME: cast(Writer, m) for m in (
        supervisely_masks,
        cvat_masks,
        clearml,
        zarr_masks,
    )
}

INPUT_FORMATS: dict[str, ModuleType] = {
    supervisely.NAME: supervisely,
    cvat.NAME: cvat,  # CVAT for images 1.1 XML and Segmentation Mask 1.1
    coco.NAME: coco,
}
