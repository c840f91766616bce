"""The canonical argument encoding is injective: different arguments never share a key."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiocache_secure.callkeys import closure_tag, encode_one

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
hashables = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6
)
values = st.recursive(
    hashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=3),
    ),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    """Equal with exact types (a set and a frozenset count as the same kind)."""
    kinds = {set: frozenset}
    if kinds.get(type(a), type(a)) is not kinds.get(type(b), type(b)):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, b[k2]) for k2 in b) for k, v in a.items()
        )
    if isinstance(a, frozenset | set):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return bool(a == b)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_encoding_is_injective(a: Any, b: Any) -> None:
    assert (encode_one(a) == encode_one(b)) == same(a, b)


@settings(max_examples=200, deadline=None)
@given(values)
def test_encoding_is_deterministic(a: Any) -> None:
    assert encode_one(a) == encode_one(a)


def test_closure_tags_tell_free_variables_apart() -> None:
    def make(value: Any) -> Any:
        async def fn() -> Any:
            return value

        return fn

    kinds = [1, "1", 1.0, True, None, b"1", (1,), frozenset({1}), ("1",)]
    assert len({closure_tag(make(v)) for v in kinds}) == len(kinds)
    assert closure_tag(make(("a", 1))) == closure_tag(make(("a", 1)))
    # A mutable (or unknown) value: each function object gets a key space of its own.
    assert closure_tag(make([1])).startswith("|#")
    assert closure_tag(make([1])) != closure_tag(make([1]))
    assert closure_tag(make) == ""
