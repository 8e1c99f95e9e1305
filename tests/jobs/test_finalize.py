"""finalize_export on real committed parts in a real output folder: one pass that merges the
parts in order (each read once), feeds every format's finalizer, writes the dataset files and
`manifest.json` last; hostile names never become subset-list lines; a dataset named like a
sidecar, a partition's missing frames or an unreadable line is reported in manifest.json, never
a crash; ClearML frames are concatenated from per-partition records, never read one per item;
parts of another plan are ignored and deleted; the summary stays bounded; driver memory does not
grow with the number of items."""

from __future__ import annotations

import contextlib
import itertools
import json
import tracemalloc
from pathlib import Path

import pytest

from jobs import finalize as fin_mod
from jobs.config import load
from jobs.finalize import finalize_export
from jobs.manifest_store import part_key, records_key
from jobs.preview import Sampler
from jobs.storage import Root
from maskcore.formats.base import FinalEntry, OutputRef
from maskcore.manifest import ManifestEntry, Summary
from maskcore.model import ClassInfo, ClassTable

CLASSES = ClassTable((ClassInfo("car", (255, 0, 0), "polygon"),
                      ClassInfo("road", (0, 0, 255), "polygon")))
ALL = ("supervisely", "cvat", "clearml", "zarr")


def outputs(dataset: str, name: str, formats=ALL) -> list[dict]:
    stem = name.rsplit(".", 1)[0]
    keys = {"supervisely": [f"supervisely/{dataset}/masks_machine/{stem}.png"],
            "cvat": [f"cvat/SegmentationClass/{stem}.png", f"cvat/SegmentationObject/{stem}.png"],
            "clearml": [f"clearml/masks/{dataset}/{stem}.png",
                        f"clearml/_frames/{dataset}/{stem}.json"],
            "zarr": [f"zarr/{dataset}/{stem}/zarr.json", f"zarr/{dataset}/{stem}/class/c/0/0"]}
    return [{"key": k, "size": 10, "checksum": "md5:0"} for f in formats for k in keys[f]]


def entry(dataset: str, name: str, status: str = "ok", formats=ALL, **kw) -> ManifestEntry:
    outs = outputs(dataset, name, formats) if status != "failed" else []
    return ManifestEntry(dataset, name, status, outputs=outs,
                         class_pixels={"car": 3} if outs else {}, instances=1, **kw)


TOKEN = "0123456789abcdef"


def commit(out: Path, parts: list[list[ManifestEntry]], token: str = TOKEN) -> None:
    """Committed parts, and the clearml records (frames) the workers wrote beside them."""
    for pid, entries in enumerate(parts):
        frames = [json.dumps({"id": f"{e.dataset}/{e.item}"}) + "\n" for e in entries
                  if any(o["key"].startswith("clearml/_frames/") for o in e.outputs)]
        for key, text in ((records_key("clearml", pid, token), "".join(frames)),
                          (part_key(pid, token), "".join(e.to_line() for e in entries))):
            (out / key).parent.mkdir(parents=True, exist_ok=True)
            (out / key).write_text(text)


def frame_ids(out: Path) -> list[str]:
    return [json.loads(x)["id"] for x in (out / "clearml/frames.jsonl").read_text().splitlines()]


