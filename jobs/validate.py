"""`maskjob validate`: a dry run — everything `export` would refuse before work, or fail per
item knowably without rendering, reported without a cluster and without writing an output.

Checks: the config; the input (listed with the same code as export: credentials, endpoint,
bucket, archive, images_url); every item's problems known from listing (`ItemRef.problem`: an
image without an annotation, ...); an item without an image when a requested output needs
pixels; every annotation read and parsed with the job's limits. With OUTPUT: the OUTPUT
checks of export (not a file, not inside INPUT, no foreign files without --overwrite) and a
write probe (written and deleted under `_manifest/`, leaving no folder behind).

Exit codes, as export: 0 every item would be exported; 1 some items would fail (each named
with its reason); 2 a problem found before any work (PreflightError).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from maskcore.errors import ItemError
from maskcore.formats import INPUT_FORMATS

from . import api
from .clashes import detect_clashes
from .listing import Listing, read_annotation, read_image_size
from .storage import Root

log = logging.getLogger("maskjob")


def item_problems(source: Root, listing: Listing, spec: Any) -> int:
    """Log every item that would fail; return their number."""
    bad = 0
    reader = INPUT_FORMATS[listing.reader]
    needs_image = any(spec.options[f].needs_image() for f in spec.formats)
    source = listing.image_root or source  # where the listing's keys resolve
    for ref in listing.iter_refs():
        try:
            if ref.problem or (ref.ann_key is None and ref.ann_inline is None):
                raise ItemError(ref.problem or "no annotation file")
            if needs_image and ref.image_key is None:
                raise ItemError("Expected an image for this item (the requested outputs need "
                                "its pixels). Got none instead.")
            ann = read_annotation(source, ref)
            key = ref.image_key
            reader.parse_item(ann, listing.classes, dataset=ref.dataset, name=ref.name,
                              image_key=key, ann_key=ref.ann_key, limits=spec.limits,
                              image_size=None if key is None else
                              lambda k=key: read_image_size(source, k, spec.limits))
        except Exception as e:  # anything export would turn into this item's failed line
            bad += 1
            log.warning("bad item %s/%s: %s", ref.dataset, ref.name, api.describe(e))
    options = {f: spec.options[f] for f in spec.formats}
    with detect_clashes(listing.iter_refs(), formats=spec.formats, options=options) as clashes:
        for _, dataset, name, reason in clashes.failures():
            bad += 1
            log.warning("bad item %s/%s: %s", dataset, name, reason)
    log.info("validated %d items in %d classes: %d bad", listing.count, len(listing.classes),
             bad)
    return bad


def dry_run(input_url: str, output_url: str | None = None, *, formats: Sequence[str] = (),
            config: str | None = None, sets: Sequence[str] = (),
            input_format: str | None = None, storage_options: Mapping[str, Any] | None = None,
            overwrite: bool = False) -> int:
    """Exit code of the dry run (0 / 1); PreflightError (exit 2) before any item check."""
    job = api.prepare(input_url, output_url, formats=formats, config=config, sets=sets,
                      input_format=input_format, storage_options=storage_options,
                      overwrite=overwrite)
    bad = item_problems(job.source, job.listing, job.spec)
    return api.EXIT_ITEMS_FAILED if bad else api.EXIT_OK
