"""Class tables and colours: machine colours, the VOC colormap, safe colour parsing.

- machine index of class i (0-based position in the input's class list) is i + 1, background 0;
  `index_dtype(n)` is uint8 up to 255 classes and uint16 beyond (never a silent overflow);
- `voc_color(i)`: the Pascal VOC colormap (bits 0,1,2 of i to the MSBs of R,G,B, then the next
  bits), as CVAT and datumaro generate it;
- `rgb(value, key)`: a colour from config, [r, g, b] ints in 0..255, or ConfigError naming `key`.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, expected
from .model import RGB, ClassTable


def index_dtype(n_values: int) -> type:
    """The narrowest unsigned dtype that holds indices 0..n_values."""
    if n_values <= 255:
        return np.uint8
    if n_values <= 65535:
        return np.uint16
    return np.uint32


def machine_colors(classes: ClassTable) -> dict[str, list[int]]:
    """{class: [i, i, i]} in class order, from 1: the app's obj_class_to_machine_color.json."""
    return {c.name: [i + 1] * 3 for i, c in enumerate(classes.classes)}


def voc_color(index: int) -> RGB:
    r = g = b = 0
    c = index
    for j in range(7, -1, -1):
        r |= ((c >> 0) & 1) << j
        g |= ((c >> 1) & 1) << j
        b |= ((c >> 2) & 1) << j
        c >>= 3
    return (r, g, b)


def rgb(value: object, key: str) -> RGB:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(expected("a colour [r, g, b] of three integers", value), key=key)
    if not all(0 <= v <= 255 for v in value):
        raise ConfigError(expected("colour components in 0..255", value), key=key)
    return (int(value[0]), int(value[1]), int(value[2]))
