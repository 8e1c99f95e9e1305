"""The writers' `planned_keys` build keys from cached folder prefixes (plan-time speed): for
tricky names they must equal the keys `paths.join` makes from the same parts (as `write_item`
does), and `paths.join`'s fast path must agree with its checked one."""

from __future__ import annotations

import pytest

from maskcore import paths
from maskcore.errors import ItemError
from maskcore.formats import FORMATS, clearml, cvat, supervisely_masks, zarr_masks
from maskcore.model import name_stem

NAMES = ["a.jpg", "sub/x.png", "a.b.c.jpg", "noext", "..jpg", "x/..png", ".hidden.png",
         "d.v2/file", "a_b.jpg", "x/y/z.tif", "é.jpg", "a..b.png", ".jpg", "x/.jpg",
         "a b.png", "ü/ß.png", "x:y.png", "C:x.png"]
DATASETS = ["ds", "a/b", "meta.json", "d.s", "ü"]


def opts(fmt):
    return FORMATS[fmt].Options.from_mapping({}, prefix=fmt, defaults={})


def outcome(fn, *args):
    try:
        return fn(*args)
    except ItemError as e:
        return f"ItemError: {e}"


@pytest.mark.parametrize("ds", DATASETS)
@pytest.mark.parametrize("name", NAMES)
def test_planned_keys_equal_the_joined_keys(ds, name):
    stem = name_stem(name)
    comp = paths.component(stem)
    sv = FORMATS["supervisely"].planned_keys(ds, name, opts("supervisely"))
    masks = [paths.join(supervisely_masks.NAME, ds, f, comp + ".png")
             for f, o in supervisely_masks._MASK_FOLDERS if getattr(opts("supervisely"), o)]
    assert sv.files[:len(masks)] == tuple(masks)
    assert paths.join(supervisely_masks.NAME, ds, "img", paths.component(name)) in sv.files
    assert outcome(FORMATS["clearml"].planned_keys, ds, name, opts("clearml")) == outcome(
        lambda: paths.Planned((clearml.mask_key(ds, stem), clearml.frame_key(ds, stem))))
    if cvat.subset_problem(ds) is None:
        rel = cvat.item_id(name) + cvat.MASK_EXT
        assert outcome(FORMATS["cvat"].planned_keys, ds, name, opts("cvat")) == outcome(
            lambda: paths.Planned((paths.join("cvat", cvat.CLASS_DIR, rel),
                                   paths.join("cvat", cvat.OBJECT_DIR, rel)),
                                  shared=(paths.join("cvat", cvat.SEGM_LIST_DIR, ds + ".txt"),)))
    z = outcome(FORMATS["zarr"].planned_keys, ds, name, opts("zarr"))
    group = outcome(zarr_masks.group_path, ds, stem)
    if isinstance(z, str):
        assert isinstance(group, str) and z == group
    else:
        base = paths.join("zarr", group)
        assert z == paths.Planned(
            folders=(paths.join(base, "class"), paths.join(base, "instance")),
            shared=(paths.join(base, "zarr.json"),
                    *(paths.join("zarr", g, "zarr.json") for g in zarr_masks.ancestors(group))))


@pytest.mark.parametrize("parts", [
    ("a", "b"), ("a/", "/b"), ("a", "", "b"), ("/a", "b"), ("a", "."), ("a", ".."),
    ("a", "..", "b"), ("a", ".x"), ("a\\b",), ("a\x00",), ("C:", "x"), ("a//b",), ("/",),
    ("", ""), ("x", "y/"), ("ü", "ß.png"),
])
def test_join_fast_path_agrees_with_the_checked_join(parts):
    def checked(*ps):
        return paths.check_relative("/".join([p.strip("/") for p in ps if p]), "output key")
    assert outcome(paths.join, *parts) == outcome(checked, *parts)


def test_folder_prefix_is_the_checked_join_with_a_slash():
    assert paths.folder("cvat", "SegmentationClass") == "cvat/SegmentationClass/"
    with pytest.raises(ItemError):
        paths.folder("zarr", "..")
