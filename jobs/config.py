"""Job configuration: a YAML job file or a Supervisely DTL `save_masks` layer -> frozen JobSpec.

Everything is validated here, before any work: unknown keys, types, colours, formats. Checks
that need the input's class list (colour maps naming unknown classes) run in `check_classes`
right after the input's metadata is read, still before any partition is submitted.

Defaults differ by source, as the tools they replace do:
- a YAML job gets the export-as-masks app's defaults (human_style app, thickness 2);
- a DTL JSON layer gets the DTL layer's (human_style dtl, thickness 1);
explicit keys always win, and `--set a.b=value` (value parsed as YAML) wins over both.

Render settings are job-level (`render: {thickness: N}`): each item is rendered once and every
format encodes from that rendering (SPEC 2.5). A format's own `thickness` key (the DTL layer's
name, kept for compatibility) sets the render thickness; two values that disagree (two
formats, or a format and `render`) are a ConfigError naming the key. `resolve_render` does it
and hands the value to every format's options.
S3 credentials never come from here; a `storage_options` key is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from maskcore.errors import ConfigError, ItemError, expected
from maskcore.formats import FORMATS, INPUT_FORMATS
from maskcore.formats.base import check_thickness
from maskcore.limits import OPTIONAL_LIMITS, Limits
from maskcore.model import ClassTable

from .storage import read_regular_file

BASE_KEYS = ("formats", "input_format", "partition_size", "max_in_flight", "limits",
             "images_url", "render")
TOP_KEYS = BASE_KEYS + tuple(FORMATS)
APP_RENDER: dict[str, Any] = {"thickness": 2}  # the export-as-masks app's
DTL_RENDER: dict[str, Any] = {"thickness": 1}  # the DTL save_masks layer's
RENDER_KEYS = tuple(APP_RENDER)


@dataclass(frozen=True)
class Render:
    """Job-level render settings: one rendering per item, shared by every format.
    `thickness`: stroke of lines, points and graph nodes under the OpenCV rule (Supervisely
    inputs; the pycocotools rule of CVAT and COCO inputs draws no strokes)."""

    thickness: int = 2
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
    render: Render = field(default_factory=Render)
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
               **{f: {k: v for k, v in (self.raw.get(f) or {}).items() if k not in RENDER_KEYS}
                  for f in self.formats},
               "render": {"thickness": self.render.thickness}, "source": self.source}
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


MAX_YAML_NODES = 100_000  # a job file, its aliases expanded
MAX_JOB_FILE_BYTES = 16 << 20  # a job file (a DTL colour map of 65535 classes is ~2 MB)


def safe_yaml(text: str) -> Any:
    """`yaml.safe_load`, bounded: the document with every alias expanded as often as it is
    used has at most MAX_YAML_NODES nodes, nests at most `Limits.max_depth` deep, and has no
    recursive alias - an alias bomb fails here (ConfigError) before anything expands it
    (hashing, printing, deep copies)."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(expected(f"YAML nested at most {Limits().max_depth} deep",
                                       "deeper nesting")) from None
        if node is None:
            return None
        _expanded_size(node, 0, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, depth: int, memo: dict[int, int], active: set[int]) -> int:
    if depth > Limits().max_depth:
        raise ConfigError(expected(f"YAML nested at most {Limits().max_depth} deep",
                                   "deeper nesting"))
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ConfigError(expected("YAML without recursive aliases", "an alias inside itself"))
    active.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, depth + 1, memo, active)
        if total > MAX_YAML_NODES:
            raise ConfigError(expected(f"YAML of at most {MAX_YAML_NODES} values with its "
                                       "aliases expanded", "more (an alias bomb?)"))
    active.discard(key)
    memo[key] = total
    return total


def yaml_problem(e: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), never the text around it: a YAML error's own
    message quotes the offending line, which may hold a credential (a URL with userinfo, a
    token pasted into the wrong key) - the one line printed must not."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{e.problem or e.context or type(e).__name__}{where}"
    if isinstance(e, yaml.reader.ReaderError):
        return f"{e.reason} at character {e.position}"
    return type(e).__name__


