"""The key vault: private namespaces' data keys, wrapped by the keyring, one record each.

Record (stored under ``"acs1" + namespace tag + "!vault"``, next to but outside the namespace's
entries, so ``clear()`` keeps it and ``erase()`` removes it explicitly)::

    version (1) | wrap_key_id (4) | data_key_id (4) | nonce (12) | AES-256-GCM(data key) + tag (16)

The wrapping key is an HKDF sub-key of keyring key ``wrap_key_id`` with the namespace name in
``info``; the associated data binds the version, both key ids and the record's storage key, so a
record copied to another namespace does not unwrap. Destroying the record is crypto-shredding:
every copy of the namespace's entries, wherever it lies, is unreadable without it. A restore of
the *record* from a backup revives them; keep the vault in a separate store (``key_vault=``) when
backups of the cache outlive erasure requests.

A process holds a namespace's unwrapped data key under a :class:`KeyLease`: trusted for at most
``interval`` seconds (``CacheManager(key_check_interval=...)``, 1 s by default), then checked
against the vault record again with one read (coalesced across concurrent callers). So an
``erase()`` by any process reaches every other process within that bound: the record is gone, the
old key is dropped, and the next write creates (or adopts) a fresh data key.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import struct
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import audit
from .backend import AtomicBackend, Backend
from .clock import Clock
from .errors import IntegrityError
from .keyring import KEY_SIZE, Keyring
from .keys import KeyWrapper
from .keyspace import INDEX_RECORD, vault_record
from .layers.encryption import StaticKey

__all__ = ["DEFAULT_KEY_CHECK_INTERVAL", "KeyLease", "Vault"]

DEFAULT_KEY_CHECK_INTERVAL: Final = 1.0

_VERSION: Final = 1
_KMS_VERSION: Final = 2
_RECORD: Final = struct.Struct(">B4s4s12s")
_RECORD_SIZE: Final = _RECORD.size + KEY_SIZE + 16
_INDEX_CONTEXT_NAME: Final = "acs1/index-key"


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


class Vault:
    """Vault records of one store. ``wrapper`` (a KMS) replaces keyring wrapping when given;
    which format a record must have is fixed by that configuration, never by the record."""

    __slots__ = ("_backend", "_keyring", "_wrapper")

    def __init__(
        self,
        backend: Backend,
        keyring: Callable[[], Keyring],
        wrapper: KeyWrapper | None = None,
    ) -> None:
        self._backend = backend
        self._keyring = keyring
        self._wrapper = wrapper

    @staticmethod
    def record_key(tag: bytes) -> bytes:
        return vault_record(tag)

    async def _wrap(
        self, name: str, record_key: bytes, data_key_id: bytes, data_key: bytes
    ) -> bytes:
        if self._wrapper is not None:
            context = _lp(b"acs1-vault", name.encode("utf-8"), record_key, data_key_id)
            wrapped = await self._wrapper.wrap(data_key, context=context)
            return bytes([_KMS_VERSION]) + data_key_id + wrapped
        keyring = self._keyring()
        wrap_id = keyring.primary_id
        wrapper = AESGCM(keyring.derive(wrap_id, b"acs1/vault/" + name.encode("utf-8")))
        nonce = os.urandom(12)
        aad = _lp(bytes([_VERSION]), wrap_id, data_key_id, record_key)
        return _RECORD.pack(_VERSION, wrap_id, data_key_id, nonce) + wrapper.encrypt(
            nonce, data_key, aad
        )

    async def _unwrap(self, name: str, record_key: bytes, record: bytes) -> tuple[bytes, bytes]:
        if self._wrapper is not None:
            if len(record) < 6 or record[0] != _KMS_VERSION:
                raise IntegrityError
            data_key_id = record[1:5]
            context = _lp(b"acs1-vault", name.encode("utf-8"), record_key, data_key_id)
            try:
                data_key = await self._wrapper.unwrap(record[5:], context=context)
            except Exception:
                raise IntegrityError from None
            if not isinstance(data_key, bytes) or len(data_key) != KEY_SIZE:
                raise IntegrityError
            return data_key_id, data_key
        if len(record) != _RECORD_SIZE:
            raise IntegrityError
        version, wrap_id, data_key_id, nonce = _RECORD.unpack_from(record)
        keyring = self._keyring()
        if version != _VERSION or wrap_id not in keyring:
            raise IntegrityError
        wrapper = AESGCM(keyring.derive(wrap_id, b"acs1/vault/" + name.encode("utf-8")))
        aad = _lp(bytes([version]), wrap_id, data_key_id, record_key)
        try:
            return data_key_id, wrapper.decrypt(nonce, record[_RECORD.size :], aad)
        except InvalidTag:
            raise IntegrityError from None

    async def load(self, name: str, tag: bytes, *, create: bool) -> tuple[bytes, bytes] | None:
        """``(data_key_id, data_key)``; created (and stored) when absent and ``create`` is set.

        An unreadable record raises IntegrityError: silently replacing it would orphan data.
        """
        record_key = self.record_key(tag)
        record = await self._backend.get(record_key)
        if record is not None:
            try:
                return await self._unwrap(name, record_key, record)
            except IntegrityError:
                audit.emit("decrypt_failed", namespace=name, what="vault_record")
                raise
        if not create:
            return None
        data_key_id, data_key = os.urandom(4), os.urandom(KEY_SIZE)
        await self._backend.set(
            record_key, await self._wrap(name, record_key, data_key_id, data_key), ttl=None
        )
        # Read back: when two processes create the key at once, both adopt whichever landed.
        stored = await self._backend.get(record_key)
        if stored is None:
            return data_key_id, data_key
        return await self._unwrap(name, record_key, stored)

    async def index_key(self) -> bytes:
        """The manager-wide index key of a KMS-only deployment: generated once, wrapped like a
        data key, kept in this vault; every process sharing the vault hashes under it."""
        record = await self._backend.get(INDEX_RECORD)
        if record is None:
            key_id, key = os.urandom(4), os.urandom(KEY_SIZE)
            wrapped = await self._wrap(_INDEX_CONTEXT_NAME, INDEX_RECORD, key_id, key)
            if isinstance(self._backend, AtomicBackend):
                await self._backend.add(INDEX_RECORD, wrapped, ttl=None)
            else:
                await self._backend.set(INDEX_RECORD, wrapped, ttl=None)
            record = await self._backend.get(INDEX_RECORD)
            if record is None:
                raise IntegrityError
        try:
            return (await self._unwrap(_INDEX_CONTEXT_NAME, INDEX_RECORD, record))[1]
        except IntegrityError:
            audit.emit("decrypt_failed", namespace="-", what="index_record")
            raise

    async def destroy(self, tag: bytes) -> bool:
        return await self._backend.delete(self.record_key(tag))

    async def rewrap(self, name: str, tag: bytes) -> bool:
        """Re-wrap the record under the keyring's primary key; entries are untouched."""
        record_key = self.record_key(tag)
        found = await self.load(name, tag, create=False)
        if found is None:
            return False
        data_key_id, data_key = found
        await self._backend.set(
            record_key, await self._wrap(name, record_key, data_key_id, data_key), ttl=None
        )
        audit.emit("key_rotated", level=logging.INFO, namespace=name, what="vault_record")
        return True


