"""`maskjob validate`: parse every annotation (no cluster, no output) and report bad items.

Exit 0 when every item parses, 1 when some do not (each named with its reason), 2 for config
or input errors (raised before this runs).
"""

from __future__ import annotations

import logging

from maskcore.errors import InputError, ItemError
from maskcore.formats import INPUT_FORMATS

from .listing import Listing, read_annotation
from .storage import Root

log = logging.getLogger("maskjob")


def validate(source: Root, listing: Listing, spec) -> int:
    bad = 0
    reader = INPUT_FORMATS[listing.reader]
    for ref in listing.refs:
        try:
            if ref.problem or (ref.ann_key is None and ref.ann_inline is None):
                raise ItemError(ref.problem or "no annotation file")
            ann = read_annotation(source, ref)
            reader.parse_item(ann, listing.classes, dataset=ref.dataset, name=ref.name,
                              image_key=ref.image_key, ann_key=ref.ann_key, limits=spec.limits)
        except (ItemError, InputError) as e:
            bad += 1
            log.warning("bad item %s/%s: %s", ref.dataset, ref.name, e)
    log.info("validated %d items in %d classes: %d bad", len(listing.refs), len(listing.classes),
             bad)
    return 1 if bad else 0
