"""The cvat writer's subset mapping (`cvat.subsets`, `cvat.subset_names`): datasets whose names
a Segmentation Mask subset list cannot hold (nested Supervisely datasets `a/datasets/b`, names
with `_`) get a subset by an explicit map or a reversible percent-encoding; a collision of
mapped names never merges two datasets into one list - it fails before any work (config) or
fails the items of the dataset the map does not name (plan time)."""

from __future__ import annotations

import urllib.parse

import pytest

from maskcore.errors import ConfigError, ItemError
from maskcore.formats import cvat
from maskcore.formats.base import ItemContext
from maskcore.formats.cvat_masks import (
    CvatOptions,
    planned_keys,
    safe_subset,
    subset_of,
    write_item,
)
from maskcore.model import ClassInfo, ClassTable

CLASSES = ClassTable((ClassInfo("car", (0, 255, 0)),))


def opts(**kw) -> CvatOptions:
    return CvatOptions.from_mapping(kw, prefix="cvat", defaults={})


ODD = ["a/datasets/b", "my_train", "a_b/c_d", "100%", "%2F", "tab\there", "ünï/cödé",
       "back\\slash", "a%5Fb", "line\u2028sep", " spaced ", "a.b", "...", "-", "x" * 200]


@pytest.mark.parametrize("name", ODD)
def test_safe_names_are_valid_subsets_and_decode_back(name):
    subset = safe_subset(name)
    assert cvat.subset_problem(subset) is None
    assert urllib.parse.unquote(subset) == name
    assert subset_of(name, opts(subset_names="safe")) == subset


def test_safe_encoding_is_injective_on_names_that_look_encoded():
    names = ["a/b", "a%2Fb", "a_b", "a%5Fb", "a%b", "a%25b", "ab", "a-b", "a%2fb"]
    got = [safe_subset(n) for n in names]
    assert len(set(got)) == len(names)
    assert safe_subset("Train") == "Train" and safe_subset("a-b") == "a-b"  # valid: unchanged
    assert safe_subset("a/datasets/b") == "a%2Fdatasets%2Fb"


def test_strict_default_fails_the_item_and_names_the_options():
    with pytest.raises(ItemError, match=r"without '_'.*cvat\.subsets.*subset_names: safe"):
        subset_of("my_train", opts())
    with pytest.raises(ItemError, match="usable as a file name"):
        planned_keys("a/datasets/b", "x.jpg", opts())
    assert subset_of("Train", opts()) == "Train"


def test_explicit_map_wins_and_places_the_list():
    o = opts(subsets={"a/datasets/b": "a-b", "my_train": "train"}, subset_names="safe")
    assert subset_of("a/datasets/b", o) == "a-b" and subset_of("my_train", o) == "train"
    assert subset_of("other_one", o) == "other%5Fone"
    p = planned_keys("a/datasets/b", "dir/x.jpg", o)
    assert p.shared == ("cvat/ImageSets/Segmentation/a-b.txt",)
    assert p.files == ("cvat/SegmentationClass/dir/x.png", "cvat/SegmentationObject/dir/x.png")


@pytest.mark.parametrize(("subsets", "match"), [
    ({"a/b": "ab", "a_b": "ab"}, r"cvat\.subsets\.a_b.*'a/b' and 'a_b' both mapped to 'ab'"),
    ({"a/b": "x_y"}, r"cvat\.subsets\.a/b.*without '_'"),
    ({"a/b": "x/y"}, r"cvat\.subsets\.a/b.*file name"),
    ({"a/b": ""}, r"cvat\.subsets\.a/b"),
    ({"a/b": ".."}, r"cvat\.subsets\.a/b"),
    ({"a/b": "x\ny"}, r"cvat\.subsets\.a/b"),
    ({"a/b": 5}, r"cvat\.subsets\.a/b.*text"),
    ({5: "x"}, r"cvat\.subsets\.5.*text"),
    (["a/b", "ab"], r"cvat\.subsets.*mapping"),
])
def test_bad_or_colliding_maps_are_config_errors(subsets, match):
    with pytest.raises(ConfigError, match=match):
        opts(subsets=subsets)


def test_bad_subset_names_mode_is_a_config_error():
    with pytest.raises(ConfigError, match=r"cvat\.subset_names"):
        opts(subset_names="loose")


@pytest.mark.parametrize(("mode", "dataset"), [("strict", "ab"), ("safe", "ab"),
                                               ("safe", "a/b")])
def test_a_dataset_whose_subset_an_explicit_map_owns_fails(mode, dataset):
    # 'a%2Fb' is where the map puts 'x'; 'ab' is where it puts 'a/b'
    o = opts(subsets={"a/b": "ab", "x": "a%2Fb"}, subset_names=mode)
    if dataset == "a/b":
        assert subset_of(dataset, o) == "ab"  # mapped itself: fine
        with pytest.raises(ItemError, match=r"'a%2Fb', the subset cvat.subsets gives to "
                                            r"dataset 'x'"):
            subset_of("a/b", opts(subsets={"x": "a%2Fb"}, subset_names=mode))
        return
    with pytest.raises(ItemError, match=r"'ab', the subset cvat.subsets gives to dataset 'a/b'"):
        subset_of(dataset, o)
    with pytest.raises(ItemError, match="gives to dataset"):
        planned_keys(dataset, "x.jpg", o)


def test_write_item_uses_the_mapping():
    item = cvat.parse_item(b'<image id="0" name="x.jpg" width="4" height="3"></image>', CLASSES,
                           dataset="a/datasets/b", name="x.jpg")
    with pytest.raises(ItemError, match="subset"):
        write_item(ItemContext(item, CLASSES, rule=cvat.RULE), opts())
    out = write_item(ItemContext(item, CLASSES, rule=cvat.RULE), opts(subset_names="safe"))
    assert [b.key for b in out.blobs] == ["cvat/SegmentationClass/x.png",
                                          "cvat/SegmentationObject/x.png"]
