"""The facade's core: what every operation of one namespace shares.

:class:`CacheCore` holds the namespace's composed stack (:class:`~aiocache_secure.layers.Stack`),
policy, serializer, clock and statistics, and does the steps every public operation repeats: key
checks, entry frames (:mod:`aiocache_secure.frame`) on write and their checks on read, the one
open/prepare check (:meth:`CacheCore._pending`, then a private namespace's key load or lease
check), and backend failures (counted, audited at most once per burst, raised unless the
namespace fails open). :class:`~aiocache_secure.atomic.AtomicUpdates` and
:class:`~aiocache_secure.cache.Cache` build the operations on it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, NoReturn, cast

import anyio

from . import audit, frame
from .backend import AtomicBackend, Backend
from .backends.memory import MemoryBackend
from .clock import Clock
from .errors import BackendError, ClosedError, IntegrityError, SerializationError
from .layers import Stack
from .layers.verified import VerifiedReads
from .policy import Policy
from .serializers import Serializer
from .stats import Stats
from .tags import UNREAD, Pending, TagIndex, check_tags

__all__ = ["CacheCore", "Lifecycle"]

_BURST_SECONDS: Final = 10.0


class Lifecycle:
    """Shared open/closed flag: a manager and all its namespaces close together."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False


class CacheCore:
    """What every operation of a namespace needs: its stack, policy, preparation, key checks,
    entry frames and failure handling. :class:`~aiocache_secure.cache.Cache` builds on it."""

    __slots__ = (
        "_clock",
        "_embed",
        "_encryption",
        "_fail_open",
        "_last_error_log",
        "_lifecycle",
        "_atomic",
        "_storage_key",
        "_prefix",
        "_prepare",
        "_prepare_fresh",
        "_prepare_lock",
        "_updating",
        "_verified",
        "_serializer",
        "_stack",
        "_strict",
        "_tags",
        "name",
        "policy",
        "stats",
    )

    def __init__(
        self,
        name: str,
        stack: Stack,
        *,
        policy: Policy,
        serializer: Serializer,
        clock: Clock,
        lifecycle: Lifecycle,
        stats: Stats,
    ) -> None:
        self.name = name
        self.policy = policy
        self.stats = stats
        self._stack: Backend = stack.top
        # The top of a composed stack is always a Layer, which forwards atomic updates (and
        # raises UnsupportedOperation at call time when the store underneath lacks them).
        self._atomic = cast(AtomicBackend, stack.top)
        self._serializer = serializer
        self._clock = clock
        self._lifecycle = lifecycle
        encryption = self._encryption = stack.encryption
        self._prefix = stack.key_layer.prefix
        self._storage_key: Callable[[bytes], bytes] | None = stack.key_layer.storage_key
        # Reads of a namespace whose verified reads are memoized go through their owner.
        self._verified: VerifiedReads | None = stack.verified
        self._embed = policy.hash_keys and encryption is not None
        self._strict = policy.strict
        self._fail_open = policy.fail_open
        self._last_error_log = -math.inf
        self._prepare: Callable[[], Awaitable[None]] | None = None
        self._prepare_fresh: Callable[[], bool] | None = None
        self._prepare_lock = anyio.Lock()
        self._updating: dict[bytes, tuple[anyio.Lock, list[int]]] = {}
        self._tags = TagIndex(
            stack.top,
            storage_key=stack.key_layer.storage_key,
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

    def _pending(self) -> bool:
        """Raise ``ClosedError`` once the manager is closed; else whether a preparation (a
        private namespace's key load or lease check) must run before the operation: callers
        then await :meth:`_ready` (a miss or no-op when it fails open) or :meth:`_run_prepare`."""
        if self._lifecycle.closed:
            raise ClosedError("the cache manager is closed")
        return self._prepare is not None

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
        :meth:`_checked` says so.

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

    async def _checked(self, ok: bool, value: Any) -> tuple[bool, Any]:
        """What :meth:`_open_frame` returned, with a tagged entry's tag check done: every read
        path passes its outcome through here (or :meth:`TagIndex.check_all`) before a hit."""
        if value.__class__ is Pending:
            return await self._tags.check(value)
        return ok, value

    async def _tag_refs(self, tags: object) -> bytes | None:
        """The packed references of an entry about to be written with ``tags`` (records created
        as needed); None when the write must be a no-op (the store failed, under fail_open)."""
        names = check_tags(tags)
        if self._pending() and not await self._ready():
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
        if self._pending():
            await self._run_prepare()
        if not names:
            return
        try:
            await self._tags.invalidate(names)
        except BackendError:
            self.stats.errors += 1
            raise

    async def _read_frames(self, raws: list[bytes]) -> list[bytes | None]:
        """The stack's frames for a batch of keys; all misses when the store failed and the
        namespace fails open."""
        try:
            return await self._stack.get_many(raws)
        except BackendError as exc:
            self._backend_failed(exc)
            return [None] * len(raws)

    async def _discard(self, key: bytes, reason: object) -> None:
        if reason is UNREAD:  # its tags could not be checked (fail_open): a miss, not a dead entry
            return
        try:
            await self._stack.delete(key)
        except BackendError as exc:
            self._backend_failed(exc)
        if reason == "bad":
            self._bad_entry()

    def _keys(self, keys: Iterable[str]) -> list[bytes]:
        keys = keys if isinstance(keys, list | tuple) else list(keys)
        try:  # str.encode rejects non-str keys, as _key does, at a fraction of the cost
            raws = [str.encode(k) for k in keys]
        except (TypeError, UnicodeEncodeError):
            raws = []
        if not raws or max(map(len, raws)) > frame.MAX_KEY_BYTES:
            raws = [self._key(k) for k in keys]  # raises the precise error, if any
        return raws

    # The decorator's seam: it serializes a result once, stores those bytes, and decodes from
    # them a copy of its own for every further caller that shares the computation.

    def _dumps(self, value: Any) -> bytes:
        return self._serializer.dumps(value)

    def _loads(self, payload: bytes) -> Any:
        return self._serializer.loads(payload)

    def forget_padding_sample(self) -> None:
        """Drop what timing padding learnt from this namespace's entries (after a clear or an
        erase); nothing to drop here (see :class:`~aiocache_secure.padded.PaddedCache`)."""
