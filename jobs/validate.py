"""`maskjob validate`: parse every annotation (no cluster, no output) and report bad items.

Exit 0 when every item parses, 1 when some do not (each named with its reason), 2 for config
or input errors (raised before this runs).
"""

from __future__ import annotations

import logging

from maskcore.errors import InputError, ItemError
from maskcore.formats.supervisely import parse_annotation

from .listing import ItemRef
from .storage import Root

log = logging.getLogger("maskjob")


def validate(source: Root, refs: list[ItemRef], classes, spec) -> int:
    bad = 0
    for ref in refs:
        try:
            if ref.problem or ref.ann_key is None:
                raise ItemError(ref.problem or "no annotation file")
            parse_annotation(source.read(ref.ann_key), classes, dataset=ref.dataset,
                             name=ref.name, limits=spec.limits)
        except (ItemError, InputError) as e:
            bad += 1
            log.warning("bad item %s/%s: %s", ref.dataset, ref.name, e)
    log.info("validated %d items in %d classes: %d bad", len(refs), len(classes), bad)
    return 1 if bad else 0
