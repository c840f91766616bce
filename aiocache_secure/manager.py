"""``CacheManager``: builds isolated namespaces on shared backends, and closes them together."""

from __future__ import annotations

import hmac
import logging
import math
import os
import secrets
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Self, cast

from . import audit, keyspace
from .backend import Backend
from .backends import backend_kind
from .breaker import Breaker, GuardedBackend
from .cache import Cache
from .clock import Clock, system_clock
from .errors import BackendError, ClosedError, ConfigurationError
from .facade import Lifecycle
from .keyring import KEY_SIZE, Keyring, hkdf
from .keys import KeyWrapper
from .layers import StackSpec, compose
from .layers.encryption import KeyringKeys, KeySource, StaticKey
from .layers.near import DEFAULT_NEAR_CACHE_BYTES
from .memo import DEFAULT_MEMO_BYTES, Memo
from .metrics import MeteredCache, MeteredPaddedCache, MetricsHook
from .padded import PaddedCache
from .policy import (
    DEFAULT_MAX_VALUE_BYTES,
    Policy,
    Seconds,
    check_ttl,
    validate_namespace_name,
)
from .registry import NamespaceRecord, Registry
from .serializers import get_serializer
from .stats import Stats, add_record, seal_record
from .stores import Stores, leaves_process
from .vault import DEFAULT_KEY_CHECK_INTERVAL, KeyLease, Vault

__all__ = ["CacheManager", "default_manager", "get_cache", "set_default_manager"]

_log: Final = logging.getLogger("aiocache_secure")
# Without a keyring, storage keys of an *unencrypted* shared namespace can only be pseudonyms
# under a public key: stable across processes, but open to dictionary attacks. The namespace
# already raised an ``insecure_config`` event for ``encrypt=False``.
_PUBLIC_INDEX_KEY: Final = b"aiocache_secure public index key"
DEFAULT_MAX_PRIVATE_NAMESPACES: Final = 10_000


