"""Job configuration: a YAML job file or a Supervisely DTL `save_masks` layer -> frozen JobSpec.

Everything is validated here, before any work: unknown keys, types, colours, formats. Checks
that need the input's class list (colour maps naming unknown classes) run in `check_classes`
right after the input's metadata is read, still before any partition is submitted.

Defaults differ by source, as the tools they replace do:
- a YAML job gets the export-as-masks app's defaults (human_style app, thickness 2);
- a DTL JSON layer gets the DTL layer's (human_style dtl, thickness 1);
explicit keys always win, and `--set a.b=value` (value parsed as YAML) wins over both.
S3 credentials never come from here; a `storage_options` key is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maskcore.errors import ConfigError, expected
from maskcore.formats import FORMATS, INPUT_FORMATS
from maskcore.limits import Limits
from maskcore.model import ClassTable

BASE_KEYS = ("formats", "input_format", "partition_size", "max_in_flight", "limits",
             "images_url")
TOP_KEYS = BASE_KEYS + tuple(FORMATS)
APP_DEFAULTS: dict[str, Any] = {"human_style": "app", "thickness": 2}
DTL_DEFAULTS: dict[str, Any] = {"human_style": "dtl", "thickness": 1, "masks_semantic_rgb": False,
                                "masks_instances": False}
DTL_IGNORED = ("archive_name",)  # ml-nodes layer setting with no meaning here


@dataclass(frozen=True)
class JobSpec:
    formats: tuple[str, ...] = ("supervisely",)
    input_format: str = "auto"
    partition_size: int = 0  # 0: auto, from the item count (jobs/plan.py)
    max_in_flight: int = 0  # 0: 2 x the cluster's threads
    options: Mapping[str, Any] = field(default_factory=dict)  # format name -> its Options
    limits: Limits = field(default_factory=Limits)
    images_url: str | None = None
    source: str = "defaults"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def config_hash(self) -> str:
        canon = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return "sha256:" + hashlib.sha256(canon).hexdigest()

    @property
    def settings_hash(self) -> str:
        """Hash of what shapes the outputs (formats and their settings, software version):
        an item whose inputs and settings hash are unchanged need not be exported again."""
        from maskcore import __version__

        eff = {"formats": list(self.formats), "version": __version__,
               **{f: self.raw.get(f, {}) for f in self.formats}, "source": self.source}
        canon = json.dumps(eff, sort_keys=True, default=str).encode()
        return "sha256:" + hashlib.sha256(canon).hexdigest()[:32]

    @property
    def supervisely(self) -> Any:
        return self.options["supervisely"]

    def check_classes(self, classes: ClassTable) -> None:
        for name in self.formats:
            self.options[name].check_classes(classes, name)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(expected("a mapping to set a key in", nxt), key=dotted)
        node = nxt
    node[keys[-1]] = value


def parse_set(assignments: Sequence[str]) -> list[tuple[str, Any]]:
    out = []
    for a in assignments:
        key, eq, value = a.partition("=")
        if not eq or not key:
            raise ConfigError(expected("--set KEY=VALUE", a))
        try:
            out.append((key.strip(), yaml.safe_load(value)))
        except yaml.YAMLError as e:
            raise ConfigError(expected("a YAML value", value), key=key) from e
    return out


def _load_file(path: str) -> tuple[dict[str, Any], str]:
    """(job tree, source) from a YAML job or a DTL save_masks JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: " + expected("valid YAML or JSON", str(e))) from None
    if data is None:
        data = {}
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]  # a DTL graph of one layer
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: " + expected("a mapping at the top level", data))
    if "action" in data:
        if data["action"] != "save_masks":
            raise ConfigError(expected("a DTL layer with action 'save_masks'", data["action"]),
                              key="action")
        settings = data.get("settings", {})
        if not isinstance(settings, dict):
            raise ConfigError(expected("a settings mapping", settings), key="settings")
        settings = {k: v for k, v in settings.items() if k not in DTL_IGNORED}
        return {"formats": ["supervisely"], "supervisely": settings}, "dtl"
    return data, "yaml"


def load(path: str | None = None, sets: Sequence[str] = (), formats: Sequence[str] = (),
         input_format: str | None = None) -> JobSpec:
    """Build and validate the JobSpec from a file, --set overrides and CLI flags."""
    tree: dict[str, Any]
    tree, source = _load_file(path) if path else ({}, "defaults")
    tree = copy.deepcopy(tree)
    for key, value in parse_set(sets):
        _set_dotted(tree, key, value)
    if formats:
        tree["formats"] = list(formats)
    if input_format:
        tree["input_format"] = input_format
    for k in tree:
        if k == "storage_options":
            raise ConfigError("credentials and storage options never go in the job file; use "
                              "AWS_* variables, a profile or --storage-option", key=k)
        if k not in TOP_KEYS:
            raise ConfigError(expected(f"one of {list(TOP_KEYS)}", k), key=k)
    fmts = tree.get("formats", ["supervisely"])
    if isinstance(fmts, str):
        fmts = [fmts]
    if not isinstance(fmts, list) or not fmts:
        raise ConfigError(expected("a non-empty list of formats", fmts), key="formats")
    for f in fmts:
        if f not in FORMATS:
            raise ConfigError(expected(f"a format in {sorted(FORMATS)}", f), key="formats")
    in_fmt = tree.get("input_format", "auto")
    if in_fmt != "auto" and in_fmt not in INPUT_FORMATS:
        raise ConfigError(expected(f"'auto' or one of {sorted(INPUT_FORMATS)}", in_fmt),
                          key="input_format")
    sizes = {}
    for k, default, hi in (("partition_size", "auto", 100_000), ("max_in_flight", 0, 100_000)):
        v = tree.get(k, default)
        if k == "partition_size" and v == "auto":  # 0: chosen from the item count (plan.py)
            sizes[k] = 0
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not (0 if k == "max_in_flight"
                                                                  else 1) <= v <= hi:
            raise ConfigError(expected(f"an integer in range for {k}", v), key=k)
        sizes[k] = v
    options: dict[str, Any] = {}
    for name, module in FORMATS.items():
        raw = tree.get(name, {}) or {}
        if not isinstance(raw, dict):
            raise ConfigError(expected(f"a mapping of {name} settings", raw), key=name)
        defaults: Mapping[str, Any] = {}
        if name == "supervisely":
            defaults = DTL_DEFAULTS if source == "dtl" else APP_DEFAULTS
        options[name] = module.Options.from_mapping(raw, prefix=name, defaults=defaults)
    lim_raw = tree.get("limits", {}) or {}
    if not isinstance(lim_raw, dict):
        raise ConfigError(expected("a mapping of limits", lim_raw), key="limits")
    for k, v in lim_raw.items():
        if k not in Limits.__dataclass_fields__:
            raise ConfigError(expected(f"one of {list(Limits.__dataclass_fields__)}", k),
                              key=f"limits.{k}")
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ConfigError(expected("a positive number", v), key=f"limits.{k}")
    images_url = tree.get("images_url")
    if images_url is not None and not isinstance(images_url, str):
        raise ConfigError(expected("a URL string", images_url), key="images_url")
    return JobSpec(
        formats=tuple(dict.fromkeys(fmts)),
        input_format=in_fmt,
        partition_size=sizes["partition_size"],
        max_in_flight=sizes["max_in_flight"],
        options=options,
        limits=Limits(**lim_raw),
        images_url=images_url,
        source=source,
        raw=tree,
    )
