"""Planning (jobs/plan.py, jobs/manifest_store.py): refs streamed into plan shards whose byte
ranges give every partition back exactly; partition sizes chosen from the item count; driver
memory flat in the number of items; the baseline merge-joined while planning, bad baseline lines
ignored and never deleted; removed items' outputs deleted in bulk; a failed run never leaves the
next one worse off."""

from __future__ import annotations

import json
import threading
import tracemalloc
from collections.abc import Iterator

import pytest

from jobs import job as jobmod
from jobs import plan as planmod
from jobs import tasks
from jobs.cli import run
from jobs.listing import ItemRef
from jobs.manifest_store import (
    BASELINE_KEY,
    ShardWriter,
    decode_ref,
    delete_keys,
    encode_ref,
    is_token,
    iter_baseline,
    new_token,
    part_key,
    read_slice,
    records_key,
    sweep_parts,
)
from jobs.plan import auto_partition_size, prepare_plan, write_plan
from jobs.storage import Root
from tests.conftest import rect


def synthetic(n: int, ds: str = "ds") -> Iterator[ItemRef]:
    for i in range(n):
        yield ItemRef(ds, f"img_{i:08d}.png", f"{ds}/ann/img_{i:08d}.png.json",
                      f"{ds}/img/img_{i:08d}.png", ann_tag=f"10-{i}", image_tag=f"20-{i}")


@pytest.mark.parametrize(("count", "size", "parts"), [
    (1, 1, 1), (80, 2, 40), (64, 1, 64), (6_400, 100, 64), (320_000, 100, 3_200),
    (1_000_000, 200, 5_000), (10_000_000, 2000, 5_000), (20_000_000, 4000, 5_000)])
