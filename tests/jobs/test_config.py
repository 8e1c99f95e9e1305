"""Config errors stop before any work with exit code 2 and a message naming the key; YAML jobs
get the app's defaults, DTL layers the DTL's, explicit keys win."""

from __future__ import annotations

import json

import pytest

from jobs import config
from jobs.cli import run
from maskcore.errors import ConfigError
from tests.conftest import rect


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_yaml_job_gets_app_defaults_and_dtl_gets_dtl_defaults(tmp_path):
    app = config.load(write(tmp_path, "a.yaml", "supervisely: {masks_instances: true}\n"))
    assert (app.supervisely.human_style, app.supervisely.thickness) == ("app", 2)
    assert app.supervisely.masks_instances
    dtl = config.load(write(tmp_path, "d.json", json.dumps(
        {"action": "save_masks", "src": ["$x"], "dst": "$y",
         "settings": {"masks_machine": True, "masks_human": True,
                      "gt_machine_color": {"car": [1, 1, 1]},
                      "gt_human_color": {"car": [0, 0, 0]}}})))
    assert (dtl.supervisely.human_style, dtl.supervisely.thickness) == ("dtl", 1)
    assert dtl.supervisely.dtl


def test_set_overrides_win(tmp_path):
    spec = config.load(write(tmp_path, "a.yaml", "supervisely: {thickness: 3}\n"),
                       sets=["supervisely.thickness=5", "partition_size=7"])
    assert spec.supervisely.thickness == 5 and spec.partition_size == 7


@pytest.mark.parametrize(("text", "key"), [
    ("colour: red\n", "colour"),
    ("supervisely: {masks_machin: true}\n", "supervisely.masks_machin"),
    ("supervisely: {gt_machine_color: {car: [1, 2, 300]}}\n", "supervisely.gt_machine_color.car"),
    ("supervisely: {gt_machine_color: {car: [1, 1, 1], person: [1, 1, 1]}}\n",
     "supervisely.gt_machine_color.person"),
    ("supervisely: {human_style: fancy}\n", "supervisely.human_style"),
    ("supervisely: {thickness: 0}\n", "supervisely.thickness"),
    ("formats: [tiff]\n", "formats"),
    ("storage_options: {key: x}\n", "storage_options"),
    ("partition_size: -1\n", "partition_size"),
])
def test_config_errors_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, "bad.yaml", text))
    assert e.value.key == key


def test_unknown_class_in_colour_map_exits_2_before_any_work(tmp_path, project, capsys):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    cfg = write(tmp_path, "c.yaml", "supervisely: {gt_machine_color: {zebra: [1, 1, 1]}}\n")
    out = tmp_path / "out"
    assert run(["export", str(p.root), str(out), "--config", cfg, "--workers", "0"]) == 2
    assert "supervisely.gt_machine_color.zebra" in capsys.readouterr().err
    assert not out.exists()


def test_bad_cli_usage_and_missing_input_exit_2(tmp_path):
    assert run(["export", str(tmp_path / "nothing"), str(tmp_path / "o"), "--workers", "0"]) == 2
    assert run(["export"]) == 2


def test_render_section_is_job_level_and_reaches_every_format(tmp_path):
    spec = config.load(write(tmp_path, "r.yaml", "render: {thickness: 4}\n"
                             "formats: [supervisely, cvat, clearml, zarr]\n"))
    assert spec.render.thickness == 4
    assert {spec.options[f].thickness for f in ("supervisely", "cvat", "clearml", "zarr")} == {4}
    # a format's own thickness (the DTL name) is the job's render thickness, for every format
    old = config.load(write(tmp_path, "o.yaml", "zarr: {thickness: 3}\n"))
    assert old.render.thickness == 3 and old.supervisely.thickness == 3
    assert config.load().render.thickness == 2  # the app's default; DTL's is 1 (above)


@pytest.mark.parametrize(("text", "key"), [
    ("supervisely: {thickness: 1}\nzarr: {thickness: 2}\n", "zarr.thickness"),
    ("render: {thickness: 3}\nclearml: {thickness: 2}\n", "clearml.thickness"),
    ("render: {thickness: 0}\n", "render.thickness"),
    ("render: {width: 2}\n", "render.width"),
    ("render: 3\n", "render"),
])
def test_render_conflicts_and_bad_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, "bad.yaml", text))
    assert e.value.key == key
    if "zarr.thickness" in key:
        assert "supervisely.thickness=1 and zarr.thickness=2" in str(e.value)


def test_settings_hash_sees_the_render_thickness_wherever_it_is_set(tmp_path):
    a = config.load(write(tmp_path, "a.yaml", "render: {thickness: 3}\n"))
    b = config.load(write(tmp_path, "b.yaml", "supervisely: {thickness: 3}\n"))
    c = config.load(write(tmp_path, "c.yaml", "render: {thickness: 2}\n"))
    assert a.settings_hash == b.settings_hash != c.settings_hash
