"""Key material as a type: a keyring of 256-bit master keys, looked up by id, never tried in turn.

A :class:`Keyring` holds a primary key (used for every new entry) and older keys (still accepted
for reading), in the spirit of cryptography's ``MultiFernet`` but addressed by a 4-byte key id
written into each entry's header. Per-namespace sub-keys are derived with HKDF-SHA256, the
namespace in ``info``, so one namespace's key never decrypts another's entries.

The *index key* keys the PRF that turns cache keys into storage keys. It must outlive rotation
(otherwise every entry would move to a new storage key), so it is derived from the oldest key in
the ring (the last one) unless given explicitly, and :meth:`Keyring.rotate` carries it over.
Dropping the oldest key therefore changes every storage key unless ``index_key`` is pinned.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .keys import KeyProvider

__all__ = ["KEY_SIZE", "Keyring"]

KEY_SIZE: Final = 32
_KEY_ID_LABEL: Final = b"aiocache_secure/v1/key-id"
_INDEX_LABEL: Final = b"aiocache_secure/v1/index"


def _key_id(key: bytes) -> bytes:
    return hmac.digest(key, _KEY_ID_LABEL, "sha256")[:4]


def hkdf(key: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256 with an empty salt (the input is already uniformly random key material)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def _as_key(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("keyring keys must be bytes")
    key = bytes(value)
    if len(key) != KEY_SIZE:
        raise ConfigurationError(f"keyring keys must be exactly {KEY_SIZE} bytes")
    return key


class Keyring:
    """An ordered set of 32-byte master keys; the first is primary.

    ``Keyring([primary, older, ...])``, ``Keyring.generate()``, ``Keyring.from_env(name)``.
    The ``repr`` shows key ids (fingerprints), never key material.
    """

    __slots__ = ("_index_key", "_keys", "_order")

    def __init__(self, keys: Iterable[bytes], *, index_key: bytes | None = None) -> None:
        if isinstance(keys, bytes | bytearray | str):
            raise TypeError("Keyring takes a list of keys, not a single key")
        material = [_as_key(k) for k in keys]
        if not material:
            raise ConfigurationError("a keyring needs at least one key")
        by_id: dict[bytes, bytes] = {}
        for key in material:
            kid = _key_id(key)
            if kid in by_id:
                raise ConfigurationError("keyring holds the same key twice (or a key-id clash)")
            by_id[kid] = key
        self._keys: Mapping[bytes, bytes] = by_id
        self._order: tuple[bytes, ...] = tuple(by_id)
        self._index_key = (
            _as_key(index_key) if index_key is not None else hkdf(material[-1], _INDEX_LABEL)
        )

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring of one fresh random 256-bit key (for tests and demos; production keys
        come from :meth:`from_env`, a key file or :meth:`from_provider`)."""
        return cls([os.urandom(KEY_SIZE)])

    @classmethod
    def from_env(cls, name: str = "AIOCACHE_SECURE_KEYS") -> Keyring:
        """Read comma-separated base64 keys (primary first) from environment variable ``name``.

        Environment variables leak into child processes and crash dumps; prefer a key file or a
        KMS hook for production secrets.
        """
        raw = os.environ.get(name)
        if not raw:
            raise ConfigurationError(f"environment variable {name} is not set or empty")
        return cls.from_text(raw)

    @classmethod
    def from_provider(cls, provider: KeyProvider) -> Keyring:
        """Build from a key provider (see :mod:`aiocache_secure.keys`)."""
        return provider.load()

    @classmethod
    def from_text(cls, text: str) -> Keyring:
        """Parse comma- or newline-separated base64 (standard or URL-safe) keys."""
        keys: list[bytes] = []
        for part in text.replace("\n", ",").split(","):
            part = part.strip()
            if not part:
                continue
            try:
                keys.append(
                    base64.b64decode(part.replace("-", "+").replace("_", "/"), validate=True)
                )
            except (binascii.Error, ValueError):
                raise ConfigurationError("keyring text holds a value that is not base64") from None
        return cls(keys)

    @staticmethod
    def new_key_text() -> str:
        """A fresh random key, base64-encoded, for configuration files and environment variables."""
        return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")

    def rotate(self) -> Keyring:
        """A new keyring with a fresh primary key; the old keys stay readable; index key kept."""
        return Keyring(
            [os.urandom(KEY_SIZE), *(self._keys[k] for k in self._order)],
            index_key=self._index_key,
        )

    def without(self, key_id: bytes) -> Keyring:
        """A keyring that no longer holds ``key_id`` (retire a key after re-encryption)."""
        if key_id == self.primary_id:
            raise ConfigurationError("cannot drop the primary key")
        return Keyring(
            [self._keys[k] for k in self._order if k != key_id], index_key=self._index_key
        )

    @property
    def primary_id(self) -> bytes:
        """The 4-byte id of the primary key, the one new entries are sealed under."""
        return self._order[0]

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """Every key's id, primary first."""
        return self._order

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def derive(self, key_id: bytes, info: bytes) -> bytes:
        """A sub-key of master key ``key_id`` for purpose ``info`` (KeyError if unknown)."""
        return hkdf(self._keys[key_id], info)

    def derive_index(self, info: bytes) -> bytes:
        """A sub-key of the index key: stable across rotation, used for key hashing."""
        return hkdf(self._index_key, info)

    def export_text(self) -> str:
        """The keys as comma-separated base64, primary first (for writing a key file)."""
        return ",".join(base64.b64encode(self._keys[k]).decode("ascii") for k in self._order)

    def __repr__(self) -> str:
        ids = ", ".join(k.hex() for k in self._order)
        return f"Keyring(key_ids=[{ids}])"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("Keyring cannot be pickled")
