"""The ``Cache`` facade: one namespace, typed values, ``str`` keys, the namespace's policy.

The facade turns a call into the entry frame (:mod:`aiocache_secure.frame`) and hands it to the
namespace's layer stack (:func:`aiocache_secure.layers.compose`). It owns what only it can do:
key validation, (de)serialization, TTL resolution, the expiry check on read, statistics and
``fail_open``. Around it: :mod:`aiocache_secure.facade` (what every operation shares),
:mod:`aiocache_secure.atomic` (``add``/``incr``/``expire``), :mod:`aiocache_secure.padded`
(``PaddedCache``, timing padding), :mod:`aiocache_secure.export` (JSON Lines export), and
:mod:`aiocache_secure.layers.verified` (the verified-read memo, whose entries reads decode once).
"""

from __future__ import annotations

import enum
import hmac
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar, overload

import anyio.lowlevel

from . import frame, typed
from .atomic import AtomicUpdates
from .errors import (
    BackendError,
    CacheError,
    IntegrityError,
    SerializationError,
)
from .export import export_jsonl
from .frame import HEAD as _FRAME_HEAD
from .layers.verified import Verified, VerifiedReads
from .policy import Seconds
from .tags import Pending, is_record

__all__ = ["MISSING", "Cache"]

_log: Final = logging.getLogger("aiocache_secure")
_D = TypeVar("_D")
_T = TypeVar("_T")


class _Missing(enum.Enum):
    """The type of :data:`MISSING`: a one-member enum, so ``is not MISSING`` narrows."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""Pass as ``default=`` to tell a miss from a cached ``None``."""