def run_finalize(out: Path | str, n_parts: int, formats=ALL, **sets):
    spec = load(None, sets=[f"{k}={v}" for k, v in sets.items()], formats=formats)
    meta = {"formats": list(formats), "output": {"url": str(out)}, "input": {},
            "classes": [{"index": 1, "name": "car", "color": [255, 0, 0]},
                        {"index": 2, "name": "road", "color": [0, 0, 255]}]}
    return finalize_export(dest=Root(str(out)), n_parts=n_parts, plan_token=TOKEN,
                           formats=formats,
                           options={f: spec.options[f] for f in formats}, classes=CLASSES,
                           meta=meta)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_one_pass_merges_in_order_reads_each_part_once_and_writes_the_summary_last(
        tmp_path, monkeypatch):
    parts = [[entry("a", "x1.png"), entry("a", "x2.png", "failed", error="bad polygon")],
             [entry("a", "sub/x3.jpg", "unchanged"), entry("b", "y1.png")],
             [entry("b", "y2.png")]]
    commit(tmp_path, parts)
    reads: list[str] = []
    real = Root.read_many

    def spy(self, keys):
        reads.extend(k for k in keys if k.startswith("_manifest/"))
        return real(self, keys)

    monkeypatch.setattr(Root, "read_many", spy)
    summary = run_finalize(tmp_path, 3)
    assert sorted(reads) == [part_key(p, TOKEN) for p in range(3)]  # each part read once
    merged = (tmp_path / "manifest.jsonl").read_text()
    assert merged == "".join(e.to_line() for p in parts for e in p)
    s = summary.to_dict()
    assert (s["items"], s["ok"], s["failed"], s["unchanged"]) == (5, 3, 1, 1)
    assert s["failures"] == [{"dataset": "a", "item": "x2.png", "error": "bad polygon"}]
    assert s["problems"] == [] and s["class_pixels"] == {"car": 12}
    lists = tmp_path / "cvat/ImageSets/Segmentation"
    assert (lists / "a.txt").read_text() == "x1\nsub/x3\n" and (lists / "b.txt").read_text() \
        == "y1\ny2\n"
    assert frame_ids(tmp_path) == ["a/x1.png", "a/sub/x3.jpg", "b/y1.png", "b/y2.png"]
    for group in ("a", "a/sub", "b"):  # zarr intermediate groups
        assert json.loads((tmp_path / "zarr" / group / "zarr.json").read_text())[
            "node_type"] == "group"
    for sidecar in ("supervisely/meta.json", "cvat/labelmap.txt", "clearml/mask_labels.json",
                    "zarr/zarr.json", "preview.html"):
        assert (tmp_path / sidecar).is_file(), sidecar
    last = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= last for p in tmp_path.rglob("*") if p.is_file())
    assert manifest(tmp_path)["summary"]["items"] == 5
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("name, why", [
    ("evil\nextra.png", "line break"),
    ("evil\u2028extra.png", "line break"),
    ("evil\rextra.png", "line break"),
    ("/etc/passwd.png", "absolute"),
    ("a/../../escape.png", "'..'"),
    ("back\\slash.png", "backslash"),
])
def test_subset_lists_only_ever_hold_exported_ids(tmp_path, name, why):
    """A tampered part (or a name that slipped through) cannot add a line to a list."""
    hostile = entry("a", name, formats=("cvat",))
    parts = [[entry("a", "good.png", formats=("cvat",)), hostile,
              entry("a", "failed.png", "failed", formats=("cvat",)),
              entry("a", "other.png", formats=("supervisely",))]]  # no cvat output: not listed
    commit(tmp_path, parts)
    summary = run_finalize(tmp_path, 1, formats=("cvat",))
    assert (tmp_path / "cvat/ImageSets/Segmentation/a.txt").read_bytes() == b"good\n"
    assert (len(summary.problems) == 1 and why in summary.problems[0]) or \
        "relative" in summary.problems[0]
    assert manifest(tmp_path)["summary"]["problems_total"] == 1


def test_subset_lists_keep_manifest_order_even_when_a_subset_comes_back(tmp_path):
    commit(tmp_path, [[entry("b", "1.png", formats=("cvat",)),
                       entry("a", "2.png", formats=("cvat",))],
                      [entry("b", "3.png", formats=("cvat",))]])
    run_finalize(tmp_path, 2, formats=("cvat",))
    lists = tmp_path / "cvat/ImageSets/Segmentation"
    assert (lists / "b.txt").read_text() == "1\n3\n" and (lists / "a.txt").read_text() == "2\n"


def test_an_id_that_is_not_the_items_own_is_never_listed(tmp_path):
    e = entry("a", "x.png", formats=("cvat",))
    e.outputs[0]["key"] = "cvat/SegmentationClass/someone_else.png"
    commit(tmp_path, [[e]])
    summary = run_finalize(tmp_path, 1, formats=("cvat",))
    assert not (tmp_path / "cvat/ImageSets/Segmentation/a.txt").exists()  # nothing listed
    assert "not the item's id" in summary.problems[0]