def test_auto_partition_size_spreads_small_jobs_and_caps_tasks(count, size, parts):
    assert auto_partition_size(count) == size
    assert -(-count // size) == parts <= 100_000


def test_80_items_on_the_default_become_40_partitions_not_50_plus_30(project, tmp_path):
    p = project()
    for k in range(80):
        p.add("ds", f"i{k:02d}.png", [rect("car", 1, 1, 5, 5)], w=8, h=8)
    out = tmp_path / "out"
    assert run(["export", str(p.root), str(out), "--workers", "0"]) == 0
    plan = json.loads((out / "_manifest/plan.json").read_text())
    assert plan["partitions"] == 40 and plan["partition_size"] == 2
    sizes = [len((out / part_key(i, plan["token"])).read_text().splitlines())
             for i in range(40)]
    assert sizes == [2] * 40
    # an explicit number still wins
    assert run(["export", str(p.root), str(out), "--workers", "0", "--set",
                "partition_size=50"]) == 0
    assert json.loads((out / "_manifest/plan.json").read_text())["partitions"] == 2


def test_every_partition_reads_back_its_items_from_small_shards(tmp_path):
    dest = Root(str(tmp_path))
    refs = list(synthetic(1000))
    refs[3] = ItemRef("ds", "img_00000003.png", None, None, "a reason\nwith a newline",
                      ann_inline=b"\xff\x00binary", ann_more=("x", "y"))
    refs[4] = ItemRef("ds", "img_00000004.png", None, None, ann_inline="é\n{}".encode())
    # str.splitlines() also breaks at these (JSON keeps them raw): the whole run failed
    refs[5] = ItemRef("ds", "img_00000005\u2028\x1c\x85\u2029\x0b\x0c.png", None, None,
                      ann_inline='{"x": "\u2028\x1d"}'.encode())
    plan = write_plan(dest, iter(refs), partition_size=7, settings="s", shard_bytes=5000)
    assert plan.n_shards > 5 and plan.n_parts == 143 and plan.count == 1000
    got = [r for pid in range(plan.n_parts) for r, _ in read_slice(dest, plan.slice(pid))]
    assert got == refs
    assert [plan.items_in(p) for p in (0, 142)] == [7, 1000 - 142 * 7]


def test_shards_are_cut_between_partitions(tmp_path):
    dest = Root(str(tmp_path))
    w = ShardWriter(dest, shard_bytes=300)
    lines = [f'{{"r":{encode_ref(r)},"p":null}}\n'.encode() for r in synthetic(40)]
    for k, line in enumerate(lines, start=1):
        w.add(line)
        if k % 3 == 0 or k == 40:
            w.end_partition()
    n_shards = w.close()
    assert n_shards > 3
    for pid in range(w.n_parts):
        items = read_slice(dest, w.slice(pid))
        assert [decode_ref(json.loads(x)["r"]) for x in lines[pid * 3:pid * 3 + 3]] == \
            [r for r, _ in items]


def test_fingerprint_follows_keys_tags_size_and_settings(tmp_path):
    dest = Root(str(tmp_path))

    def fp(refs, size=10, settings="s"):
        return write_plan(dest, iter(refs), partition_size=size, settings=settings).fingerprint

    base = list(synthetic(20))
    assert fp(base) == fp(list(synthetic(20)))
    changed = list(base)
    changed[5] = ItemRef(*[getattr(base[5], f) for f in ("dataset", "name", "ann_key",
                                                        "image_key")], ann_tag="other")
    assert len({fp(base), fp(changed), fp(base, size=5), fp(base, settings="t")}) == 4


def _peak(n: int, tmp) -> int:
    dest = Root(str(tmp))
    tracemalloc.start()
    plan = write_plan(dest, synthetic(n), partition_size=100, settings="s",
                      shard_bytes=1 << 18)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    plan.close()
    return peak


def test_planning_memory_does_not_grow_with_the_items(tmp_path):
    small = _peak(5_000, tmp_path / "a")
    large = _peak(50_000, tmp_path / "b")
    assert large < 1.2 * small + 500_000, (small, large)  # 10x the items, not 10x memory
    assert large < 8_000_000


def _baseline_line(ds, item, keys, status="ok"):
    return json.dumps({"dataset": ds, "item": item, "status": status,
                       "outputs": [{"key": k, "size": 1, "checksum": "md5:0"} for k in keys]})


def test_bad_baseline_lines_are_ignored_and_never_followed(tmp_path, caplog):
    out = tmp_path / "out"
    (out / "_manifest").mkdir(parents=True)
    canary = tmp_path / "canary.png"
    canary.write_bytes(b"keep me")
    lines = [
        _baseline_line("ds", "a", ["supervisely/ds/masks_machine/a.png"]),
        _baseline_line("ds", "b", ["../canary.png"]),
        _baseline_line("ds", "c", [str(canary)]),
        "[1, 2]",
        "{not json",
        _baseline_line("ds", "d", ["manifest.json"]),
        _baseline_line("ds", "e", ["_manifest/plan.json"]),
        json.dumps({"dataset": "ds", "item": 5, "outputs": []}),
        _baseline_line("ds", "f", ["supervisely/ds/masks_machine/f.png"]),
        _baseline_line("ds", "ab", ["supervisely/ds/masks_machine/ab.png"]),  # out of order
        _baseline_line("ds", "f", ["supervisely/ds/masks_machine/f.png"]),  # repeated
        json.dumps({"dataset": "ds", "item": "g", "outputs": "nope"}),
    ]
    (out / BASELINE_KEY).write_text("\n".join(lines) + "\n")
    got = [(k, keys) for k, _line, keys in iter_baseline(Root(str(out)))]
    assert got == [(("ds", "a"), ["supervisely/ds/masks_machine/a.png"]),
                   (("ds", "f"), ["supervisely/ds/masks_machine/f.png"])]
    assert "ignored 10 invalid lines" in caplog.text


def test_merge_join_finds_removed_items_and_deletes_their_outputs_in_bulk(tmp_path):
    out = tmp_path / "out"
    machine = out / "supervisely/ds/masks_machine"
    machine.mkdir(parents=True)
    names = [f"img_{i:08d}.png" for i in range(10)]
    for n in names:
        (machine / n).write_bytes(b"x")
    (out / "_manifest").mkdir()
    (out / BASELINE_KEY).write_text("".join(
        _baseline_line("ds", n, [f"supervisely/ds/masks_machine/{n}"]) + "\n" for n in names))
    (out / "supervisely/ds/masks_machine/elsewhere.png").write_bytes(b"x")
    keep = [r for i, r in enumerate(synthetic(12)) if i not in (0, 4, 9)]  # 3 removed, 2 new
    dest = Root(str(out))
    plan = write_plan(dest, iter(keep), partition_size=4, settings="s", incremental=True)
    assert (plan.baseline_lines, plan.removed_items, plan.removed_keys) == (7, 3, 3)
    first = read_slice(dest, plan.slice(0))
    assert first[0][1]["item"] == "img_00000001.png"  # the baseline line rides in the plan
    assert read_slice(dest, plan.slice(2))[-1][1] is None  # a new item: no baseline
    assert prepare_plan(dest, plan) == set()
    plan.close()
    assert sorted(p.name for p in machine.iterdir()) == sorted(
        {n for n in names} - {names[0], names[4], names[9]} | {"elsewhere.png"})


def test_unsorted_refs_are_refused_when_a_baseline_is_merged(tmp_path):
    out = tmp_path / "out"
    (out / "_manifest").mkdir(parents=True)
    (out / BASELINE_KEY).write_text(_baseline_line("ds", "a", []) + "\n")
    refs = list(synthetic(3))[::-1]
    with pytest.raises(ValueError, match="sorted by"):
        write_plan(Root(str(out)), iter(refs), partition_size=2, settings="s", incremental=True)


class CountingRoot(Root):
    """A memory:// root that counts bulk deletes and refuses exists() (the contract: none)."""

    calls: list[int]

    def delete(self, keys):
        type(self).calls.append(len(keys))
        super().delete(keys)

    def exists(self, key):
        raise AssertionError("exists() per key")


def test_deletes_go_in_batches_of_1000_without_exists(tmp_path):
    CountingRoot.calls = []
    dest = CountingRoot(f"memory://{tmp_path.name}/out")
    keys = [f"supervisely/ds/m/{i}.png" for i in range(2500)]
    dest.write_many({k: b"x" for k in keys[:2000]})  # 500 are already gone: fine
    assert delete_keys(dest, keys) == 2500
    assert CountingRoot.calls == [1000, 1000, 500]
    assert list(Root(dest.url).list_files("supervisely")) == []


def test_a_tampered_baseline_then_every_night_works(project, tmp_path, caplog):
    p = project()
    for k in range(4):
        p.add("ds", f"img{k}.png", [rect("car", 1, 1, 9, 9)])
    out = tmp_path / "out"
    canary = tmp_path / "outside.png"
    canary.write_bytes(b"must survive")
    args = ["export", str(p.root), str(out), "--workers", "0", "--incremental"]
    assert run(args) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    evil = json.loads(lines[1])
    evil["outputs"][0]["key"] = "../outside.png"
    lines[1] = json.dumps(evil)
    lines.insert(0, _baseline_line("zz", "gone.png", ["/etc/passwd"]))  # absolute, and first
    lines.append(_baseline_line("ds", "removed.png", ["manifest.json"]))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    for _night in range(3):
        assert run(args) == 0
        assert canary.read_bytes() == b"must survive"
        assert (out / "manifest.json").exists()
        assert run(["verify", str(out)]) == 0
    assert "ignoring line" in caplog.text


def test_a_run_that_fails_while_planning_leaves_the_last_manifest(project, tmp_path,
                                                                  monkeypatch):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    args = ["export", str(p.root), str(out), "--workers", "0", "--incremental"]
    assert run(args) == 0
    before = (out / "manifest.jsonl").read_text()

    def broken(*a, **k):
        raise OSError("the store went away while planning")

    monkeypatch.setattr(planmod, "encode_ref", broken)
    assert run(args) == 3  # the job could not finish; rerunning resumes
    assert (out / "manifest.json").exists() and (out / "manifest.jsonl").read_text() == before
    monkeypatch.undo()
    assert run(args) == 0
    assert {json.loads(x)["status"] for x in (out / "manifest.jsonl").read_text().splitlines()
            } == {"unchanged"}


def _token(out) -> str:
    return json.loads((out / "_manifest/plan.json").read_text())["token"]


def test_a_dead_drivers_late_part_is_ignored_and_resume_keeps_the_current_ones(
        project, tmp_path, monkeypatch):
    """Issue 10's race, for real: a driver dies, the input changes, the command is rerun at
    once, and a task of the dead driver - still running - commits its old-plan part after the
    new plan cleared the parts. That part carries the old plan's token: it is never resumed nor
    merged (nor are its frames), and it is deleted; a resume of the new plan still skips the
    partitions the new plan committed."""
    p = project()
    for n in ("a.png", "b.png", "c.png"):
        p.add("ds", n, [rect("car", 1, 1, 5, 5)])
    out = tmp_path / "out"
    args = ["export", str(p.root), str(out), "--workers", "0", "--format", "clearml",
            "--format", "supervisely", "--set", "partition_size=1"]
    real_run, real_commit = jobmod.run_partitions, tasks._PartLines.commit
    reached, go = threading.Event(), threading.Event()
    late: list[threading.Thread] = []

    def commit(self, dest, pid, token):
        if threading.current_thread().name == "dead-driver-task":
            reached.set()  # its outputs are written; its part is not
            assert go.wait(60)
        return real_commit(self, dest, pid, token)

    def dies_after_one(parts, *, ctx, **kw):
        parts = list(parts)
        late.append(threading.Thread(target=tasks.process_partition, args=(ctx, parts[1]),
                                     name="dead-driver-task"))
        late[0].start()
        assert reached.wait(60)
        real_run(parts[:1], ctx=ctx, **kw)
        raise OSError("the driver died")

    monkeypatch.setattr(tasks._PartLines, "commit", commit)
    monkeypatch.setattr(jobmod, "run_partitions", dies_after_one)
    assert run(args) != 0
    old = _token(out)

    p.add("ds", "b.png", [rect("person", 1, 1, 5, 5)])  # the input changes

    def late_commit_then_dies_after_one(parts, *, ctx, **kw):
        assert ctx.plan_token != old and not (out / part_key(0, old)).exists()  # cleared
        go.set()
        late[0].join(60)  # the dead driver's task commits now, under the new plan
        assert (out / part_key(1, old)).is_file()
        real_run(list(parts)[:1], ctx=ctx, **kw)
        raise OSError("this driver died too")

    monkeypatch.setattr(jobmod, "run_partitions", late_commit_then_dies_after_one)
    assert run(args) != 0
    new = _token(out)
    kept = (out / part_key(0, new)).stat().st_mtime_ns
    assert (out / part_key(1, old)).is_file() and not (out / part_key(1, new)).exists()

    monkeypatch.setattr(jobmod, "run_partitions", real_run)
    assert run(args) == 0
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["partitions_resumed"] == 1
    assert (out / part_key(0, new)).stat().st_mtime_ns == kept
    got = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["item"] for e in got] == ["a.png", "b.png", "c.png"]
    assert list(got[1]["class_pixels"]) == ["person"]  # the new input's, not the late part's
    frames = [json.loads(x) for x in (out / "clearml/frames.jsonl").read_text().splitlines()]
    assert [f["id"] for f in frames] == ["ds/a.png", "ds/b.png", "ds/c.png"]
    assert frames[1]["rois"][0]["label"] == ["person"]
    assert not [f for f in (out / "_manifest").rglob("part-*") if new not in f.name]
    assert run(["verify", str(out)]) == 0


