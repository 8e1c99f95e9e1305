"""A listing larger than one S3 page, end to end: CVAT XML input on moto with 1,100 images in
`images/` (two LIST pages of 1,000 keys), images missing at page boundaries, the real CLI on a
loopback Dask cluster; then an `--incremental` rerun that carries every item forward without
re-reading or rewriting anything."""

from __future__ import annotations

import pytest

from jobs.cli import run

from .helpers import list_keys, read_manifest

pytestmark = [pytest.mark.s3, pytest.mark.cluster, pytest.mark.timeout(420)]

N = 1100
MISSING = {0, 999, 1000, N - 1}  # first/last keys of both LIST pages
SETS = ["--format", "supervisely", "--set", "supervisely.masks_human=false",
        "--set", "supervisely.images=false", "--set", "supervisely.annotations=false"]


def name(i: int) -> str:
    return f"img_{i:05d}.jpg"


def cvat_xml() -> bytes:
    head = ('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n'
            "<meta><task><labels><label><name>car</name><color>#ff0000</color></label>"
            "</labels></task></meta>\n")
    images = "".join(
        f'<image id="{i}" name="{name(i)}" width="8" height="6">'
        f'<box label="car" occluded="0" source="manual" xtl="{i % 4}.5" ytl="0.5" xbr="7"'
        ' ybr="5" z_order="0"/></image>\n' for i in range(N))
    return (head + images + "</annotations>\n").encode()


def test_a_listing_of_several_s3_pages_exports_every_item_and_names_the_missing_ones(
        s3, bucket, cluster):
    src, dst = f"s3://{bucket('in')}/task", f"s3://{bucket('out')}/run"
    base = src.removeprefix("s3://")
    objects = {f"{base}/images/{name(i)}": b"" for i in range(N) if i not in MISSING}
    objects[f"{base}/annotations.xml"] = cvat_xml()
    s3.pipe(objects)

    assert run(["export", src, dst, *SETS, "--input-format", "cvat",
                "--scheduler", cluster.address]) == 1  # the missing images fail
    summary, lines = read_manifest(s3, dst)
    assert summary["summary"]["items"] == N
    assert summary["summary"]["ok"] == N - len(MISSING)
    assert summary["summary"]["failed"] == len(MISSING)
    assert summary["partitions"] > 1
    assert [e["item"] for e in lines] == sorted(e["item"] for e in lines)
    assert len({e["item"] for e in lines}) == N  # each item exactly once
    failed = {e["item"] for e in lines if e["status"] == "failed"}
    assert failed == {name(i) for i in MISSING}
    assert all("one listing of images/" in e["error"] and "no such file" in e["error"]
               for e in lines if e["status"] == "failed")
    masks = [k for k in list_keys(s3, dst) if "/masks_machine/" in k]
    assert len(masks) == N - len(MISSING)

    before = {k: v["ETag"] for k, v in list_keys(s3, dst, detail=True).items()
              if "/masks_machine/" in k}
    assert run(["export", src, dst, *SETS, "--input-format", "cvat", "--incremental",
                "--scheduler", cluster.address]) == 1
    summary2, lines2 = read_manifest(s3, dst)
    assert summary2["summary"]["unchanged"] == N - len(MISSING)
    assert len(lines2) == N
    after = {k: v["ETag"] for k, v in list_keys(s3, dst, detail=True).items()
             if "/masks_machine/" in k}
    assert after == before
