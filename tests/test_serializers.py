"""The value types both serializers keep (bytes, dates and times, UUID, Decimal, tuple, set,
frozenset): round trips with their types, payloads written before the tagged scheme, user dicts
that look like tags, planted tags naming other classes, and hostile payloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, available_timezones

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiocache_secure import MISSING, Cache, CacheManager, Keyring, SerializationError, frame
from aiocache_secure.serializers import MAX_DEPTH, MAX_EXT_DEPTH, get_serializer
from aiocache_secure.values import MAX_DECIMAL_DIGITS, MAX_SAME_HASH

JSON, MSGPACK = get_serializer("json"), get_serializer("msgpack")
BOTH = pytest.mark.parametrize("serializer", [JSON, MSGPACK], ids=["json", "msgpack"])
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = 2**63 - 1
COLLIDING = [k * (2**61 - 1) for k in range(-4, 5)]  # nine ints, every hash 0

# -- strategies ------------------------------------------------------------------------------

fixed_offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
ZONE_KEYS = sorted(available_timezones())
tz_zones = st.integers(0, len(ZONE_KEYS) - 1).map(lambda i: ZoneInfo(ZONE_KEYS[i]))
zones = st.none() | fixed_offsets | tz_zones
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-INT64, max_value=INT64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.binary(max_size=16)
    | st.datetimes(timezones=zones)
    | st.dates()
    | st.times(timezones=st.none() | fixed_offsets)
    | st.uuids()
    | st.decimals(allow_nan=False)
)
scalars = st.deferred(lambda: _scalars)  # a short repr: hypothesis warns about long ones
tag_like = st.sampled_from(["$b", "$t", "$tu", "$set", "$esc", "$dt", "$os.system", "$"])
hashables = st.deferred(
    lambda: st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
        max_leaves=6,
    )
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4) | tag_like, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=20,
)


def assert_same(got: Any, want: Any) -> None:
    """Equal, and of the same types all the way down (``==`` alone says 1 == 1.0 == True)."""
    assert type(got) is type(want), (type(got), type(want))
    if isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, list | tuple):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert_same(a, b)
    elif isinstance(want, set | frozenset):
        assert got == want
        by_value = {member: member for member in got}
        for member in want:
            assert_same(by_value[member], member)
    elif isinstance(want, Decimal):
        assert str(got) == str(want)  # digits and exponent, not just the value
    elif isinstance(want, datetime | time):
        assert got == want and got.tzinfo == want.tzinfo and got.fold == want.fold
        assert got.utcoffset() == want.utcoffset()
    else:
        assert got == want


# -- round trips -----------------------------------------------------------------------------


@PROPERTY
@given(values)
def test_json_round_trip(value: Any) -> None:
    assert_same(JSON.loads(JSON.dumps(value)), value)


@PROPERTY
@given(values)
def test_msgpack_round_trip(value: Any) -> None:
    assert_same(MSGPACK.loads(MSGPACK.dumps(value)), value)


@BOTH
def test_examples_keep_their_types(serializer: Any) -> None:
    new_york = ZoneInfo("America/New_York")
    value = {
        "bytes": b"\x00\xff",
        "naive": datetime(2026, 12, 1, 21, 0, 0, 123456),
        "utc": datetime(2026, 12, 1, tzinfo=UTC),
        "offset": datetime(2026, 12, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "zone": datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=1),  # the second 1:30
        "date": date(2026, 12, 1),
        "time": time(23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3))),
        "uuid": UUID("12345678-1234-5678-1234-567812345678"),
        "decimals": [Decimal("1.50"), Decimal("1E+2"), Decimal("-0"), Decimal("-Infinity")],
        "nested": [(1, (2, [3])), {frozenset({1, 2}), (3, b"x")}],
    }
    back = serializer.loads(serializer.dumps(value))
    assert_same(back, value)
    assert back["zone"].tzinfo is new_york and back["zone"].utcoffset() == timedelta(hours=-5)
    nan = serializer.loads(serializer.dumps(Decimal("-NaN")))
    assert isinstance(nan, Decimal) and nan.is_qnan() and nan.is_signed()


class OddDatetime(datetime):
    def isoformat(self, *args: Any, **kwargs: Any) -> str:
        return "nanoseconds: 000000001"


class OddUUID(UUID):
    def __str__(self) -> str:
        return "not a uuid"


class OddDecimal(Decimal):
    def __str__(self) -> str:
        return "not a decimal"


@BOTH
def test_subclasses_come_back_as_the_base_type(serializer: Any) -> None:
    # Written from the base type's own fields, whatever the subclass prints.
    value = [
        OddDatetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1))),
        OddUUID(int=7),
        OddDecimal("1.50"),
    ]
    want = [datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1))), UUID(int=7)]
    assert_same(serializer.loads(serializer.dumps(value)), [*want, Decimal("1.50")])


@BOTH
def test_equal_sets_give_equal_bytes(serializer: Any) -> None:
    members = [f"member-{i}" for i in range(50)]
    assert serializer.dumps(set(members)) == serializer.dumps(set(reversed(members)))
    # Across processes with different string hashing, hence different iteration orders.
    script = (
        "import sys; from aiocache_secure.serializers import get_serializer; "
        f"sys.stdout.write(get_serializer({serializer.name!r}).dumps("
        "{'s': {f'member-{i}' for i in range(50)}, 'f': frozenset({(1, 'a'), (2, 'b')})}).hex())"
    )
    outputs = {
        subprocess.run(  # noqa: S603 - our own interpreter and a literal script
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


# -- compatibility with payloads written before the tagged scheme ---------------------------


@PROPERTY
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-INT64, max_value=INT64)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=4) | tag_like, inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_plain_json_is_written_and_read_as_before(value: Any) -> None:
    # The code before the tagged scheme wrote orjson's bytes, and read them with orjson.
    assert JSON.dumps(value) == orjson.dumps(value)
    assert JSON.loads(orjson.dumps(value)) == value
    assert MSGPACK.loads(msgpack.packb(value, use_bin_type=True)) == value


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b'{"$b":"AAAA"}', {"$b": "AAAA"}),
        (b'{"$tu":[1,2],"x":{"$dt":"2020-01-01"}}', {"$tu": [1, 2], "x": {"$dt": "2020-01-01"}}),
        (b"[1,[2,3]]", [1, [2, 3]]),  # how tuples used to be written: they read back as lists
        (b'\x00{"big":' + b"9" * 30 + b"}", {"big": int("9" * 30)}),
        (b'\x00"\xed\xb2\x80"', "\udc80"),  # a lone surrogate, by the standard library encoder
    ],
)
def test_old_json_payloads_decode_identically(payload: bytes, value: Any) -> None:
    assert JSON.loads(payload) == value
    assert type(JSON.loads(payload)) is type(value)


def test_old_msgpack_payloads_decode_identically() -> None:
    old = msgpack.packb({"t": (1, 2), "b": b"x", "$b": "y"}, use_bin_type=True)
    assert MSGPACK.loads(old) == {"t": [1, 2], "b": b"x", "$b": "y"}


def test_fast_decoder_refuses_tagged_payloads() -> None:
    # A batch read decodes with loads_fast and falls back to loads: it must not return the tree.
    with pytest.raises(ValueError):
        JSON.loads_fast(JSON.dumps((1, 2)))


# -- user dicts that look like tags -----------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    "lookalike",
    [
        {"$b": "AAAA"},
        {"$t": "bytes", "v": "AAAA"},
        {"$esc": {"$b": "AAAA"}},
        {"$tu": [1, 2]},
        {"$os.system": "echo"},
        {"$": None},
        {"$dec": "1e999999999"},
    ],
)
def test_lookalike_dicts_round_trip_as_dicts(serializer: Any, lookalike: dict[str, Any]) -> None:
    value = {"when": date(2026, 1, 1), "user": lookalike, "list": [lookalike, (lookalike,)]}
    assert_same(serializer.loads(serializer.dumps(value)), value)
    assert_same(serializer.loads(serializer.dumps(lookalike)), lookalike)


# -- planted payloads ---------------------------------------------------------------------------


class Canary:
    built: list[object] = []

    def __init__(self, *args: object) -> None:
        Canary.built.append(args)


CANARY = f"{Canary.__module__}.{Canary.__qualname__}"


@pytest.mark.parametrize(
    "tree",
    [
        {"$os.system": "echo pwned"},
        {f"${CANARY}": []},
        {"$t": CANARY},
        [{"$" + Canary.__qualname__: {"x": 1}}],
        {"$esc": {"plain": 1}},  # an escape only ever wraps a one-key "$" dict
        {"$esc": [1]},
        {"$tu": "abc"},
        {"$set": [[1]]},  # unhashable member
        {"$b": "not base64!"},
        {"$u": "zzzz"},
        {"$d": "2026-13-01"},
        {"$dt": "2026-01-01"},
        {"$dt": ["2026-01-01T00:00:00", 2]},
        {"$dt": ["2026-01-01T00:00:00", 0, "../../../../etc/passwd"]},
        {"$dt": ["2026-01-01T00:00:00+01:00", 0, "Europe/Paris"]},
        {"$dt": ["2026-01-01T00:00:00", 0, 86_400_000_000]},  # a day's offset
        {"$dt": ["2026-01-01T00:00:00", 0, 1.5]},
        {"$tm": ["25:00", 0]},
        {"$tm": ["01:00", 0, "Europe/Paris"]},
        {"$tm": ["01:00+01:00", 0]},
        {"$dec": "sNaN"},
        {"$dec": "12abc"},
        {"$dec": "1e999999999"},
        {"$dec": "9" * (MAX_DECIMAL_DIGITS + 1)},
        {"$dec": "9" * 1_000_000},
        {"$set": COLLIDING},
    ],
)
def test_planted_json_tags_are_refused(tree: Any) -> None:
    with pytest.raises(SerializationError):
        JSON.loads(b"\x01" + json.dumps(tree).encode())
    assert Canary.built == []


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.ExtType(99, b""),
        msgpack.ExtType(1, msgpack.packb(5)),
        msgpack.ExtType(2, msgpack.packb([[1]])),
        msgpack.ExtType(2, msgpack.packb(COLLIDING)),
        msgpack.ExtType(3, b"\xc1"),
        msgpack.ExtType(4, msgpack.packb(CANARY)),
        msgpack.ExtType(5, msgpack.packb([CANARY])),
        msgpack.ExtType(7, msgpack.packb(msgpack.ExtType(7, b""))),
        msgpack.ExtType(8, msgpack.packb("1e999999999")),
        msgpack.ExtType(8, msgpack.packb("sNaN")),
    ],
)
def test_planted_msgpack_exts_are_refused(payload: msgpack.ExtType) -> None:
    with pytest.raises(SerializationError):
        MSGPACK.loads(msgpack.packb({"v": [payload]}))
    assert Canary.built == []


@BOTH
def test_sets_with_few_collisions_are_fine(serializer: Any) -> None:
    value = set(COLLIDING[:MAX_SAME_HASH])
    assert serializer.loads(serializer.dumps(value)) == value
    with pytest.raises(SerializationError):  # what is refused on read is refused on write
        serializer.loads(serializer.dumps(set(COLLIDING)))


TAGS = ["$b", "$tu", "$set", "$fs", "$esc", "$dt", "$d", "$tm", "$u", "$dec", "$x"]
forms = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(TAGS) | st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=12,
)


@PROPERTY
@given(forms)
def test_arbitrary_tagged_trees_decode_or_refuse(tree: Any) -> None:
    try:
        JSON.loads(b"\x01" + json.dumps(tree).encode())
    except SerializationError:
        pass


@PROPERTY
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_the_tag_byte(data: bytes) -> None:
    try:
        JSON.loads(b"\x01" + data)
    except SerializationError:
        pass


@PROPERTY
@given(st.integers(min_value=0, max_value=12), st.binary(max_size=40))
def test_arbitrary_ext_types_decode_or_refuse(code: int, data: bytes) -> None:
    try:
        MSGPACK.loads(msgpack.packb([msgpack.ExtType(code, data)]))
    except SerializationError:
        pass


# -- hostile and unstorable values ------------------------------------------------------------


class CustomZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)


@BOTH
@pytest.mark.parametrize(
    "value",
    [
        Decimal("1e999999999"),
        Decimal("1e-999999999"),
        Decimal("sNaN"),
        Decimal("9" * (MAX_DECIMAL_DIGITS + 1)),
        datetime(2026, 1, 1, tzinfo=CustomZone()),
        datetime(2026, 1, 1, tzinfo=ZoneInfo("posix/UTC")),  # outside the tz database's list
        time(1, tzinfo=ZoneInfo("Europe/Paris")),
        (object(),),
    ],
    ids=[
        "exp-huge",
        "exp-tiny",
        "snan",
        "digits",
        "custom-tz",
        "unlisted-zone",
        "time-zone",
        "object",
    ],
)
def test_unstorable_values_are_refused_on_write(serializer: Any, value: Any) -> None:
    with pytest.raises(SerializationError):
        serializer.dumps(value)


def test_msgpack_non_str_keys_as_before() -> None:
    # Written as before and refused on read (a miss), never read back with other keys.
    with pytest.raises(SerializationError):
        MSGPACK.loads(MSGPACK.dumps({1: "a"}))
    assert MSGPACK.loads(MSGPACK.dumps({b"k": (1,)})) == {b"k": (1,)}


@pytest.mark.parametrize("value", [{1: (2,)}, {(1,): date(2026, 1, 1)}, [{None: b""}]])
def test_json_dict_keys_stay_str_only(value: Any) -> None:
    # As before the tagged scheme: a non-str key is refused, never turned into a str.
    with pytest.raises(SerializationError, match="str dict keys"):
        JSON.dumps(value)


def test_decimal_at_the_bounds_round_trips() -> None:
    for text in ("9" * MAX_DECIMAL_DIGITS, "1e6144", "1e-6144"):
        assert str(JSON.loads(JSON.dumps(Decimal(text)))) == str(Decimal(text))


@BOTH
def test_deep_nesting_is_refused_not_a_crash(serializer: Any) -> None:
    limit = MAX_DEPTH if serializer is JSON else MAX_EXT_DEPTH
    deep: Any = (date(2026, 1, 1),)
    for _ in range(limit + 5):
        deep = (deep,)
    with pytest.raises(SerializationError):
        serializer.dumps(deep)
    cycle: list[Any] = [()]
    cycle.append(cycle)
    with pytest.raises(SerializationError):
        serializer.dumps(cycle)


def test_deep_planted_payloads_are_refused() -> None:
    deepest: Any = ()
    for _ in range(MAX_DEPTH):
        deepest = (deepest,)
    assert JSON.loads(JSON.dumps(deepest)) == deepest  # what is written can be read

    def from_deep_stack(frames: int) -> Any:  # a caller already deep in its own recursion
        return from_deep_stack(frames - 1) if frames else JSON.loads(JSON.dumps(deepest))

    assert from_deep_stack(300) == deepest
    for depth in (MAX_DEPTH + 2, 600, 5000):
        with pytest.raises(SerializationError):
            JSON.loads(b"\x01" + b'{"$tu":[' * depth + b"]}" * depth)
    data = msgpack.packb([])
    for _ in range(MAX_EXT_DEPTH + 1):
        data = msgpack.packb(msgpack.ExtType(1, data))
    with pytest.raises(SerializationError):
        MSGPACK.loads(data)


# -- through the cache: a planted tag is a tampered entry, a miss -----------------------------


@pytest.fixture
async def manager() -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), default_backend="memory://") as mgr:
        yield mgr


@pytest.mark.anyio
@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
async def test_cache_round_trips_extended_values(
    manager: CacheManager, serializer: str, encrypt: bool
) -> None:
    ns = manager.namespace("v", serializer=serializer, encrypt=encrypt)
    value = {"when": datetime(2026, 1, 1, tzinfo=UTC), "ids": {UUID(int=1)}, "t": (1,)}
    await ns.set("k", value)
    for _ in range(2):  # the second read may be served by the memo
        assert_same(await ns.get("k"), value)
        assert_same((await ns.get_many(["k"]))[0], value)
    got = await ns.get("k")
    got["ids"].add(UUID(int=2))  # a caller's mutation never reaches the next reader
    assert_same(await ns.get("k"), value)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["get", "get_many"])
async def test_planted_tag_in_the_store_is_a_tampered_miss(manager: CacheManager, how: str) -> None:
    ns: Cache = manager.namespace("victim", encrypt=False)
    await ns.set("k", "v")
    store = manager.backend_of(ns.name)
    ((key, data),) = [kv async for kv in store.scan(ns._prefix)]  # noqa: SLF001 - attacker
    expires, embedded, _ = frame.unpack(data)
    planted = b"\x01" + json.dumps({"$" + CANARY: [1]}).encode()
    await store.set(key, frame.pack(expires, embedded, planted), ttl=None)
    if how == "get":
        assert await ns.get("k", MISSING) is MISSING
    else:
        assert await ns.get_many(["k"], MISSING) == [MISSING]
    assert ns.stats.tampered == 1
    assert Canary.built == []
