"""Portable file names for tests/data/sly_toolfiles (stdlib only; SDK venv and test venv).

The SDK writes items whose names differ only by case (`Case.png`, `case.png`) or by Unicode
normalisation (NFC and NFD `café.png`). Such files cannot live side by side in a checkout on a
case-insensitive or normalising file system (macOS, Windows), so the committed project stores
every such item except the first of its group under a portable name, and RENAMES (a JSON file
beside the project) maps `<dataset dir>/<portable item name>` back to the name the SDK wrote.
`stage()` makes the project as the SDK wrote it: a copy with the original names.
Images, annotations and img_info files keep their bytes; only their names are mapped.
"""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

RENAMES = "tests/data/sly_toolfiles_renames.json"
# per item: the folder and the file name made from the item name
ITEM_FILES = (("img", "{}"), ("ann", "{}.json"), ("img_info", "{}.json"))


def _move_item(ds_dir: Path, old: str, new: str) -> None:
    for folder, pattern in ITEM_FILES:
        src = ds_dir / folder / pattern.format(old)
        if src.exists():
            src.rename(ds_dir / folder / pattern.format(new))


def make_portable(project: Path, renames_file: Path) -> dict[str, str]:
    """Rename the items that clash on a case-insensitive, normalising file system (all but the
    first of each group, in sorted order) and write the map {portable: original}."""
    renames: dict[str, str] = {}
    for img_dir in sorted(project.rglob("img")):
        ds_dir = img_dir.parent
        seen: set[str] = set()
        for path in sorted(img_dir.iterdir()):
            key = unicodedata.normalize("NFC", path.name).casefold()
            if key not in seen:
                seen.add(key)
                continue
            portable = f"renamed-{len(renames):02d}{path.suffix}"
            _move_item(ds_dir, path.name, portable)
            renames[f"{ds_dir.relative_to(project).as_posix()}/{portable}"] = path.name
    renames_file.write_text(json.dumps(renames, indent=1, ensure_ascii=True) + "\n")
    return renames


def stage(project: Path, renames_file: Path, dst: Path) -> Path:
    """A copy of the committed project at `dst` with the names the SDK wrote."""
    shutil.copytree(project, dst)
    for key, original in json.loads(renames_file.read_text()).items():
        ds_rel, portable = key.rsplit("/", 1)
        _move_item(dst / ds_rel, portable, original)
    return dst