class KeyLease:
    """A private namespace's data key, trusted for at most ``interval`` seconds at a time.

    :meth:`fresh` is the per-operation check (a clock read); when it fails, :meth:`renew` reads
    the vault record again. A record that changed or vanished (another process erased the
    namespace) replaces the key, creating a fresh one if need be, and ``on_change`` drops what was
    derived from the old key (memoized reads, the timing-padding sample). :meth:`revoke` (this
    process's own ``erase()``) forgets the key at once and voids every load still in flight, so a
    slow unwrap that finishes after the erasure cannot install the destroyed key.
    """

    __slots__ = (
        "__weakref__",
        "_checked_at",
        "_clock",
        "_generation",
        "_interval",
        "_key",
        "_loaded",
        "_name",
        "_on_change",
        "_tag",
        "_vault",
    )

    def __init__(
        self,
        vault: Vault,
        name: str,
        tag: bytes,
        key: StaticKey,
        *,
        clock: Clock,
        interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self._vault = vault
        self._name = name
        self._tag = tag
        self._key = key
        self._clock = clock
        self._interval = interval
        self._on_change = on_change
        self._generation = 0
        self._checked_at = -math.inf
        self._loaded: tuple[bytes, bytes] | None = None

    def __repr__(self) -> str:
        return f"KeyLease(loaded={self._loaded is not None}, interval={self._interval})"

    def fresh(self) -> bool:
        checked = self._checked_at
        # A clock that went backwards ends the lease rather than stretching it.
        return checked <= self._clock() < checked + self._interval

    def revoke(self) -> None:
        self._generation += 1
        self._checked_at = -math.inf
        had_key = self._loaded is not None
        self._loaded = None
        self._key.forget()
        if had_key:
            self._on_change()

    async def renew(self) -> None:
        while True:
            generation = self._generation
            started = self._clock()
            found = await self._vault.load(self._name, self._tag, create=True)
            if found is None:  # pragma: no cover - create=True always yields a key
                raise IntegrityError
            if generation == self._generation:
                break
        loaded = self._loaded
        if loaded is None or not (
            hmac.compare_digest(loaded[0], found[0]) and hmac.compare_digest(loaded[1], found[1])
        ):
            self._key.load(*found)
            self._loaded = found
            if loaded is not None:
                self._on_change()
        self._checked_at = started
