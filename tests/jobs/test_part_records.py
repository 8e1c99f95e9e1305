"""Per-partition records (PART_RECORDS: ClearML frames) through real exports: each partition
stores its exported items' frames beside its part, in item order; finalize concatenates them,
so frames.jsonl is in manifest order and equals the per-item frame objects; failed items -
including one whose outputs the filesystem refuses after it rendered - have no frame;
`--incremental` carries unchanged frames forward byte for byte (re-exporting an item whose frame
object is gone or is a link out of the output); a partition re-run after a crash never
duplicates a frame; the child process of the native-crash safety net returns records too."""

from __future__ import annotations

import json
from pathlib import Path

from jobs import config
from jobs.cli import run
from jobs.listing import ItemRef
from jobs.manifest_store import RECORDS_DIR, part_key, records_key
from jobs.plan import write_plan
from jobs.storage import Root
from jobs.tasks import CRASH_ENV, WORKER_DIED, ExportContext, process_partition_isolated
from maskcore.formats import supervisely
from tests.conftest import rect

LONG = "n" * 244 + ".png"  # its outputs' temporary names would be too long: given short ones


def export(root: Path, out: Path, *extra: str) -> int:
    return run(["export", str(root), str(out), "--workers", "0", "--format", "clearml",
                "--format", "supervisely", "--set", "partition_size=2", *extra])


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def frames(out: Path) -> list[bytes]:
    return (out / "clearml/frames.jsonl").read_bytes().splitlines()


def frame_of(out: Path, e: dict) -> bytes:
    (key,) = [o["key"] for o in e["outputs"] if o["key"].startswith("clearml/_frames/")]
    return (out / key).read_bytes().strip()


def token(out: Path) -> str:
    return json.loads((out / "_manifest/plan.json").read_text())["token"]


def test_frames_are_the_partitions_records_in_manifest_order(project, tmp_path):
    p = project()
    for name in ("b.png", "a.png", "c d.png", "z.png", LONG):
        p.add("ds", name, [rect("car", 1, 1, 9, 9)])
    p.add("ds", "broken.png", ann=b"{oops")
    p.add("other", "x.png", [rect("person", 2, 2, 5, 5)])
    out = tmp_path / "out"
    assert export(p.root, out) == 1  # one failed item
    got = lines(out)
    status = {e["item"]: e["status"] for e in got}
    assert status["broken.png"] == "failed" and status[LONG] == "ok"
    exported = [e for e in got if e["status"] == "ok"]
    assert [json.loads(f)["id"] for f in frames(out)] == [f"{e['dataset']}/{e['item']}"
                                                          for e in exported]
    assert frames(out) == [frame_of(out, e) for e in exported]  # the per-item objects
    n_parts = json.loads((out / "manifest.json").read_text())["partitions"]
    records = sorted(f.relative_to(out).as_posix() for f in (out / RECORDS_DIR).rglob("*.*"))
    assert records == sorted(records_key("clearml", i, token(out)) for i in range(n_parts))
    assert run(["verify", str(out)]) == 0


def test_incremental_carries_frames_forward_byte_for_byte(project, tmp_path):
    p = project()
    for k in range(6):
        p.add("ds", f"img{k}.png", [rect("car", k, k, 20 + k, 20)])
    out = tmp_path / "out"
    assert export(p.root, out) == 0
    before = dict(zip((e["item"] for e in lines(out)), frames(out), strict=True))
    kept = out / "clearml/_frames/ds/img0.json"
    mtime = kept.stat().st_mtime_ns

    p.add("ds", "img1.png", [rect("person", 1, 1, 30, 30)], image=False)  # changed
    (p.root / "ds/img/img4.png").unlink()  # removed
    (p.root / "ds/ann/img4.png.json").unlink()
    p.add("ds", "img9.png", [rect("car", 2, 2, 9, 9)])  # new
    (out / "clearml/_frames/ds/img3.json").unlink()  # unchanged input, its frame object gone
    secret = tmp_path / "secret.json"  # ... or a link out of the output: never followed
    secret.write_text('{"secret": "s3cr3t"}\n')
    (out / "clearml/_frames/ds/img5.json").unlink()
    (out / "clearml/_frames/ds/img5.json").symlink_to(secret)

    assert export(p.root, out, "--incremental") == 0
    got = lines(out)
    assert {e["item"]: e["status"] for e in got} == {
        "img0.png": "unchanged", "img1.png": "ok", "img2.png": "unchanged", "img3.png": "ok",
        "img5.png": "ok", "img9.png": "ok"}
    after = frames(out)
    assert [json.loads(f)["id"] for f in after] == [f"ds/{e['item']}" for e in got]
    for e, f in zip(got, after, strict=True):
        if e["status"] == "unchanged":
            assert f == before[e["item"]]  # identical bytes
        assert f == frame_of(out, e)
    assert kept.stat().st_mtime_ns == mtime  # carried forward: read back, never rewritten
    assert json.loads(after[1])["rois"][0]["label"] == ["person"]
    assert b"s3cr3t" not in (out / "clearml/frames.jsonl").read_bytes()
    assert run(["verify", str(out)]) == 0

    assert export(p.root, out, "--incremental") == 0  # a second night: all unchanged
    assert {e["status"] for e in lines(out)} == {"unchanged"}
    assert frames(out) == after


def test_a_partition_rerun_after_a_crash_never_duplicates_a_frame(project, tmp_path):
    """The crash came after partition 0 stored its frames but before its part (the commit)."""
    p = project()
    for k in range(5):
        p.add("ds", f"img{k}.png", [rect("car", k, k, 20, 20)])
    out = tmp_path / "out"
    assert export(p.root, out) == 0
    first = frames(out)
    (out / part_key(0, token(out))).unlink()
    (out / "manifest.json").unlink()
    (out / "manifest.jsonl").unlink()
    assert (out / records_key("clearml", 0, token(out))).is_file()
    assert export(p.root, out) == 0
    assert json.loads((out / "manifest.json").read_text())["partitions_resumed"] == 2
    assert frames(out) == first and len(first) == 5


def test_the_crash_safety_net_commits_records_without_the_poison_item(project, tmp_path,
                                                                      monkeypatch):
    p = project()
    names = ["a.png", "b.png", "c.png"]
    for n in names:
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    dest, source = Root(str(tmp_path / "out")), Root(str(p.root))
    refs = [ItemRef("ds", n, f"ds/ann/{n}.json", f"ds/img/{n}") for n in names]
    plan = write_plan(dest, iter(refs), partition_size=3, settings="s")
    spec = config.load(None, formats=("clearml",))
    ctx = ExportContext(source, dest, supervisely.parse_meta(source.read("meta.json")),
                        ("clearml",), {"clearml": spec.options["clearml"]},
                        plan_token="0123456789abcdef")
    monkeypatch.setenv(CRASH_ENV, "b.png")  # the child dies (SIGSEGV) on b.png
    counts = process_partition_isolated(ctx, plan.slice(0))
    assert (counts["ok"], counts["failed"]) == (2, 1)
    part = [json.loads(x) for x in (dest.read(part_key(0, ctx.plan_token))).splitlines()]
    assert part[1]["error"] == WORKER_DIED
    records = dest.read(records_key("clearml", 0, ctx.plan_token)).splitlines()
    assert [json.loads(r)["id"] for r in records] == ["ds/a.png", "ds/c.png"]
