"""Plan-time output clashes (jobs/clashes.py, SPEC 4 "no silent overwrite").

Unit level: every clash kind (same key, a key inside another item's file or folder, a sidecar
name, a zarr group inside another item's array), bad names, the reason naming the others, the
streaming merge back into the refs, bounded memory. Job level: real exports with each clash
kind (in this process and on a LocalCluster) end with `verify` passing and the manifest naming
the failed items; a drift test checks that every object an export writes was declared by
`planned_keys` / `reserved_keys`.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from jobs.clashes import JOB_RESERVED, _KeyRuns, detect_clashes
from jobs.cli import run
from jobs.listing import ItemRef
from maskcore.formats import FORMATS
from tests.conftest import rect

ALL = ("supervisely", "cvat", "clearml", "zarr")


def options(formats=ALL, **raw):
    return {f: FORMATS[f].Options.from_mapping(raw.get(f, {}), prefix=f, defaults={})
            for f in formats}


def refs(*pairs, problem=None):
    return [ItemRef(ds, name, None, None, problem) for ds, name in sorted(pairs)]


def failures(items, formats=ALL, **raw):
    with detect_clashes(items, formats=formats, options=options(formats, **raw)) as report:
        return {f"{ds}/{name}": reason for _, ds, name, reason in report.failures()}


# ---------------------------------------------------------------------------- unit: kinds
def test_same_stem_in_one_dataset_fails_both_and_names_the_other():
    got = failures(refs(("ds", "a.png"), ("ds", "a.jpg"), ("ds", "b.png")),
                   formats=("supervisely",))
    assert set(got) == {"ds/a.png", "ds/a.jpg"}
    assert "ds/a.jpg" in got["ds/a.png"] and "ds/a.png" in got["ds/a.jpg"]
    assert "supervisely/ds/masks_" in got["ds/a.png"]


def test_cvat_ids_ignore_the_subset_so_two_datasets_clash_only_in_cvat():
    items = refs(("train", "x.png"), ("val", "x.png"), ("val", "y.png"))
    assert failures(items, formats=("supervisely", "clearml", "zarr")) == {}
    got = failures(items, formats=("cvat",))
    assert set(got) == {"train/x.png", "val/x.png"}
    assert "cvat/SegmentationClass/x.png" in got["train/x.png"] and "val/x.png" in \
        got["train/x.png"]


def test_a_key_that_is_a_folder_of_another_items_key():
    # cvat ids keep sub-folders: x.jpg -> SegmentationClass/x.png, x.png/y.jpg -> x.png/y.png
    got = failures(refs(("ds", "x.jpg"), ("ds", "x.png/y.jpg"), ("ds", "z.jpg")),
                   formats=("cvat",))
    assert set(got) == {"ds/x.jpg", "ds/x.png/y.jpg"}
    assert "inside cvat/SegmentationClass/x.png: a file of ds/x.jpg" in got["ds/x.png/y.jpg"]
    assert "ds/x.png/y.jpg need as a folder" in got["ds/x.jpg"]


def test_supervisely_flattens_sub_folders_so_flattened_twins_clash():
    got = failures(refs(("ds", "x"), ("ds", "x/y.png")), formats=("supervisely",),
                   supervisely={"masks_machine": False, "masks_human": False,
                                "annotations": False})
    # supervisely flattens sub-folders into the file name (img/x_y.png): no clash there
    assert got == {}
    got = failures(refs(("ds", "x.png"), ("ds", "x_y.png"), ("ds", "x/y.png")),
                   formats=("supervisely",))
    assert set(got) == {"ds/x_y.png", "ds/x/y.png"}


def test_zarr_group_inside_another_items_array():
    got = failures(refs(("ds", "a.png"), ("ds", "a/class/b.png"), ("ds", "a/b.png")),
                   formats=("zarr",))
    # a/b.png is a group beside a's arrays (allowed, see assemble.py); a/class/b.png is not
    assert set(got) == {"ds/a.png", "ds/a/class/b.png"}
    assert "inside zarr/ds/a/class/: a folder of ds/a.png" in got["ds/a/class/b.png"]
    assert "need as a folder" in got["ds/a.png"]


def test_zarr_group_named_like_an_array_fails_alone():
    got = failures(refs(("ds", "a.png"), ("ds", "a/class.png")), formats=("zarr",))
    assert set(got) == {"ds/a/class.png"} and "look like an array" in got["ds/a/class.png"]


@pytest.mark.parametrize("formats, ds, name, sidecar", [
    (("supervisely",), "obj_class_to_machine_color.json", "a.png",
     "supervisely/obj_class_to_machine_color.json"),
    (("supervisely",), "meta.json", "a.png", "supervisely/meta.json"),
    (("zarr",), "zarr.json", "a.png", "zarr/zarr.json"),
    (("zarr",), "ds", "zarr.json.png", "zarr/ds/zarr.json"),  # the dataset's group node
])
def test_dataset_or_item_named_like_a_sidecar(formats, ds, name, sidecar):
    got = failures(refs((ds, name), ("other", "b.png")), formats=formats)
    assert set(got) == {f"{ds}/{name}"}
    assert f"{sidecar}: a file maskjob writes at finalize" in got[f"{ds}/{name}"]


def test_cvat_subset_that_no_list_file_can_hold_fails_at_plan_time():
    got = failures(refs(("my_subset", "a.png"), ("default", "b.png")), formats=("cvat",))
    assert set(got) == {"my_subset/a.png"} and "without '_'" in got["my_subset/a.png"]


@pytest.mark.parametrize("name, why", [
    ("new\nline.png", "control characters"),
    ("nul\x00.png", "control characters"),
    ("../up.png", "other than empty, '.' or '..'"),
    ("/abs/a.png", "a relative key"),
    ("x" * 256 + ".png", "at most 255 bytes"),
])
def test_bad_names_fail_with_a_reason_and_take_no_part(name, why):
    # a bad name never clashes with anything: its would-be twin is exported
    twin = "new.png" if "\n" in name else "a.png"
    got = failures(refs(("ds", name), ("ds", twin)))
    assert set(got) == {f"ds/{name}"} and why in got[f"ds/{name}"]


def test_a_derived_key_over_the_limit_fails_naming_the_key():
    name = "n" * 247 + ".jpeg"  # the masks fit, the annotation copy <name>.json does not
    got = failures(refs(("ds", name)), formats=("supervisely",))
    assert "output key 'supervisely/ds/ann/" in got[f"ds/{name}"]
    assert failures(refs(("ds", name)), formats=("cvat",)) == {}


def test_items_with_a_listing_problem_are_not_planned():
    items = refs(("ds", "a.png")) + refs(("ds", "a.jpg"), problem="no annotation")
    assert failures(items, formats=("supervisely",)) == {}


def test_many_way_clash_names_three_and_counts_the_rest():
    items = refs(*[("ds", f"a.{ext}") for ext in ("png", "jpg", "bmp", "gif", "tif", "webp")])
    got = failures(items, formats=("cvat",))
    assert len(got) == 6
    reason = got["ds/a.bmp"]
    assert reason.count("ds/a.") == 3 and "and 2 more items" in reason


def test_spilled_runs_find_the_same_clashes_as_one_run_in_memory(monkeypatch):
    """Every clash kind at once, with the keys sorted in memory, then spilled in runs of 64
    rows and merged (and the runs merged again past MAX_RUNS): the same failures."""
    items = refs(("ds", "a.png"), ("ds", "a.jpg"), ("ds", "a/class/b.png"), ("ds", "x.jpg"),
                 ("ds", "x.png/y.jpg"), ("meta.json", "x.png"), ("train", "x.png"),
                 ("val", "x.png"), *[("big", f"i{i:04d}.png") for i in range(300)],
                 ("big", "i0007.jpg"), ("zz", "new\nline.png"))
    in_memory = failures(items)
    assert {"ds/a.png", "ds/a.jpg", "ds/a/class/b.png", "ds/x.png/y.jpg", "meta.json/x.png",
            "big/i0007.png", "big/i0007.jpg", "zz/new\nline.png"} <= set(in_memory)
    monkeypatch.setattr("jobs.clashes.BATCH", 50)  # rows added (and maybe spilled) at once
    monkeypatch.setattr("jobs.clashes.RUN_BLOCK", 16)
    monkeypatch.setattr("jobs.clashes.ROW_BYTES", 64 * 2**20 // 64)  # runs of 64 rows
    spills = []
    monkeypatch.setattr("jobs.clashes._KeyRuns._write",
                        lambda self, rows, write=_KeyRuns._write: spills.append(1) or write(
                            self, rows))
    monkeypatch.setattr("jobs.clashes.MAX_RUNS", 4)
    assert failures(items) == in_memory
    assert len(spills) > 20


def test_key_runs_sort_any_rows_across_spills_and_merges(tmp_path, monkeypatch):
    import random

    monkeypatch.setattr("jobs.clashes.RUN_BLOCK", 7)
    monkeypatch.setattr("jobs.clashes.MAX_RUNS", 3)
    rng = random.Random(5)
    rows = [("".join(rng.choice("ab/\x01é") for _ in range(rng.randint(1, 6))),
             rng.randint(0, 3 << 40)) for _ in range(2000)]
    store = _KeyRuns(str(tmp_path), max_rows=50)
    for i in range(0, len(rows), 33):
        chunk = rows[i:i + 33]
        store.add([k for k, _ in chunk], [t for _, t in chunk])
    assert max(level for level, _ in store.runs) >= 2  # runs of runs were merged
    assert len(list(tmp_path.iterdir())) == len(store.runs)  # merged runs were removed
    assert list(store) == sorted((k.replace("/", "\x01"), t) for k, t in rows)
    assert store.bytes == sum(p.stat().st_size for p in tmp_path.iterdir()) > 0
    assert store.peak_bytes >= store.bytes
    store.remove()
    assert list(tmp_path.iterdir()) == [] and store.bytes == 0


def test_same_input_same_reasons():
    items = refs(("ds", "a.png"), ("ds", "a.jpg"), ("meta.json", "x.png"), ("b", "x.jpg"))
    assert failures(items) == failures(list(items))


# ---------------------------------------------------------------------------- unit: report
def test_annotate_merges_reasons_in_order_and_drops_the_previous_line():
    items = [ItemRef("ds", n, None, None, previous='{"old": 1}')
             for n in ("a.jpg", "a.png", "b.png")]
    with detect_clashes(items, formats=("cvat",), options=options(("cvat",))) as report:
        out = list(report.annotate(items))
        assert report.items == 3 and report.problems == 2
        assert report.problem("ds", "a.png") and report.problem("ds", "b.png") is None
        with pytest.raises(ValueError, match="same order"):
            list(report.annotate(list(reversed(items))))
    assert [r.name for r in out] == ["a.jpg", "a.png", "b.png"]
    assert out[0].problem and out[0].previous is None and out[1].problem
    assert out[2] is items[2]


def test_temporary_folder_is_removed(tmp_path):
    with detect_clashes(refs(("ds", "a.png")), formats=ALL, options=options(),
                        workdir=str(tmp_path)):
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []


def test_driver_memory_does_not_grow_with_the_number_of_items(tmp_path, monkeypatch):
    """Lazy streams of 2k and 12k refs (every 100th with a same-stem twin): Python's peak
    allocation is the same for both - names and reasons live in SQLite (bounded cache), keys
    in sorted runs on disk; Python holds one batch and one run of rows (BATCH and the run
    size, small here so that both streams exceed them; the 12k one merges its runs once)."""
    monkeypatch.setattr("jobs.clashes.BATCH", 500)
    monkeypatch.setattr("jobs.clashes.RUN_BLOCK", 64)
    monkeypatch.setattr("jobs.clashes.ROW_BYTES", 4 * 2**20 // 1000)  # runs of 1000 rows
    monkeypatch.setattr("jobs.clashes.MAX_RUNS", 16)
    def stream(n):
        for i in range(n):
            yield ItemRef(f"ds{i // 1000}", f"img{i:07d}.jpg", None, None)
            if i % 100 == 0:
                yield ItemRef(f"ds{i // 1000}", f"img{i:07d}.png", None, None)

    peaks = []
    for n in (2_000, 12_000):
        tracemalloc.start()
        try:
            with detect_clashes(stream(n), formats=("cvat",), options=options(("cvat",)),
                                workdir=str(tmp_path), cache_mib=4) as report:
                assert report.problems == 2 * (n // 100)
                assert sum(1 for r in report.annotate(stream(n)) if r.problem) == n // 50
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.3 + 256 * 1024, peaks


# ---------------------------------------------------------------------------- job level
def manifest(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {f"{e['dataset']}/{e['item']}": e for e in map(json.loads, lines)}


def export(inp, out, *extra) -> int:
    return run(["export", str(inp), str(out), *extra])


@pytest.fixture
def clashing_project(project):
    p = project()
    for ds, name in [("ds", "a.png"), ("ds", "a.jpg"), ("ds", "b.png"), ("other", "b.png"),
                     ("obj_class_to_machine_color.json", "c.png"), ("ds", "new\nline.png"),
                     ("ds", "zarr.json.png"), ("ds", "good.png")]:
        p.add(ds, name, [rect("car", 2, 2, 20, 20)])
    return p


EXPECTED_FAILED = {
    "ds/a.png": "ds/a.jpg", "ds/a.jpg": "ds/a.png",  # same stem
    "ds/b.png": "other/b.png", "other/b.png": "ds/b.png",  # same CVAT id in two subsets
    # a sidecar's name (and, in CVAT, a subset name with '_')
    "obj_class_to_machine_color.json/c.png": "obj_class_to_machine_color.json",
    "ds/new\nline.png": "control characters",
    "ds/zarr.json.png": "zarr/ds/zarr.json",  # the dataset's zarr group node
}


def check_clash_run(out: Path) -> None:
    entries = manifest(out)
    failed = {k: e["error"] for k, e in entries.items() if e["status"] == "failed"}
    assert set(failed) == set(EXPECTED_FAILED)
    for k, needle in EXPECTED_FAILED.items():
        assert needle in failed[k], (k, failed[k])
    assert all(not entries[k]["outputs"] for k in failed)
    assert entries["ds/good.png"]["status"] == "ok"
    assert run(["verify", str(out)]) == 0
    assert (out / "cvat/ImageSets/Segmentation/ds.txt").read_text() == "good\n"


def test_export_with_every_clash_kind_fails_them_and_verify_passes(clashing_project,
                                                                   tmp_path):
    out = tmp_path / "out"
    formats = [a for f in ALL for a in ("--format", f)]
    assert export(clashing_project.root, out, *formats, "--workers", "0") == 1
    check_clash_run(out)
    assert (out / "supervisely/obj_class_to_machine_color.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["summary"]["ok"] == 1
    # supervisely alone: the dataset named like the sidecar fails for that reason
    alone = tmp_path / "alone"
    assert export(clashing_project.root, alone, "--workers", "0") == 1
    error = manifest(alone)["obj_class_to_machine_color.json/c.png"]["error"]
    assert "supervisely/obj_class_to_machine_color.json: a file maskjob writes" in error
    assert manifest(alone)["ds/b.png"]["status"] == "ok"
    assert run(["verify", str(alone)]) == 0


def test_export_on_a_local_cluster_with_clashes(clashing_project, tmp_path):
    out = tmp_path / "dist"
    formats = [a for f in ALL for a in ("--format", f)]
    assert export(clashing_project.root, out, *formats, "--workers", "2") == 1
    check_clash_run(out)


def test_every_written_object_was_declared(project, tmp_path):
    """Drift guard: each output key of each item is covered by its `planned_keys`, and every
    other object under OUTPUT by some `reserved_keys`, a shared declaration or the job's own."""
    p = project()
    p.add("ds", "a.png", [rect("car", 2, 2, 20, 20), rect("car", 4, 4, 9, 9),
                          rect("person", 30, 10, 40, 30)])
    p.add("ds", "b.c.jpeg", [])
    p.add("other", "x.png", [rect("person", 1, 1, 5, 5)])
    out = tmp_path / "out"
    sets = ["--set", "supervisely.masks_instances=true", "--set",
            "supervisely.masks_semantic_rgb=true", "--set", "cvat.zip=true"]
    formats = [a for f in ALL for a in ("--format", f)]
    assert export(p.root, out, *formats, *sets, "--workers", "0") == 0
    opts = options(supervisely={"masks_instances": True, "masks_semantic_rgb": True},
                   cvat={"zip": True})
    declared = [JOB_RESERVED] + [FORMATS[f].reserved_keys(opts[f]) for f in ALL]
    item_keys = set()
    for e in manifest(out).values():
        planned = [FORMATS[f].planned_keys(e["dataset"], e["item"], opts[f]) for f in ALL]
        declared += planned
        for o in e["outputs"]:
            assert any(pk.covers(o["key"]) for pk in planned), o["key"]
            item_keys.add(o["key"])
    written = {str(f.relative_to(out)) for f in out.rglob("*") if f.is_file()}
    for key in sorted(written - item_keys):
        assert any(d.covers(key) for d in declared), key
    assert "cvat/segmentation_mask_1.1.zip" in written
