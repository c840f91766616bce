"""Arbitrary bytes into the decoders: only documented outcomes, never a crash."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiocache_secure import IntegrityError, SerializationError, frame
from aiocache_secure.clock import ManualClock
from aiocache_secure.layers.encryption import Encryption, StaticKey
from aiocache_secure.serializers import get_serializer

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_encryption() -> Encryption:
    keys = StaticKey()
    keys.load(b"kid1", os.urandom(32))
    return Encryption(
        None,  # type: ignore[arg-type]  # open() and seal() never touch the store
        keys=keys,
        namespace="fuzz",
        namespace_id=b"n" * 32,
        clock=ManualClock(),
        strict=False,
        on_tamper=lambda: None,
    )


ENC = make_encryption()
GOOD = ENC.seal(b"sk", frame.pack(0, b"", b'"value"'))
REASONS = {"malformed", "unknown_version", "unknown_key", "auth_failed", "replayed", "expired"}


@FUZZ
@given(st.binary(max_size=200))
def test_envelope_decoder_arbitrary_bytes(data: bytes) -> None:
    result, reason = ENC.open(b"sk", data)
    assert result is None and reason in REASONS


@FUZZ
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=1, max_value=255))
def test_envelope_decoder_mutations(position: int, xor: int) -> None:
    mutated = bytearray(GOOD)
    mutated[position] ^= xor
    result, reason = ENC.open(b"sk", bytes(mutated))
    assert result is None and reason in REASONS


def test_envelope_round_trip_and_binding() -> None:
    assert ENC.open(b"sk", GOOD) == (frame.pack(0, b"", b'"value"'), "")
    assert ENC.open(b"other", GOOD)[1] == "auth_failed"


@FUZZ
@given(st.binary(max_size=300))
def test_frame_decoder(data: bytes) -> None:
    try:
        expires, key, payload = frame.unpack(data)
    except IntegrityError:
        return
    assert frame.pack(expires, key, payload) == data


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_deserializers_reject_garbage_cleanly(name: str) -> None:
    serializer = get_serializer(name)

    @FUZZ
    @given(st.binary(max_size=200))
    def check(data: bytes) -> None:
        try:
            serializer.loads(data)
        except SerializationError:
            pass

    check()


def test_pickle_garbage_is_a_serialization_error() -> None:
    # Pickle only ever sees authenticated bytes; fuzzing it with arbitrary input would run code.
    with pytest.raises(SerializationError):
        get_serializer("pickle").loads(b"\x80\x05garbage")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(json_values)
def test_json_round_trip_exact(value: object) -> None:
    serializer = get_serializer("json")
    assert serializer.loads(serializer.dumps(value)) == value
