"""`ItemRef`'s own __init__ (jobs/listing.py) behaves as the frozen dataclass's generated one:
same signature and defaults, every field where it belongs, frozen, equal, hashable,
picklable, `dataclasses.replace` and argument errors as before."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from jobs import listing
from jobs.listing import ItemRef

VALUES = ["ds/child", "a.jpg", "ds/ann/a.jpg.json", "ds/img/a.jpg", "why", b"{}", "3-1.5",
          "7-2.0", '{"item":"a.jpg"}', ("x.png", "y.png")]
NAMES = [f.name for f in dataclasses.fields(ItemRef)]


def generated(*args, **kw) -> ItemRef:
    ref = object.__new__(ItemRef)
    listing._DATACLASS_INIT(ref, *args, **kw)
    return ref


def fields_of(ref: ItemRef) -> list[object]:
    return [getattr(ref, n) for n in NAMES]


def test_signature_and_defaults_are_the_generated_ones():
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(ItemRef.__init__) == params(listing._DATACLASS_INIT)
    assert ItemRef.__init__ is not listing._DATACLASS_INIT


@pytest.mark.parametrize("positional", range(4, 11))
def test_every_field_lands_where_the_generated_init_puts_it(positional):
    args, kw = VALUES[:positional], dict(zip(NAMES[positional:], VALUES[positional:],
                                             strict=True))
    ref = ItemRef(*args, **kw)
    assert fields_of(ref) == VALUES == fields_of(generated(*args, **kw))
    short = ItemRef(*VALUES[:4])
    assert fields_of(short) == fields_of(generated(*VALUES[:4]))
    assert fields_of(short)[4:] == [None] * 5 + [()]


def test_frozen_equal_hashable_picklable_and_replaceable():
    ref = ItemRef(*VALUES)
    twin = generated(*VALUES)
    assert ref == twin and hash(ref) == hash(twin) and repr(ref) == repr(twin)
    for name in NAMES:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ref, name, "x")
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(ref, name)
    with pytest.raises((AttributeError, TypeError)):
        ref.extra = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(ref)) == ref
    assert dataclasses.replace(ref, problem=None).problem is None
    assert ItemRef.from_json(ref.to_json()) == ref


@pytest.mark.parametrize(("args", "kw"), [
    (VALUES[:3], {}), ([*VALUES, "one more"], {}), (VALUES[:4], {"nope": 1}),
    (VALUES[:4], {"dataset": "twice"})])
def test_argument_errors_are_type_errors_as_before(args, kw):
    with pytest.raises(TypeError):
        generated(*args, **kw)
    with pytest.raises(TypeError):
        ItemRef(*args, **kw)