def test_datasets_named_like_sidecars_do_not_crash_finalize(tmp_path):
    """Folders where sidecar files must go (a dataset 'meta.json', 'zarr.json'): the other
    files are written, each that cannot be is listed in manifest.json."""
    parts = [[entry("meta.json", "x.png", formats=("supervisely", "zarr")),
              entry("ok", "y.png", formats=("supervisely", "zarr"))]]
    commit(tmp_path, parts)
    (tmp_path / "supervisely/meta.json/masks_machine").mkdir(parents=True)
    (tmp_path / "zarr/zarr.json/x").mkdir(parents=True)
    summary = run_finalize(tmp_path, 1, formats=("supervisely", "zarr"),
                           **{"supervisely.masks_human": "false"})
    assert summary.items == 2
    problems = manifest(tmp_path)["summary"]["problems"]
    assert any("supervisely/meta.json not written" in p for p in problems)
    assert any("zarr/zarr.json not written" in p for p in problems)
    assert (tmp_path / "supervisely/obj_class_to_machine_color.json").is_file()
    assert (tmp_path / "zarr/ok/zarr.json").is_file()


def test_missing_frames_and_unreadable_lines_are_problems_not_crashes(tmp_path):
    commit(tmp_path, [[entry("a", "x.png", formats=("clearml",))],
                      [entry("a", "y.png", formats=("clearml",))]])
    (tmp_path / records_key("clearml", 0, TOKEN)).unlink()
    with open(tmp_path / part_key(1, TOKEN), "a") as f:
        f.write('{"dataset": "a", "item": 3, "status": "ok"}\n{not json\n')
    summary = run_finalize(tmp_path, 2, formats=("clearml",))
    assert summary.items == 2
    assert frame_ids(tmp_path) == ["a/y.png"]
    assert len(summary.problems) == 3
    assert "the frames of partition 0 are missing" in summary.problems[0]
    assert "cannot be read" in summary.problems[1] and "cannot be read" in summary.problems[2]


def test_frames_that_are_a_link_are_never_followed(tmp_path):
    commit(tmp_path, [[entry("a", "x.png", formats=("clearml",))]])
    secret = tmp_path.parent / f"{tmp_path.name}-secret.json"
    secret.write_text('{"secret": 1}\n')
    records = tmp_path / records_key("clearml", 0, TOKEN)
    records.unlink()
    records.symlink_to(secret)
    summary = run_finalize(tmp_path, 1, formats=("clearml",))
    assert (tmp_path / "clearml/frames.jsonl").read_bytes() == b""
    assert "are missing" in summary.problems[0]


def test_frames_are_read_once_per_partition_never_per_item(tmp_path, monkeypatch):
    """frames.jsonl is the partitions' records concatenated: the per-item frame objects are
    never read (there are none here), whatever the number of items."""
    parts = [[entry("d", f"{p}-{i}.png", formats=("clearml",)) for i in range(50)]
             for p in range(3)]
    parts[1][7] = entry("d", "1-7.png", "failed", formats=("clearml",), error="bad")
    commit(tmp_path, parts)
    reads: list[list[str]] = []
    real = fin_mod._read_many
    monkeypatch.setattr(fin_mod, "_read_many",
                        lambda dest, keys, ok: reads.append(keys) or real(dest, keys, ok))
    run_finalize(tmp_path, 3, formats=("clearml",))
    assert reads == [[records_key("clearml", p, TOKEN) for p in range(3)]]
    assert frame_ids(tmp_path) == [f"d/{e.item}" for p in parts for e in p
                                   if e.status != "failed"]
    assert not (tmp_path / "clearml/_frames").exists()


def test_parts_of_another_plan_are_ignored_and_deleted(tmp_path):
    """A part (and its frames) committed late under an old plan's token - by a task of a driver
    that died - is never merged, and finalize deletes it."""
    commit(tmp_path, [[entry("a", "new.png")]])
    stale_token = "fedcba9876543210"
    commit(tmp_path, [[entry("a", "old.png")], [entry("a", "old2.png")]], token=stale_token)
    legacy = tmp_path / "_manifest/part-00000.jsonl"  # an older version's name: no token
    legacy.write_text(entry("a", "legacy.png").to_line())
    summary = run_finalize(tmp_path, 1)
    assert summary.items == 1
    assert [json.loads(x)["item"] for x in
            (tmp_path / "manifest.jsonl").read_text().splitlines()] == ["new.png"]
    assert frame_ids(tmp_path) == ["a/new.png"]
    left = sorted(str(p.relative_to(tmp_path / "_manifest")) for p in
                  (tmp_path / "_manifest").rglob("*.jsonl"))
    assert left == [f"part-00000-{TOKEN}.jsonl", f"records/clearml/part-00000-{TOKEN}.jsonl"]


