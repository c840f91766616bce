"""AES-256-GCM envelopes bound to their namespace, storage key, key id and expiry.

Envelope (all header fields fixed-width, big-endian)::

    version (1) | key_id (4) | expires_at_ms (8) | nonce (12) | AES-256-GCM(frame) + tag (16)

Associated data: the length-prefixed concatenation of version, key_id, namespace id, storage key
and expires_at_ms. The plaintext is the whole entry frame (whose first 8 bytes repeat the expiry
and are checked against the header after decryption).

What this buys, for an attacker who can write to the store:

* moving an entry to another key or namespace changes the storage key or namespace id in the
  associated data → authentication fails;
* editing the header (to strip or extend the expiry, or to name another key id or version) →
  authentication fails, or the key id is unknown;
* restoring an entry after its authenticated expiry → it is expired, whatever the store says;
* planting a payload (say, a pickle) → authentication fails before anything is deserialized.

Every such failure is the same outcome: a miss (``IntegrityError`` in strict mode), the entry is
deleted, and exactly one ``tamper_detected`` audit event names the namespace and a reason from a
fixed list. The key used is chosen by the header's key id from the keyring (never tried in turn);
the algorithm is fixed by ``version`` in code, never read from data beyond choosing "known/unknown".

Nonces are 96-bit random; this process counts encryptions per key and raises a ``nonce_budget``
audit event at 2**30 (a quarter of the 2**32 random-nonce bound), time to rotate.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Protocol

import anyio.lowlevel
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import audit
from ..backend import Backend
from ..clock import Clock
from ..errors import IntegrityError
from ..frame import BATCH_YIELD_BYTES
from ..keyring import Keyring
from .base import Layer

__all__ = [
    "ENVELOPE_OVERHEAD",
    "VERSION",
    "Encryption",
    "KeySource",
    "KeyringKeys",
    "PaddedEncryption",
    "StaticKey",
]

VERSION: Final = 1
_HEADER: Final = struct.Struct(">B4sQ12s")
HEADER_SIZE: Final = _HEADER.size
TAG_SIZE: Final = 16
ENVELOPE_OVERHEAD: Final = HEADER_SIZE + TAG_SIZE
NONCE_WARNING: Final = 2**30
REPLAY_GRACE_MS: Final = 2_000
_EXPIRY: Final = struct.Struct(">Q")
_VERSION_BYTES: Final = bytes([VERSION])
_AAD_HEAD: Final = (1).to_bytes(4, "big") + _VERSION_BYTES + (4).to_bytes(4, "big")
_AAD_EXPIRES: Final = (8).to_bytes(4, "big")


def _lp(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


class KeySource(Protocol):
    """Which AES key seals new entries, and which key opens an entry with a given id."""

    @property
    def primary_id(self) -> bytes: ...

    @property
    def epoch(self) -> int:
        """Changes whenever the keys this source can open with change (see :mod:`..memo`)."""
        ...

    def cipher(self, key_id: bytes) -> AESGCM | None: ...


class KeyringKeys:
    """Per-namespace sub-keys of every keyring key: HKDF-SHA256, namespace name in ``info``.

    ``keyring`` is a callable so that a manager can adopt a rotated keyring for every namespace.
    """

    __slots__ = ("_ciphers", "_epoch", "_info", "_keyring", "_seen")

    def __init__(self, keyring: Callable[[], Keyring], namespace: str) -> None:
        self._keyring = keyring
        self._info = b"acs1/encryption/" + namespace.encode("utf-8")
        self._ciphers: dict[bytes, AESGCM] = {}
        self._seen: Keyring | None = None
        self._epoch = 0

    @property
    def primary_id(self) -> bytes:
        return self._keyring().primary_id

    def _current(self) -> Keyring:
        keyring = self._keyring()
        if keyring is not self._seen:
            self._ciphers.clear()
            self._seen = keyring
            self._epoch += 1
        return keyring

    @property
    def epoch(self) -> int:
        self._current()
        return self._epoch

    def cipher(self, key_id: bytes) -> AESGCM | None:
        keyring = self._current()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            if key_id not in keyring:
                return None
            cipher = self._ciphers[key_id] = AESGCM(keyring.derive(key_id, self._info))
        return cipher


class StaticKey:
    """One data key under one id (a private namespace's unwrapped data key).

    Starts empty: a private namespace loads (or creates) its data key on first use, and drops
    it again when the namespace is erased.
    """

    __slots__ = ("_cipher", "_epoch", "_key_id")

    def __init__(self) -> None:
        self._key_id = b""
        self._cipher: AESGCM | None = None
        self._epoch = 0

    def load(self, key_id: bytes, key: bytes) -> None:
        self._key_id = key_id
        self._cipher = AESGCM(key)
        self._epoch += 1

    def forget(self) -> None:
        self._key_id = b""
        self._cipher = None
        self._epoch += 1

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def loaded(self) -> bool:
        return self._cipher is not None

    @property
    def primary_id(self) -> bytes:
        return self._key_id

    def cipher(self, key_id: bytes) -> AESGCM | None:
        return self._cipher if key_id == self._key_id else None


class Encryption(Layer):
    __slots__ = (
        "_clock",
        "_counts",
        "_keys",
        "_namespace",
        "_ns_id",
        "_aad_ns",
        "_on_tamper",
        "_strict",
    )

    def __init__(
        self,
        inner: Backend,
        *,
        keys: KeySource,
        namespace: str,
        namespace_id: bytes,
        clock: Clock,
        strict: bool,
        on_tamper: Callable[[], None],
    ) -> None:
        super().__init__(inner)
        self._keys = keys
        self._namespace = namespace
        self._ns_id = namespace_id
        self._clock = clock
        self._strict = strict
        self._on_tamper = on_tamper
        self._counts: dict[bytes, int] = {}
        self._aad_ns = _lp(namespace_id)

    def _aad(self, key_id: bytes, storage_key: bytes, expires: bytes) -> bytes:
        # Equal to _lp(version, key_id, namespace_id, storage_key, expires), with the constant
        # parts precomputed (key ids and expiries are fixed-width, so their length prefixes are).
        return b"".join(
            (
                _AAD_HEAD,
                key_id,
                self._aad_ns,
                len(storage_key).to_bytes(4, "big"),
                storage_key,
                _AAD_EXPIRES,
                expires,
            )
        )

    def seal(self, storage_key: bytes, frame: bytes) -> bytes:
        key_id = self._keys.primary_id
        cipher = self._keys.cipher(key_id)
        if cipher is None:  # pragma: no cover - a key source always holds its primary
            raise IntegrityError
        expires = frame[:8]
        nonce = os.urandom(12)
        count = self._counts.get(key_id, 0) + 1
        self._counts[key_id] = count
        if count == NONCE_WARNING:
            audit.emit("nonce_budget", namespace=self._namespace, key_id=key_id.hex(), count=count)
        sealed = cipher.encrypt(nonce, frame, self._aad(key_id, storage_key, expires))
        return b"".join((_VERSION_BYTES, key_id, expires, nonce, sealed))

    def open(self, storage_key: bytes, envelope: bytes) -> tuple[bytes | None, str]:
        """``(frame, "")`` on success, ``(None, reason)`` otherwise; never raises."""
        if len(envelope) < ENVELOPE_OVERHEAD + 8:
            return None, "malformed"
        version, key_id, expires_ms, nonce = _HEADER.unpack_from(envelope)
        if version != VERSION:
            return None, "unknown_version"
        cipher = self._keys.cipher(key_id)
        if cipher is None:
            return None, "unknown_key"
        expires = envelope[5:13]
        try:
            frame = cipher.decrypt(
                nonce, envelope[HEADER_SIZE:], self._aad(key_id, storage_key, expires)
            )
        except InvalidTag:
            return None, "auth_failed"
        if frame[:8] != expires:
            return None, "malformed"
        if expires_ms and (reason := self.lapsed(expires_ms)):
            return None, reason
        return frame, ""

    def lapsed(self, expires_ms: int) -> str:
        """ "expired" or "replayed" (long past its expiry) if ``expires_ms`` has passed, else ""."""
        late = self._clock() * 1000 - expires_ms
        if late < 0:
            return ""
        return "replayed" if late > REPLAY_GRACE_MS else "expired"

    def rehearsal(self, storage_key: bytes, frame: bytes) -> Callable[[], tuple[bytes | None, str]]:
        """:meth:`open` of a same-shaped envelope under a throwaway key: the work of a hit, for
        timing padding, that needs none of the namespace's keys (a private namespace loads its
        data key on first use and replaces it on erasure)."""
        stand_in = StaticKey()
        stand_in.load(b"\x00" * 4, AESGCM.generate_key(bit_length=256))
        twin = Encryption(
            self.inner,
            keys=stand_in,
            namespace=self._namespace,
            namespace_id=self._ns_id,
            clock=self._clock,
            strict=False,
            on_tamper=lambda: None,
        )
        envelope = twin.seal(storage_key, frame)
        return lambda: twin.open(storage_key, envelope)

    async def reject(self, storage_key: bytes, reason: str) -> None:
        """Delete an entry that failed :meth:`open` for ``reason``; count and audit it unless it
        merely expired, and raise ``IntegrityError`` in strict mode."""
        try:
            await self.inner.delete(storage_key)
        finally:
            if reason != "expired":
                self._on_tamper()
                audit.emit("tamper_detected", namespace=self._namespace, reason=reason)
        if self._strict and reason != "expired":
            raise IntegrityError

    async def _opened(self, storage_key: bytes, envelope: bytes | None) -> bytes | None:
        if envelope is None:
            return None
        frame, reason = self.open(storage_key, envelope)
        if frame is None:
            await self.reject(storage_key, reason)
        return frame

    def replay(self) -> None:
        """Timing padding: repeat the last successful decryption (see :class:`PaddedEncryption`)."""

    def forget_replay(self) -> None:
        """Drop what :meth:`replay` would repeat."""

    async def get(self, key: bytes) -> bytes | None:
        return await self._opened(key, await self.inner.get(key))

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        envelopes = await self.inner.get_many(keys)
        frames: list[bytes | None] = []
        work = 0
        for key, envelope in zip(keys, envelopes, strict=True):
            frame: bytes | None = None
            if envelope is not None:
                work += len(envelope)
                if work > BATCH_YIELD_BYTES:
                    work = 0
                    await anyio.lowlevel.checkpoint()
                frame, reason = self.open(key, envelope)
                if frame is None:
                    await self.reject(key, reason)
            frames.append(frame)
        return frames

    @property
    def epoch(self) -> int:
        """The key source's epoch (see :class:`KeySource`)."""
        return self._keys.epoch

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        await self.inner.set(key, self.seal(key, value), ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        await self.inner.set_many([(k, self.seal(k, v)) for k, v in items], ttl=ttl)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        return await super().add(key, self.seal(key, value), ttl=ttl)

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        found = await super().get_versioned(key)
        if found is None:
            return None
        frame = await self._opened(key, found[0])
        return None if frame is None else (frame, found[1])

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        return await super().compare_and_set(key, token, self.seal(key, value), ttl=ttl)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        async for key, envelope in self.inner.scan(prefix):
            frame = await self._opened(key, envelope)
            if frame is not None:
                yield key, frame

    async def rotate(self, prefix: bytes, *, progress: Callable[[int], None] | None = None) -> int:
        """Re-seal every entry under ``prefix`` that is not under the primary key."""
        primary = self._keys.primary_id
        # Keys only: holding every stale envelope would load the namespace into memory.
        stale = [key async for key, envelope in self.inner.scan(prefix) if envelope[1:5] != primary]
        count = 0
        for key in stale:
            frame = await self._opened(key, await self.inner.get(key))
            if frame is None:
                continue
            expires_ms = _EXPIRY.unpack_from(frame)[0]
            ttl = None if not expires_ms else expires_ms / 1000 - self._clock()
            if ttl is not None and ttl <= 0:
                continue
            await self.inner.set(key, self.seal(key, frame), ttl=ttl)
            count += 1
            if progress is not None:
                progress(count)
        if count:
            audit.emit("key_rotated", level=logging.INFO, namespace=self._namespace, entries=count)
        return count


class PaddedEncryption(Encryption):
    """Encryption for ``pad_timing=True`` namespaces: remembers the largest envelope it has
    opened or sealed, so that a miss can repeat the work of a hit on the namespace's largest
    entry (:meth:`replay`), whichever key was read last (see :mod:`.padding`)."""

    __slots__ = ("_largest",)

    def __init__(self, inner: Backend, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self._largest: tuple[bytes, bytes] | None = None

    def _keep(self, key: bytes, envelope: bytes) -> None:
        if self._largest is None or len(envelope) > len(self._largest[1]):
            self._largest = (key, envelope)

    async def get(self, key: bytes) -> bytes | None:
        envelope = await self.inner.get(key)
        frame = await self._opened(key, envelope)
        if frame is not None and envelope is not None:
            self._keep(key, envelope)
        return frame

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        envelopes = await self.inner.get_many(keys)
        frames: list[bytes | None] = []
        for key, envelope in zip(keys, envelopes, strict=True):
            frame = await self._opened(key, envelope)
            if frame is not None and envelope is not None:
                self._keep(key, envelope)
            frames.append(frame)
        return frames

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        envelope = self.seal(key, value)
        await self.inner.set(key, envelope, ttl=ttl)
        self._keep(key, envelope)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        sealed = [(k, self.seal(k, v)) for k, v in items]
        await self.inner.set_many(sealed, ttl=ttl)
        for key, envelope in sealed:
            self._keep(key, envelope)

    def replay(self) -> None:
        if self._largest is not None:
            self.open(*self._largest)

    def forget_replay(self) -> None:
        self._largest = None
