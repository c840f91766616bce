"""The ``Cache`` facade: one namespace, typed values, ``str`` keys, the namespace's policy.

The facade turns a call into the entry frame (:mod:`aiocache_secure.frame`) and hands it to the
namespace's layer stack (:func:`aiocache_secure.layers.compose`). It owns what only it can do:
key validation, (de)serialization, TTL resolution, the expiry check on read, statistics,
``fail_open`` and timing padding (which must cover deserialization).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar, cast, overload

import anyio

from . import audit, frame, typed
from .backend import AtomicBackend, Backend
from .backends.memory import MemoryBackend
from .clock import Clock
from .errors import (
    BackendError,
    CacheError,
    ClosedError,
    ContentionError,
    IntegrityError,
    SerializationError,
)
from .frame import HEAD as _FRAME_HEAD
from .layers.encryption import Encryption
from .layers.padding import TimingPadding
from .memo import ENTRY_OVERHEAD, Memo
from .policy import Policy, Seconds
from .serializers import Serializer, export_form
from .stats import Stats
from .tags import UNREAD, Pending, TagIndex, check_tags, is_record

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

_BURST_SECONDS: Final = 10.0
# Values a memo hit may hand out again as the very same object: immutable ones only.
_SHAREABLE: Final = frozenset({str, int, float, bool, type(None), bytes})
_CAS_RETRIES: Final = 64


async def _backoff(attempt: int) -> None:
    """Jittered exponential pause after a lost compare-and-set race (at most 50 ms)."""
    await anyio.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.05)))  # noqa: S311


class Lifecycle:
    """Shared open/closed flag: a manager and all its namespaces close together."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False


