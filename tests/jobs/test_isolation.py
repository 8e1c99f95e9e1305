"""Per-item isolation (jobs/tasks.py): whatever one item raises - or a name the filesystem
refuses, or a native crash that kills its worker - fails that item alone with a one-line
reason; storage faults still fail the partition so Dask retries it."""

from __future__ import annotations

import errno
import json

import cv2
import pytest

from jobs import config, storage
from jobs.cli import run
from jobs.listing import ItemRef
from jobs.manifest_store import part_key
from jobs.plan import write_plan
from jobs.storage import Root
from jobs.tasks import (
    CRASH_ENV,
    MAX_REASON,
    WORKER_DIED,
    ExportContext,
    StorageFault,
    is_storage_fault,
    process_partition,
    reason,
)
from maskcore.errors import ItemError
from maskcore.formats import INPUT_FORMATS, supervisely
from tests.conftest import rect


def by_item(out):
    return {e["item"]: e for e in map(json.loads, (out / "manifest.jsonl").read_text()
                                      .splitlines())}


def test_reason_is_one_bounded_line_naming_the_type():
    assert reason(OverflowError("too\nbig\t here")) == "OverflowError: too big here"
    assert reason(KeyError("x" * 10_000)).startswith("KeyError: 'xxx")
    assert len(reason(KeyError("x" * 10_000))) == MAX_REASON
    assert reason(ItemError("Expected a box. Got none instead.")) == \
        "Expected a box. Got none instead."
    assert reason(RecursionError()) == "RecursionError"

    class Hostile(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert reason(Hostile()) == "Hostile"


@pytest.mark.parametrize(("exc", "local", "storage"), [
    (FileNotFoundError(errno.ENOENT, "gone"), False, False),
    (IsADirectoryError(errno.EISDIR, "a folder"), True, False),
    (OSError(errno.ENAMETOOLONG, "File name too long"), True, False),
    (PermissionError(errno.EACCES, "denied"), True, False),  # one unreadable local file
    (PermissionError(errno.EACCES, "denied"), False, True),  # credentials / ACL on a store
    (ConnectionResetError(errno.ECONNRESET, "reset"), False, True),
    (TimeoutError("read timed out"), False, True),
    (OSError("an s3fs error without errno"), False, True),
    (ValueError("bad bytes"), False, False),
    (ItemError("too large"), False, False),
])
def test_read_errors_are_classified_item_or_storage(exc, local, storage):
    assert is_storage_fault(exc, local=local) is storage


def test_a_client_library_error_is_a_storage_fault():
    cls = type("EndpointConnectionError", (Exception,), {"__module__": "botocore.exceptions"})
    assert is_storage_fault(cls("could not connect"), local=False)


@pytest.fixture
def hostile_project(project):
    p = project()
    p.add("ds", "good.png", [rect("car", 2, 2, 20, 20)])
    p.add("ds", "nested.png", ann=b'{"size": {"width": 64, "height": 48}, "objects": '
                                  + b"[" * 200_000 + b"]" * 200_000 + b"}")
    p.add("ds", "n" * 244 + ".png", [rect("car", 1, 1, 5, 5)])  # the store refuses its names
    p.add("ds", "m" * 244 + ".png", [rect("car", 1, 1, 5, 5)])  # legal: up to 255 bytes
    p.add("ds", "zz good.png", [rect("car", 3, 3, 9, 9)])
    for name in ("overflow.png", "cv2.png", "keyerror.png", "attr.png", "recursion.png",
                 "oserror.png"):
        p.add("ds", name, [rect("car", 1, 1, 5, 5)])
    return p


RAISE = {
    "overflow.png": OverflowError("int too large to convert"),
    "cv2.png": cv2.error("OpenCV(4) error: (-215:Assertion failed) npoints > 0"),
    "keyerror.png": KeyError("points"),
    "attr.png": AttributeError("'list' object has no attribute 'get'"),
    "recursion.png": RecursionError("maximum recursion depth exceeded"),
    "oserror.png": OSError(errno.EILSEQ, "Illegal byte sequence"),
}


def test_every_exception_of_one_item_fails_that_item_alone(hostile_project, tmp_path,
                                                           monkeypatch):
    real = supervisely.parse_item

    def parse_item(data, classes, *, name, **kw):
        if name in RAISE:
            raise RAISE[name]
        return real(data, classes, name=name, **kw)

    monkeypatch.setattr(INPUT_FORMATS["supervisely"], "parse_item", parse_item)
    write_temp = storage._write_temp

    def refusing(path: str, data: bytes) -> str:  # a store whose names are shorter
        if "n" * 200 in path:
            raise OSError(errno.ENAMETOOLONG, "File name too long", path)
        return write_temp(path, data)

    monkeypatch.setattr(storage, "_write_temp", refusing)
    out = tmp_path / "out"
    assert run(["export", str(hostile_project.root), str(out), "--workers", "0", "--set",
                "partition_size=100"]) == 1
    items = by_item(out)
    assert items["good.png"]["status"] == items["zz good.png"]["status"] == "ok"
    assert items["m" * 244 + ".png"]["status"] == "ok"  # its temp names were too long once
    assert (out / "supervisely/ds/masks_machine/zz good.png").exists()
    assert items["nested.png"]["status"] == "failed"
    long = items["n" * 244 + ".png"]
    assert long["status"] == "failed" and "File name too long" in long["error"], long
    assert long["error"].startswith("OSError: [Errno 36]") and len(long["error"]) <= MAX_REASON
    assert not list((out / "supervisely/ds").rglob("nnnnnnnn*"))  # nothing half-written left
    for name, exc in RAISE.items():
        e = items[name]
        assert e["status"] == "failed" and e["error"].startswith(type(exc).__name__ + ": "), e
        assert "\n" not in e["error"]
    assert json.loads((out / "manifest.json").read_text())["summary"]["failed"] == 8
    assert run(["verify", str(out)]) == 0


class FlakyRoot(Root):
    """An input root whose reads of one key fail with a connection error (storage down)."""

    def read(self, key):
        if key.endswith("b.png.json"):
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return super().read(key)


TOKEN = "0123456789abcdef"


def _context(source, dest):
    spec = config.load(None)
    return ExportContext(source, dest, supervisely.parse_meta(source.read("meta.json")),
                         ("supervisely",), {"supervisely": spec.options["supervisely"]},
                         plan_token=TOKEN)


def test_a_storage_fault_fails_the_partition_and_commits_nothing(project, tmp_path):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", [rect("car", 1, 1, 5, 5)])
    dest = Root(str(tmp_path / "out"))
    refs = [ItemRef("ds", n, f"ds/ann/{n}.json", f"ds/img/{n}") for n in ("a.png", "b.png")]
    plan = write_plan(dest, iter(refs), partition_size=2, settings="s")
    ctx = _context(FlakyRoot(str(p.root)), dest)
    with pytest.raises(StorageFault, match="ConnectionResetError"):
        process_partition(ctx, plan.slice(0))
    assert not (tmp_path / "out" / part_key(0, TOKEN)).exists()
    counts = process_partition(_context(Root(str(p.root)), dest), plan.slice(0))
    assert counts["ok"] == 2


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_a_native_crash_fails_only_the_poison_item(project, tmp_path, monkeypatch):
    """A real SIGSEGV in a worker process (the test-only hook, enabled by an environment
    variable the workers inherit): the poison item is failed with WORKER_DIED, every other item
    of its partition is exported and committed in the same part, the job finishes."""
    p = project()
    names = [f"i{k}.png" for k in range(6)]
    for n in names:
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    monkeypatch.setenv(CRASH_ENV, "i2.png")
    out = tmp_path / "out"
    assert run(["export", str(p.root), str(out), "--workers", "2", "--set",
                "partition_size=4"]) == 1
    items = by_item(out)
    assert items["i2.png"] == {**items["i2.png"], "status": "failed", "error": WORKER_DIED}
    assert {n: items[n]["status"] for n in names if n != "i2.png"} == dict.fromkeys(
        [n for n in names if n != "i2.png"], "ok")
    token = json.loads((out / "_manifest/plan.json").read_text())["token"]
    part0 = (out / part_key(0, token)).read_text().splitlines()
    assert [json.loads(x)["item"] for x in part0] == names[:4]
    assert run(["verify", str(out)]) == 0