class Cache(AtomicUpdates):
    """One namespace. Create it with :meth:`CacheManager.namespace`, not directly."""

    __slots__ = ()

    # -- reads ---------------------------------------------------------------------------------

    @overload
    async def get(self, key: str) -> Any | None: ...

    @overload
    async def get(self, key: str, default: _D) -> Any | _D: ...

    @overload
    async def get(self, key: str, *, type: type[_T]) -> _T | None: ...

    @overload
    async def get(self, key: str, default: _D, *, type: type[_T]) -> _T | _D: ...

    async def get(self, key: str, default: Any = None, *, type: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` on a miss.

        Pass ``default=MISSING`` to tell a miss from a cached ``None``: the result is then
        ``Any | Literal[MISSING]``, and ``if value is not MISSING:`` narrows it for type checkers.

        ``type=``: the value comes back as that type (a Pydantic model, a dataclass,
        ``list[Model]``, ``Model | None``, ...; see docs/values.md); an entry that does not fit
        it is a miss. The class comes from the caller, never from the stored data.
        """
        if type is not None:
            return await self._get_typed(key, default, type)
        raw = self._key(key)
        if self._pending() and not await self._ready():
            return default
        if self._verified is not None:
            return await self._get_verified(raw, default, self._verified)
        try:
            data = await self._stack.get(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            data = None
        if data is not None:
            ok, value = self._open_frame(raw, data)
            if not ok:  # maybe a tagged entry: a hit once its tags check
                ok, value = await self._checked(ok, value)
            if ok:
                self.stats.hits += 1
                return value
            await self._discard(raw, value)
        self.stats.misses += 1
        return default

    async def _get_verified(self, raw: bytes, default: Any, verified: VerifiedReads) -> Any:
        """``get`` of a memoized namespace: a verified entry's frame is decoded at most once
        (immutable values are handed out again, others decoded afresh from its payload). A
        tagged entry is a hit only once its tags check, on every read."""
        try:
            entry = await verified.read(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            entry = None
        if entry is not None:
            offset = entry.offset
            if offset >= 0:
                self.stats.hits += 1
                return entry.value if not offset else self._serializer.loads(entry.frame[offset:])
            if entry.refs:  # tagged, decoded before
                ok, reason = await self._tags.confirm(entry.refs)
                if ok:
                    self.stats.hits += 1
                    return entry.tagged_value(self._serializer.loads)
                await self._discard(raw, reason)
                self.stats.misses += 1
                return default
            ok, value = self._open_frame(raw, entry.frame)
            if ok:
                entry.keep(value)
            elif value.__class__ is Pending:
                refs = value.refs
                ok, value = await self._tags.check(value)
                if ok:
                    entry.keep(value, refs)
            if ok:
                self.stats.hits += 1
                return value
            await self._discard(raw, value)
        self.stats.misses += 1
        return default

    @staticmethod
    def _typed_or(value: Any, default: Any, annotation: Any) -> Any:
        if value is MISSING:
            return default
        try:
            return typed.coerce(value, annotation)
        except SerializationError:
            return default

    async def _get_typed(self, key: str, default: Any, annotation: Any) -> Any:
        found = await self.get(key, MISSING)
        if found is MISSING:
            return default
        try:
            return typed.coerce(found, annotation)
        except SerializationError:
            return default

    async def get_many(
        self, keys: Iterable[str], default: Any = None, *, type: Any = None
    ) -> list[Any]:
        """One value per key, in order; ``default`` for each miss. One round trip to the store.

        ``type=`` as for :meth:`get`: every value comes back as that type.
        """
        if type is not None:
            found = await self.get_many(keys, MISSING)
            return [self._typed_or(value, default, type) for value in found]
        raws = self._keys(keys)
        if self._pending() and not await self._ready():
            return [default] * len(raws)
        if not raws:
            return []
        if self._verified is not None:
            return await self._get_many_verified(raws, default, self._verified)
        return await self._get_many(raws, default)

    async def _get_many_verified(
        self, raws: list[bytes], default: Any, verified: VerifiedReads
    ) -> list[Any]:
        """``get_many`` of a memoized namespace (see :meth:`_get_verified`): one round trip.
        Entries read for the first time are decoded by :meth:`_decode_many`."""
        try:
            entries = await verified.read_many(raws)
        except BackendError as exc:
            self._backend_failed(exc)
            entries = [None] * len(raws)
        # A hot batch, every value kept and immutable, in one comprehension.
        kept = [entry.value for entry in entries if entry is not None and entry.offset == 0]
        if len(kept) == len(entries):
            self.stats.hits += len(kept)
            return kept
        out: list[Any] = []
        first: list[tuple[int, Verified]] = []
        hits = 0
        loads = self._serializer.loads
        for index, entry in enumerate(entries):
            if entry is not None:
                offset = entry.offset
                if offset == 0:
                    out.append(entry.value)
                elif offset > 0:
                    out.append(loads(entry.frame[offset:]))
                else:
                    first.append((index, entry))
                    out.append(default)
                    continue
                hits += 1
                continue
            out.append(default)
        self.stats.hits += hits
        self.stats.misses += len(out) - hits - len(first)
        if first:  # counts its own reads
            frames = [entry.frame for _, entry in first]
            values = await self._decode_many([raws[i] for i, _ in first], frames, MISSING)
            for (index, entry), value in zip(first, values, strict=True):
                if value is not MISSING:
                    if not frame.is_tagged(entry.frame):  # tagged: checked on every read
                        entry.keep(value)
                    out[index] = value
        return out

    async def _get_many(self, raws: list[bytes], default: Any) -> list[Any]:
        """``get_many`` through the layers."""
        return await self._decode_many(raws, await self._read_frames(raws), default)

    async def _decode_many(
        self, raws: list[bytes], found: Sequence[bytes | None], default: Any
    ) -> list[Any]:
        """The values of a batch of frames (``default`` for each miss; bad entries discarded),
        counted as reads."""
        out: list[Any] = []
        hits = 0
        now_ms = self._clock() * 1000
        head, header, loads = _FRAME_HEAD.unpack_from, frame.HEADER, self._serializer.loads_fast
        embed, same = self._embed, hmac.compare_digest
        tagged: list[tuple[int, bytes, Pending]] = []
        work = 0
        try:
            for raw, data in zip(raws, found, strict=True):
                if data is not None:
                    work += len(data)
                    if work > frame.BATCH_YIELD_BYTES:
                        work = 0
                        await anyio.lowlevel.checkpoint()
                        now_ms = self._clock() * 1000
                    # The common case of _open_frame() inlined: a well-formed live entry.
                    if len(data) >= header:
                        expires_ms, key_len = head(data)
                        start = header + key_len
                        if (
                            len(data) >= start
                            and key_len <= frame.MAX_KEY_BYTES
                            and not (expires_ms and expires_ms <= now_ms)
                            and (not embed or same(data[header:start], raw))
                        ):
                            try:
                                value = loads(data[start:])
                            except Exception:  # noqa: S110 - _open_frame() classifies it
                                pass
                            else:
                                out.append(value)
                                hits += 1
                                continue
                    ok, value = self._open_frame(raw, data, now_ms)
                    if ok:  # e.g. a json payload only the standard library reads (ints > 64 bits)
                        hits += 1
                        out.append(value)
                        continue
                    if value.__class__ is Pending:
                        tagged.append((len(out), raw, value))
                    else:
                        await self._discard(raw, value)
                out.append(default)
            if tagged:
                checked = await self._tags.check_all([pending for _, _, pending in tagged])
                for (index, raw, _), (ok, value) in zip(tagged, checked, strict=True):
                    if ok:
                        out[index] = value
                        hits += 1
                    else:
                        await self._discard(raw, value)
        finally:  # counted once per batch; a strict-mode IntegrityError counts what was read
            self.stats.hits += hits
            self.stats.misses += len(out) - hits
        return out

    async def exists(self, key: str) -> bool:
        """Whether a live entry is stored under ``key`` (as padded as a read on a padded
        namespace)."""
        return await self.ttl(key) is not None

    async def ttl(self, key: str) -> float | None:
        """Seconds left: ``None`` on a miss, ``math.inf`` for an entry that never expires."""
        raw = self._key(key)
        if self._pending() and not await self._ready():
            return None
        try:
            data = await self._stack.get(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            return None
        if data is None:
            return None
        try:
            expires_ms = frame.read_expiry(data)
        except IntegrityError:
            await self._discard(raw, "bad")
            return None
        if frame.is_tagged(data):
            ok, value = await self._checked(*self._open_frame(raw, data))
            if not ok:
                await self._discard(raw, value)
                return None
        if not expires_ms:
            return math.inf
        left = expires_ms / 1000 - self._clock()
        if left <= 0:
            await self._discard(raw, "expired")
            return None
        return left

    # -- writes --------------------------------------------------------------------------------

    async def set(
        self, key: str, value: Any, ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (namespace default when None).

        ``tags``: names that :meth:`invalidate_tags` can later turn this entry into a miss by
        (see docs/tags.md).
        """
        raw = self._key(key)
        refs = await self._tag_refs(tags) if tags else b""
        if refs is None:
            return
        data, seconds = self._frame(raw, value, ttl, refs)
        await self._set_frame(raw, data, seconds)

    async def _get_tagged(self, key: str, tags: tuple[str, ...], default: Any) -> Any:
        """``get`` of an entry that should carry ``tags`` (checked by the caller: the decorator),
        with their records read in the same batch as the entry (one round trip where the store
        batches). An untagged entry found there predates its tags: a miss."""
        if not tags:
            return await self.get(key, default)
        raw = self._key(key)
        if self._pending() and not await self._ready():
            return default
        if self._verified is not None:
            return await self._get_tagged_verified(raw, tags, default, self._verified)
        try:
            found = await self._tags.read_with(raw, tags)
        except BackendError as exc:
            self._backend_failed(exc)
            found = [None]
        data = found[0]
        if data is not None:
            ok, value = self._open_frame(raw, data)
            if value.__class__ is Pending:
                records = found[1:]
                if value.refs == self._tags.current_refs(tags, records):
                    self.stats.hits += 1
                    return value.value
                # Tagged otherwise (other tags, another order) or stale: the full check.
                ok, value = await self._tags.check(value, self._tags.known(tags, records))
                if ok:
                    self.stats.hits += 1
                    return value
                await self._discard(raw, value)
            elif not ok:
                await self._discard(raw, value)
        self.stats.misses += 1
        return default

    async def _get_tagged_verified(
        self, raw: bytes, tags: tuple[str, ...], default: Any, verified: VerifiedReads
    ) -> Any:
        """:meth:`_get_tagged` of a memoized namespace: the entry and its records in one batch,
        the entry's value decoded at most once (as :meth:`_get_verified` does)."""
        try:
            entries = await verified.read_many([raw, *self._tags.record_keys(tags)])
        except BackendError as exc:
            self._backend_failed(exc)
            entries = [None]
        entry = entries[0]
        if entry is None:
            self.stats.misses += 1
            return default
        records = [None if record is None else record.frame for record in entries[1:]]
        refs, value = entry.refs, MISSING
        if not refs:  # not decoded yet (or untagged: it predates its tags, a miss)
            ok, opened = self._open_frame(raw, entry.frame)
            if opened.__class__ is not Pending:
                if not ok:
                    await self._discard(raw, opened)
                self.stats.misses += 1
                return default
            refs, value = opened.refs, opened.value
            entry.keep(value, refs)
        if refs == self._tags.current_refs(tags, records):
            ok, reason = True, ""
        else:  # tagged otherwise (other tags, another order) or stale: the full check
            ok, reason = await self._tags.confirm(refs)
        if not ok:
            await self._discard(raw, reason)
            self.stats.misses += 1
            return default
        self.stats.hits += 1
        return value if value is not MISSING else entry.tagged_value(self._serializer.loads)

    async def _set_payload(
        self, key: str, payload: bytes, ttl: Seconds | None = None, tags: Sequence[str] = ()
    ) -> None:
        """:meth:`set` of a value that :meth:`_dumps` serialized."""
        raw = self._key(key)
        refs = await self._tag_refs(tags) if tags else b""
        if refs is None:
            return
        seconds = self.policy.resolve_ttl(ttl)
        expires = frame.expiry_ms(None if seconds is None else self._clock() + seconds)
        data = frame.pack(expires, raw if self._embed else b"", payload, refs)
        await self._set_frame(raw, data, seconds)

    async def _set_frame(self, raw: bytes, data: bytes, seconds: float | None) -> bool:
        """Store one frame; whether it was stored (not when the namespace failed open)."""
        if self._pending() and not await self._ready():
            return False
        try:
            await self._stack.set(raw, data, ttl=seconds)
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        self.stats.sets += 1
        return True

    async def set_many(
        self, items: Mapping[str, Any], ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> None:
        """Store every ``key: value`` of ``items``; ``tags`` (as for :meth:`set`) tag each."""
        if not isinstance(items, Mapping):
            raise TypeError("set_many takes a mapping of str keys to values")
        refs = b""
        if tags and items:
            for name in items:  # every key is checked before the records are read
                self._key(name)
            made = await self._tag_refs(tags)
            if made is None:
                return
            refs = made
        await self._set_frames(self._frames(items, ttl, refs))

    def _frames(
        self, items: Mapping[str, Any], ttl: Seconds | None, refs: bytes = b""
    ) -> tuple[list[tuple[bytes, bytes]], float | None]:
        if not isinstance(items, Mapping):
            raise TypeError("set_many takes a mapping of str keys to values")
        seconds = self.policy.resolve_ttl(ttl)
        expires = frame.expiry_ms(None if seconds is None else self._clock() + seconds)
        dumps, embed = self._serializer.dumps, self._embed
        batch: list[tuple[bytes, bytes]] = []
        for key, value in items.items():
            raw = self._key(key)
            batch.append((raw, frame.pack(expires, raw if embed else b"", dumps(value), refs)))
        return batch, seconds

    async def _set_frames(self, frames: tuple[list[tuple[bytes, bytes]], float | None]) -> bool:
        """Store a batch of frames; whether it was stored (an empty batch is not)."""
        batch, seconds = frames
        if self._pending() and not await self._ready():
            return False
        if not batch:
            return False
        try:
            await self._stack.set_many(batch, ttl=seconds)
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        self.stats.sets += len(batch)
        return True

    async def delete(self, key: str) -> bool:
        raw = self._key(key)
        if self._pending() and not await self._ready():
            return False
        try:
            deleted = await self._stack.delete(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        self.stats.deletes += deleted
        return deleted

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Delete every key given; how many entries were deleted."""
        raws = [self._key(k) for k in keys]
        if self._pending() and not await self._ready():
            return 0
        count = 0
        for raw in raws:
            try:
                count += await self._stack.delete(raw)
            except BackendError as exc:
                self._backend_failed(exc)
        self.stats.deletes += count
        return count

    async def clear(self) -> int:
        """Delete every entry of this namespace (and only this namespace)."""
        self.forget_padding_sample()
        if self._pending() and not await self._ready():
            return 0
        try:
            count = await self._stack.delete_prefix(b"")
        except BackendError as exc:
            self._backend_failed(exc)
            return 0
        self.stats.deletes += count
        return count

    # -- export and rotation ---------------------------------------------------------------------

    async def items(self) -> AsyncIterator[tuple[str, Any]]:
        """Every live ``(key, value)`` of this namespace, streamed from the store."""
        if self._pending():
            await self._run_prepare()
        if self.policy.hash_keys and self._encryption is None:
            raise CacheError(
                "keys of a namespace with hash_keys=True and encrypt=False cannot be recovered; "
                "export needs encrypt=True or hash_keys=False"
            )
        versions: dict[bytes, int | None] = {}  # each tag's record read once per export
        async for stored_key, data in self._stack.scan(b""):
            try:
                expires_ms, embedded, refs, payload = frame.unpack_any(data)
                if expires_ms and expires_ms <= self._clock() * 1000:
                    continue
                raw = embedded if self._embed else stored_key
                if is_record(raw) and not refs:
                    continue
                key = raw.decode("utf-8")
                value = self._serializer.loads(payload)
            except (IntegrityError, SerializationError, UnicodeDecodeError):
                self._bad_entry()
                continue
            if refs and not (await self._tags.check(Pending(value, refs), versions))[0]:
                continue
            yield key, value

    async def export(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write every entry as JSON Lines (``{"key": ..., "value": ...}``) atomically, mode 0600.

        Values must be JSON-representable. Returns the number of entries written.
        """
        return await export_jsonl(self.items(), path, progress=progress)

    async def rotate_keys(self, *, progress: Callable[[int], None] | None = None) -> int:
        """Re-encrypt every entry not sealed under the primary key; returns how many."""
        if self._pending():
            await self._run_prepare()
        if self._encryption is None:
            return 0
        return await self._encryption.rotate(self._prefix, progress=progress)
