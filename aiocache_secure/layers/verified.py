"""Verified reads: the one owner of the verified-read memo's entries (see :mod:`..memo`).

:class:`VerifiedReads` sits directly on the key layer of an encrypted namespace whose reads are
memoized (``compose()`` puts it there, and nowhere else); below the key layer is
:class:`~.encryption.Encryption`, and below that the store. For every key it keeps one
:class:`Verified` entry: the storage key, the envelope last fetched under it, the key epoch that
envelope was authenticated under, the frame it opened to, and (once the facade has decoded it) the
value. A read looks the key up once, fetches the envelopes straight from the store, and serves an
entry only when the envelope fetched *now* equals the verified one under the current key epoch and
has not expired; any other envelope is opened (authenticated and decrypted) by the encryption
layer, and rejected by it when it fails. So a memoized read costs one lookup, one round trip and
one comparison per key, and is exactly what reading through the layers would return.

The facade calls :meth:`VerifiedReads.read` / :meth:`VerifiedReads.read_many` and decodes each
entry's frame at most once (:meth:`Verified.keep`). Writes, deletes and clears through this layer
drop the entries they touch.

With a near cache (:class:`~.near.NearCache`, the store's envelopes kept in process memory and
kept coherent by the store's invalidations) below the encryption layer, a key whose entry holds
the very envelope the near cache holds now is served from this one lookup with no call into the
layers below at all: one memo lookup, one near-cache lookup and one comparison per key. Every
other key is read as above, through the near cache (which answers or fills).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import anyio.lowlevel

from .. import frame as frames
from ..backend import Backend
from ..clock import Clock
from ..memo import ENTRY_OVERHEAD, Memo
from .base import Layer
from .encryption import Encryption
from .keys import HashedKeys, PrefixedKeys
from .near import NearCache

__all__ = ["SHAREABLE", "Verified", "VerifiedReads"]

# Values a memo hit may hand out again as the very same object: immutable ones only.
SHAREABLE: Final = frozenset({str, int, float, bool, type(None), bytes})
_UNDECODED: Final = -1


@dataclass(slots=True, eq=False)
class Verified:
    """One key's verified read.

    ``offset`` says what the facade has made of an untagged ``frame``: ``-1`` nothing yet, ``0``
    ``value`` is the decoded value (immutable, handed out as is), otherwise the payload starts at
    ``frame[offset:]`` and is decoded afresh on each hit (callers may mutate what they get).
    A tagged frame's ``offset`` stays ``-1``, so that no path serves it without its tag check:
    once decoded, ``refs`` holds its tag references and ``tagged`` what ``offset`` would.
    ``expires_ms`` is the authenticated expiry (0: never), the frame's own.
    """

    size: int
    storage_key: bytes
    envelope: bytes
    epoch: int
    frame: bytes
    expires_ms: int
    value: Any = None
    offset: int = _UNDECODED
    refs: bytes = b""
    tagged: int = _UNDECODED

    def keep(self, value: Any, refs: bytes = b"") -> None:
        """Remember ``value``, decoded from :attr:`frame` (immutable values only; the others
        are decoded afresh from the payload); ``refs``: the frame's tag references, if any."""
        if type(value) in SHAREABLE:
            self.value, offset = value, 0
        else:
            offset = frames.HEADER + (frames.HEAD.unpack_from(self.frame)[1] & ~frames.TAGGED)
            offset += len(refs)
        if refs:
            self.refs, self.tagged = refs, offset
        else:
            self.offset = offset

    def tagged_value(self, loads: Callable[[bytes], Any]) -> Any:
        """The value of a tagged entry kept by :meth:`keep` (decoded by ``loads`` unless it is
        immutable); only once its tags have been checked."""
        return self.value if not self.tagged else loads(self.frame[self.tagged :])


