"""The format registry: one line per format. Readers and writers live beside this file.

FORMATS: output format name -> writer module (each has NAME, write_item, dataset_files).
INPUT_FORMATS: input format name -> reader module.
"""

from __future__ import annotations

from . import supervisely, supervisely_masks

FORMATS = {
    supervisely_masks.NAME: supervisely_masks,
}

INPUT_FORMATS = {
    "supervisely": supervisely,
}
