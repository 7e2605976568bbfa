"""The canonical JSON form that every reader hashes."""

from __future__ import annotations

import enum
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shieldwall.audit.canonical import canonical_json, is_canonical, leaf_bytes, parse_leaf

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def test_sorted_keys_no_whitespace_utf8() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "é": "ü"}) == '{"a":[1,2],"b":1,"é":"ü"}'.encode()


def test_nan_and_infinity_are_refused() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            canonical_json({"x": bad})


def test_non_json_types_have_one_fixed_form() -> None:
    class Color(enum.Enum):
        RED = "red"

    assert canonical_json({"c": Color.RED, "b": b"\x00\x01", "t": (1, 2)}) == b'{"b":"b64:AAE=","c":"red","t":[1,2]}'
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


@given(json_values)
def test_encoding_is_a_fixed_point(value: object) -> None:
    data = canonical_json(value)
    assert is_canonical(data)
    assert canonical_json(json.loads(data)) == data


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.integers(min_value=0, max_value=2**40))
def test_leaf_concatenation_equals_canonical_wrapper(entry: dict[str, object], seq: int) -> None:
    leaf = leaf_bytes(canonical_json(entry), seq)
    assert leaf == canonical_json({"entry": entry, "seq": seq})
    assert parse_leaf(leaf) == (json.loads(canonical_json(entry)), seq)