def parse_set(assignments: Sequence[str]) -> list[tuple[str, Any]]:
    out = []
    for a in assignments:
        key, eq, value = a.partition("=")
        if not eq or not key:
            raise ConfigError(expected("--set KEY=VALUE", a))
        try:
            out.append((key.strip(), safe_yaml(value)))
        except yaml.YAMLError as e:
            raise ConfigError(expected("a YAML value", yaml_problem(e)), key=key) from None
    return out


def _load_file(path: str) -> tuple[dict[str, Any], str]:
    """(job tree, source) from a YAML job or a DTL save_masks JSON."""
    try:
        text = read_regular_file(path, MAX_JOB_FILE_BYTES).decode("utf-8")
    except ItemError as e:  # a FIFO (would block), /dev/zero (would fill memory), too big
        raise ConfigError(f"cannot read config file {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: " + expected(
            "a job file in UTF-8", f"byte {e.object[e.start]:#04x} at {e.start}")) from None
    try:
        data = safe_yaml(text)  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: " + expected("valid YAML or JSON", yaml_problem(e))
                          ) from None
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


def resolve_render(tree: Mapping[str, Any], defaults: Mapping[str, Any]) -> Render:
    """The job's render settings: the `render` section, else the formats' own `thickness`
    keys (all equal), else `defaults`; ConfigError naming the key on a bad or conflicting one."""
    raw = tree.get("render", {}) or {}
    if not isinstance(raw, dict):
        raise ConfigError(expected("a mapping of render settings", raw), key="render")
    for k in raw:
        if k not in RENDER_KEYS:
            raise ConfigError(expected(f"one of {list(RENDER_KEYS)}", k), key=f"render.{k}")
    chosen: dict[str, tuple[Any, str]] = {k: (v, f"render.{k}") for k, v in raw.items()}
    for name in FORMATS:
        own = tree.get(name)
        if not isinstance(own, dict):
            continue
        for k in RENDER_KEYS:
            if k not in own:
                continue
            where = f"{name}.{k}"
            check_thickness({k: own[k]}, name)
            if k in chosen and chosen[k][0] != own[k]:
                raise ConfigError(expected(
                    f"one {k} for the whole job (render settings are job-level: every format "
                    f"encodes from one rendering; set render.{k})",
                    f"{chosen[k][1]}={chosen[k][0]!r} and {where}={own[k]!r}"), key=where)
            chosen.setdefault(k, (own[k], where))
    values = {k: chosen[k][0] if k in chosen else defaults[k] for k in RENDER_KEYS}
    return Render(thickness=check_thickness(values, "render"))


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
    render = resolve_render(tree, DTL_RENDER if source == "dtl" else APP_RENDER)
    options: dict[str, Any] = {}
    for name, module in FORMATS.items():
        raw = tree.get(name, {}) or {}
        if not isinstance(raw, dict):
            raise ConfigError(expected(f"a mapping of {name} settings", raw), key=name)
        defaults: dict[str, Any] = dict(module.SOURCE_DEFAULTS.get(source, {}))
        defaults["thickness"] = render.thickness
        own = {k: v for k, v in raw.items() if k not in RENDER_KEYS}
        options[name] = module.Options.from_mapping(own, prefix=name, defaults=defaults)
    lim_raw = tree.get("limits", {}) or {}
    if not isinstance(lim_raw, dict):
        raise ConfigError(expected("a mapping of limits", lim_raw), key="limits")
    for k, v in lim_raw.items():
        if k not in Limits.__dataclass_fields__:
            raise ConfigError(expected(f"one of {list(Limits.__dataclass_fields__)}", k),
                              key=f"limits.{k}")
        off = k in OPTIONAL_LIMITS  # 0 turns it off
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (
                v < 0 if off else v <= 0):
            raise ConfigError(expected("a number >= 0 (0: no limit)" if off
                                       else "a positive number", v), key=f"limits.{k}")
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
        render=render,
        source=source,
        raw=tree,
    )
