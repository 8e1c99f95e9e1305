"""The job file is parsed with bounded alias expansion and depth: a YAML alias bomb, a recursive
alias or absurd nesting fail fast with a ConfigError (exit code 2), before anything (hashing,
printing, copying the config) could expand them; ordinary anchors and merge keys still work."""

from __future__ import annotations

import time

import pytest

from jobs.config import load, safe_yaml
from maskcore.errors import ConfigError


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """'Billion laughs' in YAML: a few hundred bytes that expand to width**levels values."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 1000
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb"):
        load(str(path))
    assert time.perf_counter() - t < 10.0


@pytest.mark.parametrize(("text", "needle"), [
    ("a: &a [1, *a]\n", "recursive"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested at most"),
    ("a: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested at most"),
])
def test_recursive_aliases_and_deep_nesting_are_config_errors(tmp_path, text, needle):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load(str(path))


def test_set_values_are_parsed_with_the_same_bounds():
    with pytest.raises(ConfigError, match="alias bomb"):
        load(None, sets=["supervisely.thickness=" + alias_bomb().replace("\n", ", ")
                         .join("{}")])


def test_ordinary_anchors_and_merge_keys_still_load():
    doc = safe_yaml("base: &b {masks_machine: true, thickness: 3}\n"
                    "supervisely: {<<: *b, masks_human: false}\nother: *b\n")
    assert doc["supervisely"] == {"masks_machine": True, "thickness": 3, "masks_human": False}
    assert doc["other"] == {"masks_machine": True, "thickness": 3}
    assert safe_yaml("") is None
