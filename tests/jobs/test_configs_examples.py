"""Every example job under configs/ loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import config

EXAMPLES = sorted((Path(__file__).parents[2] / "configs").glob("*.*"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path):
    spec = config.load(str(path))
    assert spec.formats