def test_resume_keeps_only_the_current_tokens_parts(tmp_path):
    dest = Root(str(tmp_path))
    refs = list(synthetic(4))
    plan = write_plan(dest, iter(refs), partition_size=2, settings="s")
    assert prepare_plan(dest, plan) == set() and is_token(plan.token)
    other, legacy = new_token(), "_manifest/part-00001.jsonl"
    for key in (part_key(0, plan.token), records_key("clearml", 0, plan.token),
                part_key(1, other), records_key("clearml", 1, other), legacy,
                part_key(7, plan.token)):  # beyond the plan: not a partition of it
        dest.write(key, b"")
    again = write_plan(dest, iter(refs), partition_size=2, settings="s")
    assert prepare_plan(dest, again) == {0} and again.token == plan.token
    assert sorted(dest.list_files("_manifest")) == sorted([
        "_manifest/plan.json", "_manifest/plan/shard-00000.jsonl", part_key(0, plan.token),
        records_key("clearml", 0, plan.token), part_key(7, plan.token)])
    changed = write_plan(dest, iter(refs[:3]), partition_size=2, settings="s")
    assert prepare_plan(dest, changed) == set() and changed.token != plan.token
    assert sweep_parts(dest, changed.token, 2) == (set(), 0)  # every old part is gone