class Cache:
    """One namespace. Create it with :meth:`CacheManager.namespace`, not directly."""

    __slots__ = (
        "_clock",
        "_embed",
        "_encryption",
        "_fail_open",
        "_last_error_log",
        "_lifecycle",
        "_atomic",
        "_memo",
        "_memo_prefix",
        "_storage_key",
        "_padding",
        "_padding_many",
        "_prefix",
        "_prepare",
        "_prepare_fresh",
        "_prepare_lock",
        "_updating",
        "_serializer",
        "_stack",
        "_strict",
        "_tags",
        "_dummy",
        "_pad_ref",
        "_pad_calibrated",
        "name",
        "policy",
        "stats",
    )

    def __init__(
        self,
        name: str,
        stack: Backend,
        *,
        policy: Policy,
        serializer: Serializer,
        clock: Clock,
        lifecycle: Lifecycle,
        stats: Stats,
        encryption: Encryption | None,
        key_prefix: bytes,
        storage_key: Callable[[bytes], bytes] | None = None,
        memo: Memo | None = None,
        memo_prefix: bytes = b"",
    ) -> None:
        self.name = name
        self.policy = policy
        self.stats = stats
        self._stack = stack
        # The top of a composed stack is always a Layer, which forwards atomic updates (and
        # raises UnsupportedOperation at call time when the store underneath lacks them).
        self._atomic = cast(AtomicBackend, stack)
        self._serializer = serializer
        self._clock = clock
        self._lifecycle = lifecycle
        self._encryption = encryption
        self._prefix = key_prefix
        # The memo's share of the facade (see _remember), on encrypted stacks whose layers
        # memoize: the key layer's mapping lets a batch of memoized keys skip the layers.
        self._memo = memo if encryption is not None and storage_key is not None else None
        self._memo_prefix = memo_prefix
        self._storage_key = storage_key
        self._embed = policy.hash_keys and encryption is not None
        self._strict = policy.strict
        self._fail_open = policy.fail_open
        self._last_error_log = -math.inf
        self._padding = TimingPadding() if policy.pad_timing else None
        self._padding_many = TimingPadding() if policy.pad_timing else None
        self._dummy: Callable[[], object] | None = None
        # Timing padding's reference entry (key, frame): the largest this namespace has written
        # or read, whose work a miss replays; and its size when the floor was last measured.
        self._pad_ref: tuple[bytes, bytes] | None = None
        self._pad_calibrated = 0
        self._prepare: Callable[[], Awaitable[None]] | None = None
        self._prepare_fresh: Callable[[], bool] | None = None
        self._prepare_lock = anyio.Lock()
        self._updating: dict[bytes, tuple[anyio.Lock, list[int]]] = {}
        if self._padding is not None:
            self._dummy = self._make_dummy()
        self._tags = TagIndex(
            stack,
            storage_key=storage_key or (lambda raw: key_prefix + raw),
            embed=self._embed,
            failed=self._backend_failed,
        )

    def __repr__(self) -> str:
        return f"Cache(namespace={self.name!r}, encrypted={self._encryption is not None})"

    @property
    def clock(self) -> Clock:
        """The namespace's wall clock (injectable through the manager)."""
        return self._clock

    @property
    def key_prefix(self) -> bytes:
        """The storage-key prefix of this namespace's entries (for operations tooling)."""
        return self._prefix

    def derive_secret(self, purpose: bytes) -> bytes | None:
        """A 32-byte secret for ``purpose``, derived from this namespace's key: the same in every
        process that shares the keyring, and never stored. ``None`` when the namespace has no
        secret key to derive from (unencrypted, or keys not hashed).

        Integrations use it to key hashes of material that must not reach the store (the web
        cache's credential hashes); ``purpose`` keeps one use's secret apart from another's.
        """
        if not isinstance(purpose, bytes) or not purpose:
            raise TypeError("purpose must be non-empty bytes")
        storage_key = self._storage_key
        if self._encryption is None or not self.policy.hash_keys or storage_key is None:
            return None
        # A raw key no cache key can spell (cache keys are valid UTF-8; 0xFF never is), whose
        # storage key is never written: its PRF output is the secret.
        label = b"\xffacs1/" + purpose + b"-key"
        return hashlib.sha256(b"acs1/" + purpose + b"\x00" + storage_key(label)).digest()

    @property
    def store_evicts(self) -> bool:
        """True when entries may be dropped before they expire: the namespace has
        ``max_entries``/``max_bytes``, or the store underneath evicts to stay within its bounds."""
        policy = self.policy
        if policy.max_entries is not None or policy.max_bytes is not None:
            return True
        return bool(getattr(self._store(), "evicts", False))

    @property
    def store_in_process(self) -> bool:
        """True when the store underneath keeps its entries in this process (``memory://``):
        a read costs less than waiting to share another caller's."""
        return isinstance(self._store(), MemoryBackend)

    def _store(self) -> object:
        """The store under the namespace's layers and its circuit breaker."""
        node: object = self._stack
        while (inner := getattr(node, "inner", None)) is not None:
            node = inner
        return node

    def set_prepare(
        self, prepare: Callable[[], Awaitable[None]], *, fresh: Callable[[], bool] | None = None
    ) -> None:
        """Run ``prepare`` once before the next operation (a private namespace's key load).

        With ``fresh`` (a key lease), ``prepare`` stays: it runs again before any operation that
        finds ``fresh()`` false, once for all the operations waiting on it.
        """
        self._prepare = prepare
        self._prepare_fresh = fresh

    async def _run_prepare(self) -> None:
        fresh = self._prepare_fresh
        if fresh is not None and fresh():
            return
        async with self._prepare_lock:
            prepare, fresh = self._prepare, self._prepare_fresh
            if prepare is not None and (fresh is None or not fresh()):
                try:
                    await prepare()
                except BackendError as exc:
                    self.stats.errors += 1
                    raise exc
                if fresh is None:
                    self._prepare = None

    async def _ready(self) -> bool:
        """Run the pending preparation (a private namespace's key load or lease check).

        False when the store failed and the namespace fails open: the operation is then a miss
        or a no-op. Either way no key that could not be confirmed is used.
        """
        try:
            await self._run_prepare()
        except BackendError:
            if self._fail_open:
                return False
            raise
        return True

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _key(key: object) -> bytes:
        if not isinstance(key, str):
            raise TypeError(f"cache keys must be str, not {type(key).__name__}")
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("cache keys must be valid unicode (no lone surrogates)") from None
        if len(raw) > frame.MAX_KEY_BYTES:
            raise ValueError(f"cache keys are limited to {frame.MAX_KEY_BYTES} bytes of UTF-8")
        return raw

    def _check_open(self) -> None:
        if self._lifecycle.closed:
            raise ClosedError("the cache manager is closed")

    def _backend_failed(self, exc: BackendError) -> None:
        """Count a backend failure; re-raise unless the namespace fails open."""
        self.stats.errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= _BURST_SECONDS:
            self._last_error_log = now
            audit.emit(
                "backend_error",
                namespace=self.name,
                error=type(exc).__name__,
                fail_open=self._fail_open,
            )
        if not self._fail_open:
            raise exc

    def _tampered(self) -> None:
        self.stats.tampered += 1

    def _bad_entry(self) -> NoReturn | None:
        self.stats.tampered += 1
        audit.emit("tamper_detected", namespace=self.name, reason="bad_payload")
        if self._strict:
            raise IntegrityError
        return None

    def _frame(
        self, key: bytes, value: Any, ttl: object, refs: bytes = b""
    ) -> tuple[bytes, float | None]:
        seconds = self.policy.resolve_ttl(ttl)
        payload = self._serializer.dumps(value)
        expires = frame.expiry_ms(None if seconds is None else self._clock() + seconds)
        return frame.pack(expires, key if self._embed else b"", payload, refs), seconds

    def _open_frame(self, key: bytes, data: bytes, now_ms: float = -1.0) -> tuple[bool, Any]:
        """``(True, value)``, or ``(False, reason)`` with reason "expired" or "bad", or a
        :class:`~aiocache_secure.tags.Pending` for a tagged entry: a hit only once
        ``self._tags.check`` says so.

        ``now_ms`` lets a batch read the clock once; by default it is read here.
        """
        try:
            expires_ms, embedded, refs, payload = frame.unpack_any(data)
        except IntegrityError:
            return False, "bad"
        if expires_ms and expires_ms <= (self._clock() * 1000 if now_ms < 0 else now_ms):
            return False, "expired"
        if self._embed and not hmac.compare_digest(embedded, key):
            return False, "bad"
        try:
            value = self._serializer.loads(payload)
        except SerializationError:
            return False, "bad"
        return (False, Pending(value, refs)) if refs else (True, value)

    def _remember(self, memo_key: bytes, raw: bytes, data: bytes, value: Any) -> None:
        """Memoize the value read from ``data``, a frame the encryption layer's memo holds.

        Entry: ``(size, frame, expires_ms, value, payload offset, storage key, epoch, envelope)``.
        Immutable values are shared (offset 0); others are decoded from the payload on each hit.

        ``get`` serves it when the stack returns this very frame object again: the encryption
        layer hands out one object per verified envelope, so identity means "the envelope fetched
        now is the one verified before" (the entry keeps the object alive: its id is not reused).
        ``get_many`` serves it when the store returns, under the storage key, the envelope bytes
        that were verified, under the same key epoch: what the layers' own memo hits require.
        """
        assert self._memo is not None and self._encryption is not None  # noqa: S101 - memo on
        assert self._storage_key is not None  # noqa: S101 - set whenever the memo is
        storage_key = self._storage_key(raw)
        verified = self._encryption.verified(storage_key, data)
        if verified is None:  # not memoized below (too large): identity would never recur
            return
        epoch, envelope = verified
        expires_ms, key_len = _FRAME_HEAD.unpack_from(data)
        start = 0 if type(value) in _SHAREABLE else frame.HEADER + key_len
        # Counts the frame, envelope and storage key it shares with the layers' entries: it may
        # outlive them, and a budget must bound what it keeps alive.
        size = len(memo_key) + 2 * len(data) + len(envelope) + len(storage_key) + ENTRY_OVERHEAD
        entry = (size, data, expires_ms, None if start else value, start, storage_key, epoch)
        self._memo.put(memo_key, (*entry, envelope))

    def _recall(self, memo_key: bytes, data: bytes, now_ms: float) -> tuple[Any, ...] | None:
        """The memo entry that serves ``data``, the frame the stack just returned, or None."""
        assert self._memo is not None  # noqa: S101 - called only when the memo is on
        hit = self._memo.get(memo_key)
        if hit is None or hit[1] is not data or (hit[2] and hit[2] <= now_ms):
            return None
        return hit

    def _memoized_value(self, entry: tuple[Any, ...]) -> Any:
        """An entry's value: the same object if immutable, else decoded afresh from its frame
        (by ``loads``, not ``loads_fast``: some payloads only its fallback decodes)."""
        return entry[3] if not entry[4] else self._serializer.loads(entry[1][entry[4] :])

    def _forget(self, raw: bytes) -> None:
        if self._memo is not None:
            self._memo.discard(self._memo_prefix + raw)

    async def _discard(self, key: bytes, reason: object) -> None:
        if reason is UNREAD:  # its tags could not be checked (fail_open): a miss, not a dead entry
            return
        self._forget(key)
        try:
            await self._stack.delete(key)
        except BackendError as exc:
            self._backend_failed(exc)
        if reason == "bad":
            self._bad_entry()

    def _make_dummy(self) -> Callable[[], object]:
        encryption = self._encryption
        dummy_key = b"\x00" * 8
        dummy_frame = frame.pack(0, b"", self._serializer.dumps({"": ""}))
        if encryption is None:
            return lambda: self._open_frame(dummy_key, dummy_frame)
        rehearse = encryption.rehearsal(dummy_key, dummy_frame)

        def work() -> object:
            opened, _ = rehearse()
            return self._open_frame(dummy_key, opened or dummy_frame)

        return work

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
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return default
        if self._padding is not None:
            return await self._padded_get(raw, default)
        try:
            data = await self._stack.get(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            data = None
        if data is not None:
            memo, now_ms = self._memo, self._clock() * 1000
            if memo is not None:
                memo_key = self._memo_prefix + raw
                hit = self._recall(memo_key, data, now_ms)
                if hit is not None:
                    self.stats.hits += 1
                    return self._memoized_value(hit)
            ok, value = self._open_frame(raw, data, now_ms)
            if ok:
                self.stats.hits += 1
                if memo is not None:
                    self._remember(memo_key, raw, data, value)
                return value
            if value.__class__ is Pending:
                ok, value = await self._tags.check(value)
                if ok:
                    self.stats.hits += 1
                    return value
            await self._discard(raw, value)
        self.stats.misses += 1
        return default

    async def _padded_read(
        self, raw: bytes, padding: TimingPadding
    ) -> tuple[int, bytes | None, bool, Any]:
        """One key's padded read up to its deadline: when it started, the frame read, and
        what :meth:`_padded_open` made of it (a tampered frame already discarded)."""
        started = padding.timer()
        try:
            data = await self._stack.get(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            data = None
        ok, value = self._padded_open(raw, data)
        if value.__class__ is Pending:
            ok, value = await self._tags.check(value)
        if not ok and data is not None:
            await self._discard(raw, value)
        return started, data, ok, value

    async def _padded_get(self, raw: bytes, default: Any) -> Any:
        padding = self._padding
        assert padding is not None  # noqa: S101 - this method runs only when padding is on
        started, data, ok, value = await self._padded_read(raw, padding)
        if ok:
            self.stats.hits += 1
        else:
            self.stats.misses += 1
        result = value if ok else default
        # Nothing that depends on the outcome runs after the deadline: not even freeing the
        # frame a hit read (tens of nanoseconds for a large one, in this frame's teardown).
        del data, value
        padding.wait(started)
        return result

    def _padded_open(self, raw: bytes, data: bytes | None) -> tuple[bool, Any]:
        """:meth:`_open_frame` with the work of a hit either way: a miss (``data`` None)
        replays the reference entry (see :meth:`_replay`)."""
        now_ms = self._clock() * 1000
        if data is None:
            self._replay()
            return False, None
        ok, value = self._open_frame(raw, data, now_ms)
        if ok:
            ref = self._pad_ref
            if ref is None or len(data) > len(ref[1]):
                self._keep_reference(raw, data)
        return ok, value

    def _replay(self) -> None:
        """A miss's share of timing padding: the work of a hit on the reference entry (decrypt
        its envelope, parse its frame, whether or not it has expired since); before any entry,
        on a same-shaped dummy. It depends on neither the key probed now nor the one before."""
        ref = self._pad_ref
        if ref is None:
            assert self._dummy is not None  # noqa: S101 - set whenever padding is on
            self._dummy()
            return
        if self._encryption is not None:
            self._encryption.replay()
        self._open_frame(ref[0], ref[1], 0.0)

    def _keep_reference(self, raw: bytes, data: bytes) -> None:
        """Make ``data`` the reference entry if it is the largest so far; when the reference has
        grown by more than a quarter since it was last measured, measure its replay again and
        raise both paddings' floors to cover it (once per growth: a value the namespace has
        written is covered before it is first read)."""
        ref = self._pad_ref
        if ref is not None and len(data) <= len(ref[1]):
            return
        self._pad_ref = (raw, data)
        if len(data) * 4 > self._pad_calibrated * 5:
            assert self._padding is not None and self._padding_many is not None  # noqa: S101
            self._pad_calibrated = len(data)
            self._padding_many.cover(self._padding.calibrate(self._replay))

    def _keys(self, keys: Iterable[str]) -> list[bytes]:
        keys = keys if isinstance(keys, list | tuple) else list(keys)
        try:  # str.encode rejects non-str keys, as _key does, at a fraction of the cost
            raws = [str.encode(k) for k in keys]
        except (TypeError, UnicodeEncodeError):
            raws = []
        if not raws or max(map(len, raws)) > frame.MAX_KEY_BYTES:
            raws = [self._key(k) for k in keys]  # raises the precise error, if any
        return raws

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
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return [default] * len(raws)
        if not raws:
            return []
        if self._padding_many is not None:
            return await self._padded_get_many(raws, default, self._padding_many)
        if self._memo is not None:
            done = await self._get_many_memoized(raws, default, self._memo)
            if done is not None:
                return done
        return await self._get_many(raws, default)

    async def _get_many_memoized(
        self, raws: list[bytes], default: Any, memo: Memo
    ) -> list[Any] | None:
        """A batch whose every key is in the memo: one round trip straight to the store.

        The layers' work for such a batch is known: the storage keys are memoized, and an
        envelope that equals the one verified under the current key epoch opens to the memoized
        frame. Entries the store no longer holds are misses, as through the layers; any other
        difference (rewritten, re-keyed, expired) sends those keys through the layers again,
        which judge them in full. ``None`` when a key is not memoized: the caller reads through
        the layers.
        """
        recall, memo_prefix = memo.get, self._memo_prefix
        entries = []
        for raw in raws:
            entry = recall(memo_prefix + raw)
            if entry is None:
                return None
            entries.append(entry)
        encryption = self._encryption
        assert encryption is not None  # noqa: S101 - the memo is on only for encrypted stacks
        try:
            found = await encryption.inner.get_many([entry[5] for entry in entries])
        except BackendError as exc:
            self._backend_failed(exc)
            found = [None] * len(raws)
        epoch, now_ms, value_of = encryption.epoch, self._clock() * 1000, self._memoized_value
        out: list[Any] = []
        again: list[int] = []
        hits = 0
        for index, (entry, envelope) in enumerate(zip(entries, found, strict=True)):
            if envelope is not None:
                if (
                    entry[7] == envelope
                    and entry[6] == epoch
                    and not (entry[2] and entry[2] <= now_ms)
                ):
                    # _memoized_value() called only for values it must decode afresh.
                    out.append(entry[3] if not entry[4] else value_of(entry))
                    hits += 1
                    continue
                again.append(index)
            out.append(default)
        if again:  # counts its own reads; if it raises (strict mode), the batch returned nothing
            values = await self._get_many([raws[i] for i in again], default)
            for index, value in zip(again, values, strict=True):
                out[index] = value
        self.stats.hits += hits
        self.stats.misses += len(out) - hits - len(again)
        return out

    async def _get_many(self, raws: list[bytes], default: Any) -> list[Any]:
        """``get_many`` through the layers."""
        try:
            found = await self._stack.get_many(raws)
        except BackendError as exc:
            self._backend_failed(exc)
            found = [None] * len(raws)
        out: list[Any] = []
        hits = 0
        now_ms = self._clock() * 1000
        head, header, loads = _FRAME_HEAD.unpack_from, frame.HEADER, self._serializer.loads_fast
        embed, same = self._embed, hmac.compare_digest
        memoize, memo_prefix = self._memo is not None, self._memo_prefix
        memo_key = b""
        tagged: list[tuple[int, bytes, Pending]] = []
        try:
            for raw, data in zip(raws, found, strict=True):
                if data is not None:
                    if memoize:  # keys of a batch not wholly memoized may still be
                        memo_key = memo_prefix + raw
                        hit = self._recall(memo_key, data, now_ms)
                        if hit is not None:
                            out.append(self._memoized_value(hit))
                            hits += 1
                            continue
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
                                if memoize:
                                    self._remember(memo_key, raw, data, value)
                                continue
                    ok, value = self._open_frame(raw, data, now_ms)
                    if ok:  # e.g. a json payload only the standard library reads (ints > 64 bits)
                        hits += 1
                        out.append(value)
                        if memoize:
                            self._remember(memo_key, raw, data, value)
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

    async def _padded_get_many(
        self, raws: list[bytes], default: Any, padding: TimingPadding
    ) -> list[Any]:
        """``get_many`` with the work of a hit for every key (a miss replays the reference
        entry), padded to ``len(raws)`` budgets of batch reads."""
        started = padding.timer()
        try:
            found = await self._stack.get_many(raws)
        except BackendError as exc:
            self._backend_failed(exc)
            found = [None] * len(raws)
        out: list[Any] = []
        hits = 0
        try:
            for raw, data in zip(raws, found, strict=True):
                ok, value = self._padded_open(raw, data)
                if value.__class__ is Pending:
                    ok, value = await self._tags.check(value)
                if ok:
                    out.append(value)
                    hits += 1
                    continue
                if data is not None:
                    await self._discard(raw, value)
                out.append(default)
        finally:  # counted once per batch; a strict-mode IntegrityError counts what was read
            self.stats.hits += hits
            self.stats.misses += len(out) - hits
        del found, data, value  # frames are freed before the deadline (see _padded_get)
        padding.wait(started, len(raws))
        return out

    async def exists(self, key: str) -> bool:
        """Whether a live entry is stored under ``key`` (as padded as a read on a padded
        namespace)."""
        return await self.ttl(key) is not None

    async def ttl(self, key: str) -> float | None:
        """Seconds left: ``None`` on a miss, ``math.inf`` for an entry that never expires."""
        raw = self._key(key)
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return None
        if self._padding is not None:
            return await self._padded_ttl(raw)
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
            ok, value = self._open_frame(raw, data)
            if value.__class__ is Pending:
                ok, value = await self._tags.check(value)
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

    async def _padded_ttl(self, raw: bytes) -> float | None:
        """``ttl`` as a padded read: the work of a ``get`` (the value is parsed and dropped)."""
        padding = self._padding
        assert padding is not None  # noqa: S101 - this method runs only when padding is on
        started, data, ok, value = await self._padded_read(raw, padding)
        left: float | None = None
        if ok:
            assert data is not None  # noqa: S101 - a hit has a frame
            expires_ms = _FRAME_HEAD.unpack_from(data)[0]
            left = math.inf if not expires_ms else max(expires_ms / 1000 - self._clock(), 1e-9)
        del data, value  # the frame and the parsed value are freed before the deadline
        padding.wait(started)
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

    async def _tag_refs(self, tags: object) -> bytes | None:
        """The packed references of an entry about to be written with ``tags`` (records created
        as needed); None when the write must be a no-op (the store failed, under fail_open)."""
        names = check_tags(tags)
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return None
        if not names:
            return b""
        try:
            return await self._tags.refs(names)
        except BackendError as exc:
            self._backend_failed(exc)
            return None

    async def invalidate_tags(self, tags: Sequence[str]) -> None:
        """Turn every entry of this namespace tagged with any of ``tags`` into a miss.

        One batch write of one record per tag, however many entries carry it; seen at once by
        every process using the store. A store failure raises even under ``fail_open``: an
        invalidation must never be skipped silently.
        """
        names = check_tags(tags)
        self._check_open()
        if self._prepare is not None:
            await self._run_prepare()
        if not names:
            return
        try:
            await self._tags.invalidate(names)
        except BackendError:
            self.stats.errors += 1
            raise

    async def _get_tagged(self, key: str, tags: tuple[str, ...], default: Any) -> Any:
        """``get`` of an entry that should carry ``tags`` (checked by the caller: the decorator),
        with their records read in the same batch as the entry (one round trip where the store
        batches). An untagged entry found there predates its tags: a miss."""
        if not tags or self._padding is not None:
            return await self.get(key, default)
        raw = self._key(key)
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return default
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

    # The decorator's seam: it serializes a result once, stores those bytes, and decodes from
    # them a copy of its own for every further caller that shares the computation.

    def _dumps(self, value: Any) -> bytes:
        return self._serializer.dumps(value)

    def _loads(self, payload: bytes) -> Any:
        return self._serializer.loads(payload)

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

    async def _set_frame(self, raw: bytes, data: bytes, seconds: float | None) -> None:
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return
        self._forget(raw)
        try:
            await self._stack.set(raw, data, ttl=seconds)
        except BackendError as exc:
            self._backend_failed(exc)
            return
        self.stats.sets += 1
        if self._padding is not None:
            self._keep_reference(raw, data)

    async def set_many(
        self, items: Mapping[str, Any], ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> None:
        """Store every ``key: value`` of ``items``; ``tags`` (as for :meth:`set`) tag each."""
        if not isinstance(items, Mapping):
            raise TypeError("set_many takes a mapping of str keys to values")
        seconds = self.policy.resolve_ttl(ttl)
        expires = frame.expiry_ms(None if seconds is None else self._clock() + seconds)
        dumps, embed = self._serializer.dumps, self._embed
        refs = b""
        if tags and items:
            for name in items:  # every key is checked before the records are read
                self._key(name)
            made = await self._tag_refs(tags)
            if made is None:
                return
            refs = made
        batch: list[tuple[bytes, bytes]] = []
        for key, value in items.items():
            raw = self._key(key)
            batch.append((raw, frame.pack(expires, raw if embed else b"", dumps(value), refs)))
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return
        if not batch:
            return
        for raw, _ in batch:
            self._forget(raw)
        try:
            await self._stack.set_many(batch, ttl=seconds)
        except BackendError as exc:
            self._backend_failed(exc)
            return
        self.stats.sets += len(batch)
        if self._padding is not None:
            self._keep_reference(*max(batch, key=lambda item: len(item[1])))

    async def delete(self, key: str) -> bool:
        raw = self._key(key)
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return False
        self._forget(raw)
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
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return 0
        count = 0
        for raw in raws:
            self._forget(raw)
            try:
                count += await self._stack.delete(raw)
            except BackendError as exc:
                self._backend_failed(exc)
        self.stats.deletes += count
        return count

    def forget_padding_sample(self) -> None:
        """Drop the reference entry kept for timing padding (after a clear or an erase)."""
        self._pad_ref = None
        self._pad_calibrated = 0
        for padding in (self._padding, self._padding_many):
            if padding is not None:
                padding.reset()
        if self._encryption is not None:
            self._encryption.forget_replay()

    async def clear(self) -> int:
        """Delete every entry of this namespace (and only this namespace)."""
        self.forget_padding_sample()
        if self._memo is not None:
            self._memo.discard_prefix(self._memo_prefix)
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return 0
        try:
            count = await self._stack.delete_prefix(b"")
        except BackendError as exc:
            self._backend_failed(exc)
            return 0
        self.stats.deletes += count
        return count

    # -- atomic updates (backends implementing AtomicBackend) -------------------------------------

    async def add(
        self, key: str, value: Any, ttl: Seconds | None = None, *, tags: Sequence[str] = ()
    ) -> bool:
        """Store ``value`` only if ``key`` has no live entry; returns whether it was stored.

        ``tags`` as for :meth:`set`; an entry a tag invalidated is not live.
        """
        raw = self._key(key)
        refs = await self._tag_refs(tags) if tags else b""
        if refs is None:
            return False
        data, seconds = self._frame(raw, value, ttl, refs)
        self._check_open()
        if self._prepare is not None and not await self._ready():
            return False
        self._forget(raw)
        try:
            for _ in range(_CAS_RETRIES):
                if await self._atomic.add(raw, data, ttl=seconds):
                    self.stats.sets += 1
                    return True
                found = await self._versioned(raw)
                if found is not None:
                    return False
                # Only a dead (expired or unreadable) entry stood in the way: replace it.
                current = await self._atomic.get_versioned(raw)
                if current is None:
                    continue
                if await self._atomic.compare_and_set(raw, current[1], data, ttl=seconds):
                    self.stats.sets += 1
                    return True
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        raise ContentionError("add() lost its race too many times")

    async def incr(self, key: str, delta: int = 1, ttl: Seconds | None = None) -> int:
        """Add ``delta`` to the integer under ``key`` (created at ``delta``); the new value.

        ``ttl`` applies when the counter is created; an existing counter keeps its expiry.
        Atomic on every backend with ``AtomicBackend`` support: a compare-and-set loop on the
        stored (possibly encrypted) entry, retried a bounded number of times.
        """
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError("incr delta must be an int")
        raw = self._key(key)
        self._check_open()
        if self._prepare is not None:
            await self._run_prepare()
        self._forget(raw)
        async with self._one_updater(raw):
            for attempt in range(_CAS_RETRIES):
                found = await self._versioned(raw)
                if found is None:
                    data, seconds = self._frame(raw, delta, ttl)
                    if await self._atomic.add(raw, data, ttl=seconds):
                        self.stats.sets += 1
                        return delta
                    continue
                (value, expires_ms, refs), token = found
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError("incr needs the stored value to be an int")
                new = value + delta
                data, seconds = self._refresh(raw, new, expires_ms, refs)
                if await self._atomic.compare_and_set(raw, token, data, ttl=seconds):
                    self.stats.sets += 1
                    return new
                await _backoff(attempt)
        raise ContentionError("incr() lost its race too many times")

    async def expire(self, key: str, ttl: Seconds | None) -> bool:
        """Give a live entry a new lifetime (``None``: the namespace default); False on a miss.

        On encrypted namespaces this re-seals the entry: the expiry is authenticated.
        """
        raw = self._key(key)
        seconds = self.policy.resolve_ttl(ttl)
        self._check_open()
        if self._prepare is not None:
            await self._run_prepare()
        self._forget(raw)
        try:
            async with self._one_updater(raw):
                for attempt in range(_CAS_RETRIES):
                    found = await self._versioned(raw)
                    if found is None:
                        return False
                    (value, _, refs), token = found
                    payload = self._serializer.dumps(value)
                    expires = frame.expiry_ms(None if seconds is None else self._clock() + seconds)
                    data = frame.pack(expires, raw if self._embed else b"", payload, refs)
                    if await self._atomic.compare_and_set(raw, token, data, ttl=seconds):
                        return True
                    await _backoff(attempt)
        except BackendError as exc:
            self._backend_failed(exc)
            return False
        raise ContentionError("expire() lost its race too many times")

    async def touch(self, key: str) -> bool:
        """Re-arm ``key`` with the namespace's default lifetime."""
        return await self.expire(key, None)

    @contextlib.asynccontextmanager
    async def _one_updater(self, raw: bytes) -> AsyncIterator[None]:
        """Queue this process's read-modify-write updates of one key behind each other.

        Compare-and-set keeps updates atomic across processes; inside one, callers that would
        only make each other retry wait their turn instead (20 tasks racing one counter could
        otherwise starve one of them past the retry bound).
        """
        entry = self._updating.get(raw)
        if entry is None:
            entry = self._updating[raw] = (anyio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._updating[raw]

    async def _versioned(self, raw: bytes) -> tuple[tuple[Any, int, bytes], bytes] | None:
        """``((value, expires_ms, tag refs), token)`` of a live entry, else None (dead ones
        discarded)."""
        found = await self._atomic.get_versioned(raw)
        if found is None:
            return None
        data, token = found
        ok, value = self._open_frame(raw, data)
        refs = b""
        if value.__class__ is Pending:
            refs = value.refs
            ok, value = await self._tags.check(value)
        if not ok:
            await self._discard(raw, value)
            return None
        return (value, frame.read_expiry(data), refs), token

    def _refresh(
        self, raw: bytes, value: Any, expires_ms: int, refs: bytes = b""
    ) -> tuple[bytes, float | None]:
        payload = self._serializer.dumps(value)
        seconds = None if not expires_ms else max(expires_ms / 1000 - self._clock(), 0.001)
        return frame.pack(expires_ms, raw if self._embed else b"", payload, refs), seconds

    # -- export and rotation ---------------------------------------------------------------------

    async def items(self) -> AsyncIterator[tuple[str, Any]]:
        """Every live ``(key, value)`` of this namespace, streamed from the store."""
        self._check_open()
        if self._prepare is not None:
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
        import json

        target = Path(path)
        count = 0
        # Written through mkstemp's own descriptor (O_EXCL, 0600) and never reopened by name, so
        # a symlink planted in its place is never followed; renamed only while the name is
        # still that file.
        fd, tmp = tempfile.mkstemp(prefix=".export-", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                out = anyio.wrap_file(handle)
                async for key, value in self.items():
                    line = json.dumps({"key": key, "value": export_form(value)}, ensure_ascii=False)
                    await out.write(line + "\n")
                    count += 1
                    if progress is not None:
                        progress(count)
                await out.flush()
                os.fchmod(fd, 0o600)
                await anyio.to_thread.run_sync(os.fsync, fd)
                written, named = os.fstat(fd), os.stat(tmp, follow_symlinks=False)
                if (written.st_dev, written.st_ino) != (named.st_dev, named.st_ino):
                    raise CacheError(
                        "export: the file being written was replaced; export into a directory "
                        "only this user can write"
                    )
            os.replace(tmp, target)
        except BaseException:
            await anyio.Path(tmp).unlink(missing_ok=True)
            raise
        return count

    async def rotate_keys(self, *, progress: Callable[[int], None] | None = None) -> int:
        """Re-encrypt every entry not sealed under the primary key; returns how many."""
        self._check_open()
        if self._prepare is not None:
            await self._run_prepare()
        if self._encryption is None:
            return 0
        return await self._encryption.rotate(self._prefix, progress=progress)