class CacheManager:
    """Creates namespaces (:meth:`namespace`) and owns the backends they use.

    ``keyring``: the master keys (required for encrypted namespaces on stores that leave the
    process). ``default_backend``: the URL used when a namespace names none. ``strict``: insecure
    transport and tampered entries raise instead of warning / missing. ``key_vault``: where private
    namespaces' wrapped data keys live (default: beside the data in each namespace's backend).
    ``key_wrapper``: a KMS (:class:`~aiocache_secure.keys.KmsKeyWrapper`) that wraps private
    namespaces' data keys instead of the keyring, so the master key need not be in the process.
    ``memo_bytes``: the budget of the verified-read memo shared by this manager's namespaces
    (recent storage keys and opened entries; see :mod:`aiocache_secure.memo`); 0 turns it off.
    ``near_cache_bytes``: the budget (default 32 MiB per Redis store) of the near cache of
    namespaces opened with ``near_cache=True`` (see :mod:`aiocache_secure.layers.near`).
    ``index_key``: 32 secret bytes, the same in every process, that key the hashing of storage
    keys and namespace tags when there is no keyring (a KMS-only manager); with a keyring, pin it
    in the keyring instead (``Keyring(keys, index_key=...)``).
    ``key_check_interval``: how long (seconds, default 1.0) a loaded private data key is trusted
    before it is checked against its vault record again; an ``erase()`` by another process
    reaches this one within that bound.
    ``max_private_namespaces``: how many private namespaces the manager keeps open (default
    10,000); beyond that the least recently requested are released (a released namespace still
    held by the application keeps working, and is found again by :meth:`namespace`).
    ``breaker``: the circuit breaker of every store but ``memory://``, one per store and shared by
    its namespaces (see :mod:`aiocache_secure.breaker`); ``None`` turns breakers off.
    """

    def __init__(
        self,
        keyring: Keyring | None = None,
        *,
        default_backend: str | Backend = "memory://",
        strict: bool = False,
        clock: Clock = system_clock,
        key_vault: str | Backend | None = None,
        key_wrapper: KeyWrapper | None = None,
        memo_bytes: int = DEFAULT_MEMO_BYTES,
        index_key: bytes | None = None,
        key_check_interval: float = DEFAULT_KEY_CHECK_INTERVAL,
        max_private_namespaces: int = DEFAULT_MAX_PRIVATE_NAMESPACES,
        breaker: Breaker | None = Breaker(),  # noqa: B008 - frozen, shared safely
        near_cache_bytes: int = DEFAULT_NEAR_CACHE_BYTES,
    ) -> None:
        memo = Memo(memo_bytes)
        if isinstance(near_cache_bytes, bool) or not isinstance(near_cache_bytes, int):
            raise TypeError("near_cache_bytes must be an int")
        if near_cache_bytes < 1:
            raise ConfigurationError("near_cache_bytes must be positive")
        if breaker is not None and not isinstance(breaker, Breaker):
            raise TypeError("breaker must be a Breaker or None")
        if index_key is not None:
            if not isinstance(index_key, bytes):
                raise TypeError("index_key must be bytes")
            if len(index_key) != KEY_SIZE:
                raise ConfigurationError(f"index_key must be exactly {KEY_SIZE} bytes")
            if keyring is not None:
                raise ConfigurationError(
                    "with a keyring, pin the index key in it: Keyring(keys, index_key=...)"
                )
        if isinstance(key_check_interval, bool) or not isinstance(key_check_interval, int | float):
            raise TypeError("key_check_interval must be a number of seconds")
        if not (0 < key_check_interval < math.inf):
            raise ConfigurationError("key_check_interval must be a positive, finite duration")
        if isinstance(max_private_namespaces, bool) or not isinstance(max_private_namespaces, int):
            raise TypeError("max_private_namespaces must be an int")
        if max_private_namespaces < 1:
            raise ConfigurationError("max_private_namespaces must be at least 1")
        if keyring is not None and not isinstance(keyring, Keyring):
            raise TypeError("keyring must be a Keyring")
        if not isinstance(strict, bool):
            raise TypeError("strict must be True or False")
        if isinstance(default_backend, str):
            backend_kind(default_backend)
        elif not isinstance(default_backend, Backend):
            raise TypeError("default_backend must be a URL or a Backend")
        if key_wrapper is not None and not isinstance(key_wrapper, KeyWrapper):
            raise TypeError("key_wrapper must implement KeyWrapper (wrap/unwrap)")
        self._key_wrapper = key_wrapper
        self._memo = memo if memo_bytes else None
        self._keyring = keyring
        self._ephemeral: Keyring | None = None
        self._default_backend = default_backend
        self._strict = strict
        self._clock = clock
        self._lifecycle = Lifecycle()
        self._stores = Stores(
            breaker=breaker, clock=clock, strict=strict, near_cache_bytes=near_cache_bytes
        )
        self._index_secret = index_key
        self._key_check_interval = float(key_check_interval)
        self._registry = Registry(self._stores, max_private_namespaces)
        self._vault_store: Backend | None = None
        self._vault_leaves = False
        self._publisher = secrets.token_hex(8).encode("ascii")
        if key_vault is not None:
            self._vault_store = self._stores.open_shared(key_vault)
            self._vault_leaves = leaves_process(key_vault)

    def __repr__(self) -> str:
        return (
            f"CacheManager(namespaces={len(self._registry)}, "
            f"keyring={'yes' if self._keyring else 'no'}, closed={self.closed})"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the manager (and so every namespace it made) is closed."""
        return self._lifecycle.closed

    async def __aenter__(self) -> Self:
        self._check_open()
        if self._key_wrapper is not None and self._keyring is None and self._index_secret is None:
            try:
                await self._load_index_key()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def _load_index_key(self) -> None:
        """A KMS-only manager's index key: KMS-wrapped in the key vault (or the default backend),
        created there by the first process, so storage keys are hashed under a secret."""
        home, leaves = self._vault_store, self._vault_leaves
        if home is None:
            home, leaves = self._stores.resolve(self._default_backend, Policy(), Stats())
        if leaves:
            vault = Vault(home, self._current_keyring, self._key_wrapper)
            self._index_secret = await vault.index_key()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every backend this manager opened; namespaces then raise ``ClosedError``."""
        if self._lifecycle.closed:
            return
        self._lifecycle.closed = True
        vault = () if self._vault_store is None else (self._vault_store,)
        failures = await self._stores.aclose(*vault)
        if self._memo is not None:
            self._memo.clear()
        if failures:
            raise BackendError(f"{failures} backend(s) failed to close cleanly")

    def _check_open(self) -> None:
        if self._lifecycle.closed:
            raise ClosedError("the cache manager is closed")

    # -- keys -----------------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring | None:
        """The keyring in use (``None`` for a manager without one)."""
        return self._keyring

    @property
    def memo(self) -> Memo | None:
        """The verified-read memo shared by this manager's namespaces (``None`` when off)."""
        return self._memo

    def _current_keyring(self) -> Keyring:
        if self._keyring is not None:
            return self._keyring
        if self._ephemeral is None:
            self._ephemeral = Keyring.generate()
        return self._ephemeral

    def _secret_index(self, leaves_process: bool) -> bool:
        """Whether storage keys hashed here are keyed with a secret (else: public pseudonyms)."""
        return self._keyring is not None or self._index_secret is not None or not leaves_process

    def _index_key(self, info: bytes, *, leaves_process: bool) -> bytes:
        if self._keyring is not None:
            return self._keyring.derive_index(info)
        if self._index_secret is not None:
            return hkdf(self._index_secret, info)
        if not leaves_process:
            return self._current_keyring().derive_index(info)
        return hkdf(_PUBLIC_INDEX_KEY, info)

    def _tag(self, name: str, *, leaves_process: bool) -> bytes:
        return keyspace.namespace_tag(
            self._index_key(b"acs1/namespace-tag", leaves_process=leaves_process), name
        )

    # -- namespaces -----------------------------------------------------------------------------

    def backend_of(self, name: str) -> Backend:
        """The raw store under namespace ``name`` (for operations tooling and tests)."""
        record = self._registry.find(name)
        if record is None:
            raise KeyError("no namespace of that name in this manager")
        return record.store

    @property
    def namespaces(self) -> Mapping[str, Cache]:
        """The namespaces open in this manager, by name (a snapshot)."""
        return {record.cache.name: record.cache for record in self._registry.records()}

    def namespace(
        self,
        name: str,
        backend: str | Backend | None = None,
        *,
        ttl: Seconds | None = None,
        max_ttl: Seconds | None = None,
        ttl_jitter: float = 0.0,
        encrypt: bool | None = None,
        hash_keys: bool = True,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        pad_timing: bool = False,
        fail_open: bool = False,
        private: bool = False,
        serializer: str = "json",
        strict: bool | None = None,
        metrics: MetricsHook | None = None,
        memo: bool = True,
        near_cache: bool = False,
    ) -> Cache:
        """The namespace ``name``, created on first call (same arguments: the same object).

        ``near_cache=True`` (Redis standalone and Cluster): hot entries are served from process
        memory with no round trip, and dropped as soon as Redis reports a change by any client;
        see docs/backends/redis.md. Not with ``pad_timing``; ``ConfigurationError`` on stores
        without an invalidation channel (memory, file, MongoDB; Sentinel for now).
        """
        self._check_open()
        name = validate_namespace_name(name)
        chosen = self._default_backend if backend is None else backend
        if encrypt is not None and not isinstance(encrypt, bool):
            raise TypeError("encrypt must be True, False or None")
        if private and encrypt is False:
            raise ConfigurationError("private namespaces are always encrypted")
        leaves = leaves_process(chosen)
        policy = Policy(
            ttl=None if ttl is None else check_ttl(ttl),
            max_ttl=None if max_ttl is None else check_ttl(max_ttl, "max_ttl"),
            ttl_jitter=ttl_jitter,
            encrypt=private or (leaves if encrypt is None else encrypt),
            hash_keys=hash_keys,
            max_value_bytes=max_value_bytes,
            max_entries=max_entries,
            max_bytes=max_bytes,
            pad_timing=pad_timing,
            fail_open=fail_open,
            private=private,
            serializer=serializer,
            strict=self._strict if strict is None else strict,
            memo=memo,
            near_cache=near_cache,
        )
        config = (chosen if isinstance(chosen, str) else id(chosen), policy)
        existing = self._registry.find(name)
        if existing is not None:
            if existing.config != config:
                raise ConfigurationError(
                    "a namespace of that name already exists with a different configuration"
                )
            if existing.lease is not None:
                self._registry.open(name, existing)
            return existing.cache
        if metrics is not None and not isinstance(metrics, MetricsHook):
            raise TypeError("metrics must implement MetricsHook (a record() method)")

        stats = Stats()
        serializer_impl = get_serializer(serializer)
        store, _ = self._stores.resolve(chosen, policy, stats)
        if isinstance(store, GuardedBackend):
            stats.breaker = store.circuit.state
            store.circuit.watch(_breaker_watcher(name, stats, metrics))
        encrypted = policy.encrypt
        needs_keyring = not (private and self._key_wrapper is not None)
        if encrypted and leaves and self._keyring is None and needs_keyring:
            raise ConfigurationError(
                "this backend stores data outside the process: pass keyring= to the manager "
                "(Keyring.generate(), Keyring.from_env()), or encrypt=False explicitly"
            )
        if private and not self._secret_index(leaves):
            # A KMS-only manager: without a secret, storage keys and namespace tags would be
            # pseudonyms under a public key, which anyone who reads the store can confirm.
            raise ConfigurationError(
                "private namespaces on a store that leaves the process need a secret index key: "
                "enter the manager first (async with CacheManager(...)), which keeps one wrapped "
                "by the KMS in the key vault or default backend, or pass index_key= (32 random "
                "bytes, the same in every process) or keyring="
            )
        if leaves and not encrypted:
            if serializer == "pickle":
                raise ConfigurationError(
                    "pickle on a store shared beyond this process needs encryption, so entries "
                    "are authenticated before they are unpickled"
                )
            audit.emit("insecure_config", namespace=name, reason="encrypt_false_on_shared_store")

        tag = self._tag(name, leaves_process=leaves)
        stats_key = (
            self._index_key(b"acs1/stats/" + name.encode("utf-8"), leaves_process=leaves)
            if self._secret_index(leaves)
            else None
        )
        data_key: StaticKey | None = None
        keys: KeySource | None = None
        if private:
            data_key = StaticKey()
            keys = data_key
        elif encrypted:
            keys = KeyringKeys(self._current_keyring, name)
        spec = StackSpec(
            namespace=name,
            namespace_id=tag,
            tag=tag,
            prf_key=self._index_key(
                b"acs1/key-hash/" + name.encode("utf-8"), leaves_process=leaves
            ),
            keys=keys,
            clock=self._clock,
            on_tamper=lambda: setattr(stats, "tampered", stats.tampered + 1),
            memo=self._memo,
            near=self._stores.near_of(store) if near_cache else None,
            on_near_hit=lambda count: setattr(stats, "near_hits", stats.near_hits + count),
        )
        stack = compose(store, policy, spec)
        cache = _FACADES[metrics is not None, policy.pad_timing](
            name,
            stack,
            policy=policy,
            serializer=serializer_impl,
            clock=self._clock,
            lifecycle=self._lifecycle,
            stats=stats,
        )
        if metrics is not None:
            cast(MeteredCache, cache).set_metrics(metrics)
        lease: KeyLease | None = None
        vault: Vault | None = None
        if data_key is not None:
            vault = Vault(self._vault_store or store, self._current_keyring, self._key_wrapper)
            lease = KeyLease(
                vault,
                name,
                tag,
                data_key,
                clock=self._clock,
                interval=self._key_check_interval,
                on_change=self._key_replaced(cache, tag),
            )
        owns_store = self._stores.owned.get(id(store)) is store
        record = NamespaceRecord(cache, store, vault, tag, lease, config, stats_key, owns_store)
        if lease is not None:
            cache.set_prepare(record.renew_key, fresh=lease.fresh)
        self._registry.open(name, record)
        return cache

    def _key_replaced(self, cache: Cache, tag: bytes) -> Callable[[], None]:
        """What to drop when a private namespace's data key is forgotten or replaced."""
        memo = self._memo

        def drop() -> None:
            if memo is not None:
                memo.discard_prefix(keyspace.namespace_prefix(tag))
            cache.forget_padding_sample()

        return drop

    # -- erasure and rotation -------------------------------------------------------------------

    async def erase(self, name: str, *, backend: str | Backend | None = None) -> bool:
        """Crypto-shred namespace ``name``: destroy its data key, then delete its entries.

        Returns False when there was nothing to erase (not an error).
        """
        self._check_open()
        name = validate_namespace_name(name)
        record = self._registry.find(name)
        if record is not None:
            store, tag, vault = record.store, record.tag, record.vault
            if record.lease is not None:
                record.lease.revoke()
        else:
            chosen = self._default_backend if backend is None else backend
            if isinstance(chosen, str) and backend_kind(chosen).scheme == "memory":
                return False
            store, leaves = self._stores.resolve(chosen, Policy(), Stats())
            self._stores.forget(store)  # opened for this call only; holds no descriptors
            tag = self._tag(name, leaves_process=leaves)
            vault = Vault(self._vault_store or store, self._current_keyring, self._key_wrapper)
        if self._memo is not None:
            self._memo.discard_prefix(keyspace.namespace_prefix(tag))
        near = self._stores.near.get(id(store))
        if near is not None:
            near.drop_prefix(keyspace.namespace_prefix(tag))
        destroyed = await vault.destroy(tag) if vault is not None else False
        if record is not None and record.lease is not None:
            # Loads that began before the record was gone must not install its key.
            record.lease.revoke()
        removed = await store.delete_prefix(keyspace.hashed_prefix(tag))
        removed += await store.delete_prefix(keyspace.prefixed_prefix(tag))
        await store.delete_prefix(keyspace.stats_prefix(tag))
        if record is not None:
            record.cache.forget_padding_sample()
            if record.lease is not None:
                self._registry.release(name)
        if destroyed or removed:
            audit.emit(
                "namespace_erased",
                level=logging.INFO,
                namespace=name,
                entries=removed,
                key_destroyed=destroyed,
            )
            return True
        return False

    async def publish_stats(self, *, ttl: float = 300.0) -> int:
        """Write every namespace's counters to its store, for ``aiocache-secure stats``.

        One record per namespace and manager (``acs1<tag>!stats:<random manager id>``, counts
        only, expiring after ``ttl`` seconds so stopped processes drop out); call it periodically
        from a running application. Returns how many records were written.

        Records are authenticated (HMAC-SHA256 under a sub-key of the index key, bound to the
        record's storage key, with the expiry inside), so a forged, moved or replayed record is
        ignored by :meth:`read_stats`. Namespaces whose keys are hashed under no secret (a shared
        store and neither a keyring nor ``index_key``) publish nothing.
        """
        self._check_open()
        ttl = check_ttl(ttl)
        written = 0
        now = self._clock()
        for record in self._registry.records():
            if record.stats_key is None:
                continue
            record_key = keyspace.stats_prefix(record.tag) + self._publisher
            sealed = seal_record(record.stats_key, record_key, record.cache.stats, now, ttl)
            await record.store.set(record_key, sealed, ttl=ttl)
            written += 1
        return written

    async def read_stats(self, name: str) -> dict[str, int]:
        """The counters of namespace ``name`` summed over every process that published them."""
        self._check_open()
        record = self._registry.find(name)
        if record is None:
            raise KeyError("no namespace of that name in this manager")
        totals: dict[str, int] = {}
        if record.stats_key is None:
            return totals
        now = self._clock()
        rejected = 0
        async for record_key, raw in record.store.scan(keyspace.stats_prefix(record.tag)):
            if not add_record(totals, record.stats_key, record_key, raw, now):
                rejected += 1
        if rejected:
            record.cache.stats.tampered += rejected
            audit.emit("tamper_detected", namespace=name, reason="stats_record", count=rejected)
        return totals

    async def rewrap(self, keyring: Keyring | None = None) -> int:
        """Adopt ``keyring`` (if given), then re-wrap every private namespace's data key under
        its primary key. Entries are not touched. Returns how many data keys were re-wrapped."""
        self._check_open()
        if keyring is not None:
            if not isinstance(keyring, Keyring):
                raise TypeError("keyring must be a Keyring")
            probe = b"acs1/index-check"
            pinned = self._keyring is not None or self._index_secret is not None
            if pinned and not hmac.compare_digest(
                keyring.derive_index(probe), self._index_key(probe, leaves_process=True)
            ):
                raise ConfigurationError(
                    "the new keyring has a different index key, which would move every storage "
                    "key; build it with Keyring.rotate() or pass index_key="
                )
            self._keyring = keyring
            self._index_secret = None  # the adopted keyring carries the same index key
        count = 0
        for record in self._registry.records():
            if record.vault is not None and await record.vault.rewrap(
                record.cache.name, record.tag
            ):
                count += 1
        return count


# The facade's class by (metered, padded): the unpadded, unmetered hot path asks about neither.
_FACADES: Final[dict[tuple[bool, bool], type[Cache]]] = {
    (False, False): Cache,
    (False, True): PaddedCache,
    (True, False): MeteredCache,
    (True, True): MeteredPaddedCache,
}


def _breaker_watcher(name: str, stats: Stats, metrics: MetricsHook | None) -> Callable[[str], None]:
    def changed(state: str) -> None:
        stats.breaker = state
        if metrics is not None:
            metrics.record("breaker", name, state, 0.0)

    return changed


_default: CacheManager | None = None


def default_manager() -> CacheManager:
    """The module-level manager behind :func:`get_cache` and ``@cached`` without ``manager=``.

    Created on first use with the keyring in ``AIOCACHE_SECURE_KEYS`` when that is set.
    """
    global _default
    if _default is None or _default.closed:
        keyring = Keyring.from_env() if os.environ.get("AIOCACHE_SECURE_KEYS") else None
        _default = CacheManager(keyring=keyring)
    return _default


def set_default_manager(manager: CacheManager | None) -> None:
    """Make ``manager`` the module-level default (used by :func:`get_cache` and ``@cached``);
    ``None`` goes back to a lazily created in-memory manager."""
    global _default
    _default = manager


def get_cache(name: str, backend: str | Backend | None = None, **policy: Any) -> Cache:
    """Namespace ``name`` of the default manager."""
    return default_manager().namespace(name, backend, **policy)
