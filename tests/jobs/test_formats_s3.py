"""COCO on S3 in, clearml + zarr on S3 out, against a moto server in its own process: the zarr
store opens with plain `zarr.open_group("s3://...")` (a plain root, items consolidated) and holds
the same arrays as a local run; ClearML frames point at the final s3:// URLs; verify passes."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from jobs.cli import run
from tests.e2e.helpers import MotoServer, new_fs, s3_env, upload_folder

COCO = Path(__file__).resolve().parents[1] / "data" / "coco_small"
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
         "AWS_REGION", "FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3", "DASK_SCHEDULER_ADDRESS")

pytestmark = [pytest.mark.s3,
              pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto_server of this module's own; S3 filesystems cached by earlier tests (which may
    point at another, stopped server) are dropped before and after."""
    import s3fs

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    mp = pytest.MonkeyPatch()
    for name in UNSET:
        mp.delenv(name, raising=False)
    for name, value in s3_env(server.endpoint).items():
        mp.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield server
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        mp.undo()
        server.stop()


def open_group(url: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(url, mode="r", **kw)


def arrays(g) -> dict[str, np.ndarray]:
    return {name: a[:] for name, a in g.members(max_depth=None) if isinstance(a, zarr.Array)}


def test_coco_from_s3_to_zarr_and_clearml_on_s3(moto, tmp_path):
    fs = new_fs()
    bucket = f"maskjob-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    src, dst = f"s3://{bucket}/coco", f"s3://{bucket}/run"
    upload_folder(fs, COCO, src)
    args = ("--format", "zarr", "--format", "clearml", "--set", "zarr.chunk=32")
    assert run(["export", src, dst, "--workers", "0", *args]) == 1  # the fixture's bad items
    local = tmp_path / "local"
    assert run(["export", str(COCO), str(local), "--workers", "0", *args]) == 1

    remote = open_group(f"{dst}/zarr")  # layout 2: a plain root, one small GET at any size
    assert remote.metadata.consolidated_metadata is None
    assert remote["default/street/a"].metadata.consolidated_metadata is not None  # per item
    plain = open_group(f"{dst}/zarr", use_consolidated=False)
    mine = open_group(str(local / "zarr"))
    got = arrays(remote)
    assert sorted(got) == sorted(arrays(plain)) == sorted(arrays(mine)) == [
        "default/b/class", "default/b/instance", "default/c/class", "default/c/instance",
        "default/street/a/class", "default/street/a/instance"]
    for name, a in arrays(mine).items():
        assert np.array_equal(got[name], a), name
    assert not got["default/c/class"].any()  # an image with no annotation: all background
    assert remote["default/street/a/class"][40:64, 32:64].any()  # a tile read on S3
    assert remote["default/street/a"].attrs["image_uri"] == f"{src}/images/street/a.jpg"

    frames = [json.loads(x) for x in fs.cat_file(f"{dst}/clearml/frames.jsonl").splitlines()]
    assert [f["id"] for f in frames] == ["default/b.png", "default/c.png", "default/street/a.jpg"]
    mask_uri = frames[2]["sources"][0]["masks"][0]["uri"]
    assert mask_uri == f"{dst}/clearml/masks/default/street/a.png" and fs.exists(mask_uri)
    assert frames[2]["sources"][0]["uri"] == f"{src}/images/street/a.jpg"
    assert fs.exists(f"{dst}/preview.html")
    assert run(["verify", dst]) == 0
