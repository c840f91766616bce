from __future__ import annotations

import base64
import os
import pickle

import pytest

from aiocache_secure import ConfigurationError, Keyring


def test_generate_and_ids() -> None:
    ring = Keyring.generate()
    assert len(ring) == 1
    assert len(ring.primary_id) == 4
    assert ring.key_ids == (ring.primary_id,)


def test_repr_masks_material() -> None:
    key = os.urandom(32)
    ring = Keyring([key])
    text = repr(ring) + str(ring)
    for form in (key.hex(), base64.b64encode(key).decode(), repr(key)):
        assert form not in text
    assert ring.primary_id.hex() in text


def test_rotate_keeps_old_keys_and_index() -> None:
    ring = Keyring.generate()
    new = ring.rotate()
    assert new.primary_id != ring.primary_id
    assert ring.primary_id in new
    assert new.derive_index(b"x") == ring.derive_index(b"x")
    dropped = new.without(ring.primary_id)
    assert ring.primary_id not in dropped
    assert dropped.derive_index(b"x") == ring.derive_index(b"x")
    with pytest.raises(ConfigurationError):
        new.without(new.primary_id)


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = os.urandom(32), os.urandom(32)
    monkeypatch.setenv(
        "KEYS_T", f"{base64.b64encode(a).decode()}, {base64.urlsafe_b64encode(b).decode()}"
    )
    ring = Keyring.from_env("KEYS_T")
    assert ring.key_ids == Keyring([a, b]).key_ids
    assert Keyring.from_text(ring.export_text()).key_ids == ring.key_ids


@pytest.mark.parametrize("value", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_from_env_rejects(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KEYS_T", value)
    with pytest.raises(ConfigurationError) as info:
        Keyring.from_env("KEYS_T")
    if value:
        assert value not in str(info.value)


def test_missing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEYS", raising=False)
    with pytest.raises(ConfigurationError):
        Keyring.from_env("NOPE_KEYS")


@pytest.mark.parametrize("keys", [[], [b"short"], [os.urandom(33)]])
def test_bad_keys(keys: list[bytes]) -> None:
    with pytest.raises(ConfigurationError):
        Keyring(keys)


@pytest.mark.parametrize("keys", [b"x" * 32, "text", [123], [None]])
def test_bad_key_types(keys: object) -> None:
    with pytest.raises(TypeError):
        Keyring(keys)  # type: ignore[arg-type]


def test_duplicate_keys() -> None:
    key = os.urandom(32)
    with pytest.raises(ConfigurationError):
        Keyring([key, key])


def test_not_picklable() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Keyring.generate())
