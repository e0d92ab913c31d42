"""Nesting depth without a recursive parser, checked against one."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor import json_depth

# Strings full of what a scanner could mistake for structure.
tricky_text = st.text(alphabet='[]{}"\\,:ab \u00e9\u2028', max_size=12)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


def nesting(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


def cut(value: Any, limit: int) -> Any:
    """What ``shallow`` should leave of ``value``: containers opening below
    ``limit`` levels become None."""
    if not isinstance(value, list | dict):
        return value
    if limit == 0:
        return None
    if isinstance(value, list):
        return [cut(v, limit - 1) for v in value]
    return {k: cut(v, limit - 1) for k, v in value.items()}


@given(values, st.booleans())
def test_depth_is_the_nesting_of_the_value(value: Any, spaced: bool) -> None:
    raw = json.dumps(value, indent=1 if spaced else None).encode()
    assert json_depth.depth(raw) == nesting(value)
    assert json_depth.within(raw, nesting(value))
    assert not json_depth.within(raw, nesting(value) - 1) or nesting(value) == 0


@given(values, st.integers(0, 6))
def test_shallow_cuts_below_the_limit_and_keeps_the_rest(value: Any, limit: int) -> None:
    raw = msgspec.json.encode(value)
    assert json.loads(json_depth.shallow(raw, limit)) == cut(value, limit)


def test_brackets_in_strings_do_not_count() -> None:
    raw = json.dumps({"data": "[" * 500 + "{" * 500, "q": '\\"[[['}).encode()
    assert json_depth.depth(raw) == 1
    assert json_depth.within(raw, 1)
    assert json_depth.shallow(raw, 1) == raw


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
        (b"[" * 100_000, 100_000),  # never closed
        (b"]" * 1000, 0),  # closed, never opened
        (b'"' + b"[" * 1000, 0),  # all inside a string never ended
        (b'["\\', 1),  # a string ending in a lone backslash
    ],
)
def test_broken_text_gets_an_answer(raw: bytes, depth: int) -> None:
    assert json_depth.depth(raw) == depth


@pytest.mark.parametrize(
    "raw",
    [
        # Each would make a scan that restarts inside strings quadratic: at
        # 200 kB that is minutes, past the test's timeout.
        b'"\\"' * 70_000,
        b'"\\' * 100_000,
        b'["' + b"\\\\" * 100_000,
        b"[]" * 100_000,
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    ],
)
def test_hostile_text_is_scanned_in_linear_time(raw: bytes) -> None:
    shallow = json_depth.shallow(raw, 1)
    assert json_depth.depth(shallow) <= 1


def test_deep_value_is_cut_to_null_and_the_head_kept() -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    raw = b'{"charge_point_id":"CP","payload":[2,"m1","A",' + deep + b'],"x":' + deep + b"}"
    assert json.loads(json_depth.shallow(raw, 2)) == {
        "charge_point_id": "CP",
        "payload": [2, "m1", "A", None],
        "x": [None],
    }
    assert json.loads(json_depth.shallow(raw, 1)) == {
        "charge_point_id": "CP",
        "payload": None,
        "x": None,
    }