class VerifiedReads(Layer):
    __slots__ = ("_clock", "_encryption", "_keys", "_memo", "_near", "_prefix", "_store")

    def __init__(self, inner: Backend, *, memo: Memo, memo_prefix: bytes, clock: Clock) -> None:
        super().__init__(inner)
        if not isinstance(inner, HashedKeys | PrefixedKeys) or not isinstance(
            inner.inner, Encryption
        ):
            raise TypeError("VerifiedReads sits on a key layer above the encryption layer")
        self._keys = inner
        self._encryption = inner.inner
        self._store = inner.inner.inner
        self._near = self._store if isinstance(self._store, NearCache) else None
        self._memo = memo
        self._prefix = memo_prefix
        self._clock = clock

    def _open(
        self, memo_key: bytes, storage_key: bytes, envelope: bytes, epoch: int
    ) -> Verified | str:
        """The entry of an envelope opened in full (memoized when small enough), or why it
        failed (for :meth:`Encryption.reject`)."""
        frame, reason = self._encryption.open(storage_key, envelope)
        if frame is None:
            self._memo.discard(memo_key)
            return reason
        size = len(memo_key) + len(storage_key) + len(envelope) + 2 * len(frame) + ENTRY_OVERHEAD
        # Counts the value as large as its frame: the budget bounds what an entry keeps alive.
        expires_ms = frames.HEAD.unpack_from(frame)[0]
        entry = Verified(size, storage_key, envelope, epoch, frame, expires_ms)
        self._memo.put(memo_key, entry)
        return entry

    async def _reject(self, memo_key: bytes, storage_key: bytes, reason: str) -> None:
        self._memo.discard(memo_key)
        await self._encryption.reject(storage_key, reason)

    async def read(self, key: bytes) -> Verified | None:
        """The verified entry under ``key``, or None (absent, expired or rejected)."""
        memo_key = self._prefix + key
        entry: Verified | None = self._memo.get(memo_key)
        if entry is not None and self._near is not None and self._near_hit(entry):
            return entry
        storage_key = self._keys.storage_key(key) if entry is None else entry.storage_key
        envelope = await self._store.get(storage_key)
        if envelope is None:
            return None
        encryption = self._encryption
        epoch = encryption.epoch
        if entry is not None and entry.envelope == envelope and entry.epoch == epoch:
            if not entry.expires_ms or not (reason := encryption.lapsed(entry.expires_ms)):
                return entry
            await self._reject(memo_key, storage_key, reason)
            return None
        opened = self._open(memo_key, storage_key, envelope, epoch)
        if isinstance(opened, str):
            await self._reject(memo_key, storage_key, opened)
            return None
        return opened

    def _near_hit(self, entry: Verified) -> bool:
        """Whether the near cache holds ``entry``'s very envelope: then it is served with no
        store read at all (the near cache's own rules say when it may serve; see layers/near.py)."""
        near = cast(NearCache, self._near)
        held = near.held()
        if held is None:
            return False
        envelope = held.get(entry.storage_key)
        if envelope is None:
            return False
        held.move_to_end(entry.storage_key)
        if (
            envelope == entry.envelope
            and entry.epoch == self._encryption.epoch
            and not (entry.expires_ms and entry.expires_ms <= self._clock() * 1000)
        ):
            near.served(1)
            return True
        return False

    async def read_many(self, keys: Sequence[bytes]) -> list[Verified | None]:
        """:meth:`read` of every key, in order, with one round trip to the store (none for the
        keys the near cache serves)."""
        near = self._near
        held = None if near is None else near.held()
        if held is None:
            return await self._read_many(keys)
        recall, prefix, look, used = self._memo.get, self._prefix, held.get, held.move_to_end
        epoch, now_ms = self._encryption.epoch, self._clock() * 1000
        out: list[Verified | None] = [recall(prefix + key) for key in keys]
        rest: list[int] = []
        for index, entry in enumerate(out):
            if entry is not None:
                storage_key = entry.storage_key
                envelope = look(storage_key)
                if envelope is not None:
                    used(storage_key)
                    if (
                        envelope == entry.envelope
                        and entry.epoch == epoch
                        and not (entry.expires_ms and entry.expires_ms <= now_ms)
                    ):
                        continue
            rest.append(index)
        if len(rest) < len(out):
            cast(NearCache, near).served(len(out) - len(rest))
        if rest:
            found = await self._read_many([keys[index] for index in rest])
            for index, entry in zip(rest, found, strict=True):
                out[index] = entry
        return out

    async def _read_many(self, keys: Sequence[bytes]) -> list[Verified | None]:
        recall, prefix, derive = self._memo.get, self._prefix, self._keys.storage_key
        memo_keys = [prefix + key for key in keys]
        entries: list[Verified | None] = [recall(memo_key) for memo_key in memo_keys]
        storage_keys = [
            derive(key) if entry is None else entry.storage_key
            for key, entry in zip(keys, entries, strict=True)
        ]
        envelopes = await self._store.get_many(storage_keys)
        encryption = self._encryption
        epoch, now_ms = encryption.epoch, self._clock() * 1000
        out: list[Verified | None] = []
        work = 0
        for index, envelope in enumerate(envelopes):
            if envelope is None:
                out.append(None)
                continue
            entry = entries[index]
            if (
                entry is not None
                and entry.envelope == envelope
                and entry.epoch == epoch
                and not (entry.expires_ms and entry.expires_ms <= now_ms)
            ):
                out.append(entry)
                continue
            memo_key, storage_key = memo_keys[index], storage_keys[index]
            if entry is not None and entry.envelope == envelope and entry.epoch == epoch:
                reason = encryption.lapsed(entry.expires_ms)  # its authenticated expiry passed
                opened: Verified | str = reason or entry
            else:
                work += len(envelope)
                if work > frames.BATCH_YIELD_BYTES:
                    work = 0
                    await anyio.lowlevel.checkpoint()
                    epoch, now_ms = encryption.epoch, self._clock() * 1000
                opened = self._open(memo_key, storage_key, envelope, epoch)
            if isinstance(opened, str):
                out.append(None)
                await self._reject(memo_key, storage_key, opened)
                epoch = encryption.epoch  # the keys may have changed during the await
                continue
            out.append(opened)
        return out

    async def get(self, key: bytes) -> bytes | None:
        entry = await self.read(key)
        return None if entry is None else entry.frame

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [None if entry is None else entry.frame for entry in await self.read_many(keys)]

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        self._memo.discard(self._prefix + key)
        await self.inner.set(key, value, ttl=ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        discard, prefix = self._memo.discard, self._prefix
        for key, _ in items:
            discard(prefix + key)
        await self.inner.set_many(items, ttl=ttl)

    async def delete(self, key: bytes) -> bool:
        self._memo.discard(self._prefix + key)
        return await self.inner.delete(key)

    async def delete_prefix(self, prefix: bytes) -> int:
        self._memo.discard_prefix(self._prefix + prefix)
        return await self.inner.delete_prefix(prefix)

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        self._memo.discard(self._prefix + key)
        return await super().add(key, value, ttl=ttl)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        self._memo.discard(self._prefix + key)
        return await super().compare_and_set(key, token, value, ttl=ttl)
