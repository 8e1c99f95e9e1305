"""Per-item shortcuts for tiny items give exactly what the general code gives: small Supervisely
rings floored in Python (`_small_ring`) equal numpy's path, and anything unusual still takes
that path with its messages; small histograms by bincount equal OpenCV's; ClearML's content
type per extension equals mimetypes'; per-job tables kept by identity are made again for
another job's objects; `ClassTable.positions` is the per-item dict it replaces."""

from __future__ import annotations

import itertools
import math
import mimetypes
import pickle

import numpy as np
import pytest

from maskcore.errors import ItemError
from maskcore.formats import clearml, supervisely
from maskcore.formats.base import last_by_identity
from maskcore.limits import DEFAULT_LIMITS, Limits
from maskcore.model import ClassInfo, ClassTable
from maskcore.order import histogram

VALUES = [0, 1, -1, 7, 2.5, -2.5, -0.0, 0.9999999, 1e6, -1e6, 1e6 + 0.5, -999999.5,
          123456789, 2**53, 2**53 + 1, -(2**63), 2**64, 1e300, math.inf, -math.inf, math.nan,
          True, False, "1", None, [1]]


def _numpy_path(v: list, limits: Limits) -> np.ndarray | None:
    """`_points`' numpy path as it was: None where it falls back to the point-by-point one."""
    try:
        arr = np.asarray(v)
    except (TypeError, ValueError, OverflowError):
        return None
    if (arr.dtype.kind in "iuf" and arr.ndim == 2 and arr.shape[1] == 2 and arr.size
            and np.abs(arr).max() <= limits.max_coordinate):
        return np.floor(arr).astype(np.int64)
    return None


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, Limits(max_coordinate=1e30)])
def test_small_rings_floored_in_python_equal_numpys_path(limits):
    taken = 0
    pairs = list(itertools.product(VALUES, repeat=2))
    rings = [[list(p)] for p in pairs] + [[list(p), list(q)] for p, q in zip(
        pairs, pairs[7:] + pairs[:7], strict=True)]
    for ring in rings:
        got = supervisely._small_ring(ring, limits.max_coordinate)
        if got is None:
            continue
        taken += 1
        want = _numpy_path(ring, limits)
        assert want is not None, ring
        assert got.dtype == want.dtype and got.shape == want.shape and (got == want).all(), ring
    assert taken > 100


@pytest.mark.parametrize("ring", [[[1, 2], [True, 3]], [[1, "2"]], [[1, math.nan]],
                                  [[1, 2, 3]], [(1, 2)], [], [[1, 2e6]], [[2**64, 1]]])
def test_unusual_rings_are_left_to_the_general_path(ring):
    assert supervisely._small_ring(ring, DEFAULT_LIMITS.max_coordinate) is None


def test_a_bad_point_in_a_small_polygon_is_still_named():
    meta = supervisely.parse_meta(
        b'{"classes": [{"title": "p", "shape": "polygon", "color": "#FF0000"}]}')
    ann = (b'{"size": {"width": 8, "height": 8}, "objects": [{"classTitle": "p", "points": '
           b'{"exterior": [[1, 1], [5, "x"], [3, 6]], "interior": []}}]}')
    with pytest.raises(ItemError, match="objects\\[0\\]"):
        supervisely.parse_annotation(ann, meta, dataset="ds", name="a.png")
    ok = ann.replace(b'"x"', b"2.5")
    item = supervisely.parse_annotation(ok, meta, dataset="ds", name="a.png")
    assert len(item.labels) == 1


@pytest.mark.parametrize("shape", [(8, 8), (1, 1), (32, 32), (33, 31), (40, 40)])
@pytest.mark.parametrize("n", [1, 2, 5, 256])
def test_small_histograms_equal_opencvs(shape, n):
    rng = np.random.default_rng(n)
    index = rng.integers(0, n, shape, dtype=np.uint8)
    got = histogram(index, n)
    want = np.bincount(index.ravel(), minlength=n)[:n]
    assert got.dtype == np.int64 and got.tolist() == want.tolist()


NAMES = ["a.png", "A.PNG", "t000001.jpg", "x.jpeg", "dir.v2/a.png", "a.tar.gz", "a.svgz",
         "a.tgz", ".png", "noext", "a.", "c:x.png", "data:a.png", "http://h/a.png",
         "a;b.png", "a.unknownext", "a b.webp", "é.tif", "a.Z", "d/.hidden.png"]


@pytest.mark.parametrize("name", NAMES)
def test_clearml_content_type_is_mimetypes_guess(name):
    want = mimetypes.guess_type(name)[0] or "application/octet-stream"
    assert clearml._content_type(name) == want
    assert clearml._content_type(name) == want  # cached: the same again


def test_a_table_kept_by_identity_is_made_again_for_other_objects():
    made = []

    @last_by_identity
    def table(a, b):
        made.append((a, b))
        return [a, b]

    a1, b1, a2 = ClassTable(()), object(), ClassTable(())
    assert table(a1, b1) is table(a1, b1)
    assert table(a2, b1) == [a2, b1]  # equal, not the same object: made again
    assert len(made) == 2


def test_class_positions_are_the_per_item_dict_and_pickle():
    classes = ClassTable((ClassInfo("a", (1, 2, 3)), ClassInfo("b", (0, 0, 0)),
                          ClassInfo("a", (9, 9, 9))))
    assert classes.positions == {c.name: i for i, c in enumerate(classes.classes)}
    again = pickle.loads(pickle.dumps(classes))
    assert again == classes and again.positions == classes.positions


@pytest.mark.parametrize("widths", [(8,), (8, 8), (1, 3), (64, 64), (70, 1)])
@pytest.mark.parametrize("height", [1, 8, 63])
def test_small_photo_pngs_swap_channels_as_opencv_does(monkeypatch, widths, height):
    """png_photo's numpy channel swap for small images gives OpenCV's bytes (non-contiguous
    views too: a crop, a flipped image)."""
    from maskcore import encode

    rng = np.random.default_rng(height)
    images = [rng.integers(0, 256, (height + 2, w + 3, 3), dtype=np.uint8)[1:-1, 2:-1]
              for w in widths]
    images[-1] = images[-1][:, ::-1]
    small = encode.png_photo(*images)
    monkeypatch.setattr(encode, "_SMALL_SWAP", 0)
    assert small == encode.png_photo(*images)