def test_summary_is_bounded_whatever_the_failures():
    s = Summary()
    for i in range(2500):
        s.add(FinalEntry("d" * 2000, f"{i}.png", "failed", error="x" * 100_000))
    for _ in range(1500):
        s.problem("p" * 10_000)
    d = s.to_dict()
    assert d["failed"] == 2500 and len(d["failures"]) == 1000 and d["failures_truncated"]
    assert all(len(f["error"]) <= 500 and len(f["dataset"]) <= 500 for f in d["failures"])
    assert len(d["problems"]) == 1000 and d["problems_total"] == 1500
    assert len(json.dumps(d)) < 2_000_000


def test_sampler_spreads_evenly_without_knowing_the_total():
    for total in (5, 12, 13, 100, 1000, 4099):
        s = Sampler(limit=12)
        for i in range(total):
            e = FinalEntry("d", f"{i}", "ok", outputs=[OutputRef("k")])
            s.offer(e, json.dumps({"item": str(i)}).encode())
        got = [int(p["item"]) for p in s.picked]
        assert len(got) == min(12, total) and got[0] == 0
        if total > 24:
            gaps = {b - a for a, b in itertools.pairwise(got)}
            assert len(gaps) == 1 and got[-1] >= total // 2  # even, and reaching the end


def _peak(tmp_path: Path, n: int) -> int:
    out = tmp_path / f"n{n}"
    per_part = 10  # many parts: the part reads run in full batches in both runs
    parts = [[entry(f"ds{i * 3 // n}", f"img_{i:07d}.png", formats=("cvat", "zarr"))
              for i in range(s, min(n, s + per_part))] for s in range(0, n, per_part)]
    commit(out, parts)
    tracemalloc.start()
    try:
        run_finalize(out, len(parts), formats=("cvat", "zarr"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_driver_memory_does_not_grow_with_the_items(tmp_path):
    small, large = _peak(tmp_path, 2000), _peak(tmp_path, 12000)
    # peaks of traced Python memory, 200 vs 1,200 parts: the listing of `_manifest/`
    # (sweep_parts) holds one page of names, never a listing of every part
    assert large < small * 1.2, (small, large)


def test_jobs_finalize_never_names_a_format():
    """Everything format-specific is behind the Writer protocol."""
    root = Path(fin_mod.__file__).parent
    for module in ("finalize.py", "preview.py", "manifest_store.py", "job.py"):
        text = (root / module).read_text()
        assert "getattr(FORMATS" not in text, module
        for name in ALL:
            assert f'"{name}' not in text and f"'{name}" not in text, (module, name)


def test_no_module_of_jobs_tests_a_format_name_or_probes_a_hook():
    """No `name == "supervisely"`, `reader == ...` or `"zarr" in spec.formats` anywhere in
    jobs/ (a format's behaviour is its module's: adding one is a module and a registry line),
    and no optional hooks found by `getattr` on options or finalizers."""
    import ast

    from maskcore.formats import FORMATS, INPUT_FORMATS

    names = set(FORMATS) | set(INPUT_FORMATS)
    root = Path(fin_mod.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                named = [n.value for n in sides if isinstance(n, ast.Constant)
                         and n.value in names]
                assert not named, f"{path.name}:{node.lineno} compares with {named}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" \
                    and getattr(node.args[0], "id", None) != "os" \
                    and path.name not in ("storage.py", "s3_stream.py", "__init__.py"):
                # storage's are fsspec file/filesystem duck types, not format hooks; os's are
                # platform flags
                raise AssertionError(f"{path.name}:{node.lineno} probes a hook with getattr")


def test_a_failed_pass_commits_no_partial_cvat_zip(tmp_path):
    """A part that cannot be read in the middle of the pass (here: the last one is missing)
    stops finalize; the cvat zip being streamed is discarded, not committed half-written, and
    no temporary file is left."""
    out = tmp_path / "out"
    commit(out, [[entry("ds", "a.jpg", formats=("cvat",))],
                 [entry("ds", "b.jpg", formats=("cvat",))]])
    for k in ("cvat/SegmentationClass/a.png", "cvat/SegmentationObject/a.png"):
        (out / k).parent.mkdir(parents=True, exist_ok=True)
        (out / k).write_bytes(b"png")
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises for a missing part
        run_finalize(out, 3, formats=("cvat",), **{"cvat.zip": "true"})
    assert not (out / "cvat/segmentation_mask_1.1.zip").exists()
    assert not [p for p in (out / "cvat").rglob("*") if ".tmp" in p.name]
    assert not (out / "manifest.json").exists()


LINE_STREAMS = ("manifest.jsonl", "clearml/frames.jsonl", "cvat/ImageSets/Segmentation/a.txt")
ARCHIVES = ("cvat/segmentation_mask_1.1.zip", "supervisely/project.tar")
STREAM_SETS = {"cvat.zip": "true", "supervisely.archive": "tar"}


def spy_blocks(monkeypatch) -> dict[str, int | None]:
    """key -> multipart part size of the file `Root.open_write` really yielded (s3fs's
    S3File.blocksize; None on a local disk)."""
    seen: dict[str, int | None] = {}
    real = Root.open_write

    @contextlib.contextmanager
    def spy(self, key, *, archive=False):
        with real(self, key, archive=archive) as f:
            seen[key] = getattr(f, "blocksize", None)
            yield f

    monkeypatch.setattr(Root, "open_write", spy)
    return seen


def test_every_stream_of_the_driver_says_whether_it_is_an_archive(tmp_path, monkeypatch):
    """Line streams (manifest, frames, subset lists) get storage's LINES_BLOCK, archives its
    ARCHIVE_BLOCK: the policy is storage's, the formats only say what they stream."""
    from jobs import storage

    commit(tmp_path, [[entry("a", "x1.png")]])
    kinds: dict[str, bool] = {}
    real_open = Root.open_write

    def open_spy(self, key, *, archive=False):
        kinds[key] = archive
        return real_open(self, key, archive=archive)

    monkeypatch.setattr(Root, "open_write", open_spy)
    run_finalize(tmp_path, 1, **STREAM_SETS)
    assert kinds == {**dict.fromkeys(LINE_STREAMS, False), **dict.fromkeys(ARCHIVES, True)}
    assert storage.stream_block(archive=False) == storage.LINES_BLOCK == 16 * 2**20
    assert storage.stream_block(archive=True) == storage.ARCHIVE_BLOCK == 50 * 2**20


@pytest.mark.s3
def test_on_s3_line_streams_upload_in_16_mib_parts_and_archives_in_50(s3_bucket, tmp_path,
                                                                       monkeypatch):
    """A real finalize on moto: every stream's s3fs file has storage's part size, and 20 MiB
    of ClearML frames (one partition's records) arrive as one object of two parts - its
    multipart ETag says so; s3fs's 50 MiB default would have sent one PUT."""
    from tests.e2e.helpers import new_fs

    commit(tmp_path, [[entry("a", "x1.png")], [entry("a", "x2.png")]])
    line = b'{"id":"a/' + b"x" * 1012 + b'"}\n'  # 1 KiB
    (tmp_path / records_key("clearml", 0, TOKEN)).write_bytes(line * (20 * 1024))
    fs = new_fs()
    fs.put(str(tmp_path) + "/", f"{s3_bucket}/out", recursive=True)
    seen = spy_blocks(monkeypatch)
    run_finalize(f"s3://{s3_bucket}/out", 2, **STREAM_SETS)
    assert seen == {**dict.fromkeys(LINE_STREAMS, 16 * 2**20),
                    **dict.fromkeys(ARCHIVES, 50 * 2**20)}
    info = fs.info(f"{s3_bucket}/out/clearml/frames.jsonl")
    assert info["size"] == 20 * 2**20 + len(b'{"id": "a/x2.png"}\n')  # + partition 1's frame
    assert info["ETag"].strip('"').endswith("-2")
