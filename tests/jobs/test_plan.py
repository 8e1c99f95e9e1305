"""Planning (jobs/plan.py, jobs/manifest_store.py): refs streamed into plan shards whose byte
ranges give every partition back exactly; partition sizes chosen from the item count; driver
memory flat in the number of items; the baseline merge-joined while planning, bad baseline lines
ignored and never deleted; removed items' outputs deleted in bulk; a failed run never leaves the
next one worse off."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator

import pytest

from jobs import plan as planmod
from jobs.cli import run
from jobs.listing import ItemRef
from jobs.manifest_store import (
    BASELINE_KEY,
    ShardWriter,
    decode_ref,
    delete_keys,
    encode_ref,
    iter_baseline,
    part_key,
    read_slice,
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
