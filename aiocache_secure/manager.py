"""``CacheManager``: builds isolated namespaces on shared backends, and closes them together."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, cast

import anyio

from . import audit
from .backend import Backend
from .backends import MemoryBackend, backend_kind, open_backend
from .breaker import Breaker, GuardedBackend, guard
from .cache import Cache, Lifecycle
from .clock import Clock, system_clock
from .errors import BackendError, ClosedError, ConfigurationError
from .keyring import Keyring, hkdf
from .keys import KeyWrapper
from .layers import StackSpec, compose
from .layers.encryption import KeyringKeys, KeySource, StaticKey
from .layers.keys import KEY_FORMAT, namespace_tag
from .memo import DEFAULT_MEMO_BYTES, Memo
from .metrics import MeteredCache, MetricsHook
from .policy import DEFAULT_MAX_VALUE_BYTES, Policy, check_ttl, validate_namespace_name
from .serializers import get_serializer
from .stats import Stats
from .vault import Vault

__all__ = ["CacheManager", "default_manager", "get_cache", "set_default_manager"]

_log: Final = logging.getLogger("aiocache_secure")
# Without a keyring, storage keys of an *unencrypted* shared namespace can only be pseudonyms
# under a public key: stable across processes, but open to dictionary attacks. The namespace
# already raised an ``insecure_config`` event for ``encrypt=False``.
_PUBLIC_INDEX_KEY: Final = b"aiocache_secure public index key"


@dataclass(slots=True)
class _Namespace:
    cache: Cache
    store: Backend
    vault: Vault | None
    tag: bytes
    data_key: StaticKey | None
    config: tuple[object, ...]


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
        breaker: Breaker | None = Breaker(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        memo = Memo(memo_bytes)
        if breaker is not None and not isinstance(breaker, Breaker):
            raise TypeError("breaker must be a Breaker or None")
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
        self._shared: dict[str, Backend] = {}
        self._owned: list[Backend] = []
        self._namespaces: dict[str, _Namespace] = {}
        self._breaker = breaker
        self._guards: dict[int, GuardedBackend] = {}
        self._vault_store: Backend | None = None
        self._publisher = secrets.token_hex(8).encode("ascii")
        if key_vault is not None:
            self._vault_store = self._open_shared(key_vault)

    def __repr__(self) -> str:
        return (
            f"CacheManager(namespaces={len(self._namespaces)}, "
            f"keyring={'yes' if self._keyring else 'no'}, closed={self.closed})"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._lifecycle.closed

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

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
        backends = [*self._owned, *self._shared.values()]
        if self._vault_store is not None:
            backends.append(self._vault_store)
        failures = 0
        for backend in backends:
            try:
                with anyio.CancelScope(shield=True):
                    await backend.aclose()
            except BackendError:
                failures += 1
        self._owned.clear()
        self._shared.clear()
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

    def _index_key(self, info: bytes, *, leaves_process: bool) -> bytes:
        if self._keyring is not None or not leaves_process:
            return self._current_keyring().derive_index(info)
        return hkdf(_PUBLIC_INDEX_KEY, info)

    def _tag(self, name: str, *, leaves_process: bool) -> bytes:
        return namespace_tag(
            self._index_key(b"acs1/namespace-tag", leaves_process=leaves_process), name
        )

    # -- backends -------------------------------------------------------------------------------

    def _guarded(self, store: Backend) -> Backend:
        """``store`` behind its circuit breaker: one per store, shared by its namespaces."""
        if self._breaker is None or isinstance(store, MemoryBackend | GuardedBackend):
            return store
        guarded = self._guards.get(id(store))
        if guarded is None:
            kind = str(getattr(store, "kind", type(store).__name__))
            # An injected manager clock drives the breaker too; the system's wall clock does not
            # (it may jump), time.monotonic does.
            clock = time.monotonic if self._clock is system_clock else self._clock
            guarded = self._guards[id(store)] = guard(store, self._breaker, kind=kind, clock=clock)
        return guarded

    def _open_shared(self, backend: str | Backend) -> Backend:
        if not isinstance(backend, str):
            if not isinstance(backend, Backend):
                raise TypeError("a backend is a URL string or a Backend instance")
            return self._guarded(backend)
        opened = self._shared.get(backend)
        if opened is None:
            opened = open_backend(backend, clock=self._clock, strict=self._strict)
            self._shared[backend] = opened
        return self._guarded(opened)

    def _resolve_backend(
        self, backend: str | Backend, policy: Policy, stats: Stats
    ) -> tuple[Backend, bool]:
        """``(store, leaves_process)`` for a namespace."""
        quotas = policy.max_entries is not None or policy.max_bytes is not None
        if not isinstance(backend, str):
            if not isinstance(backend, Backend):
                raise TypeError("a backend is a URL string or a Backend instance")
            if quotas:
                raise ConfigurationError(
                    "max_entries/max_bytes apply to backends the manager opens from a URL; "
                    "configure a Backend instance's own limits instead"
                )
            return self._guarded(backend), type(backend) is not MemoryBackend
        kind = backend_kind(backend)
        if not kind.per_namespace:
            if quotas:
                raise ConfigurationError(
                    f"max_entries/max_bytes are enforced by memory and file backends only; "
                    f"bound a {kind.scheme}:// store with its own memory policy"
                )
            return self._open_shared(backend), kind.leaves_process

        def on_evict(count: int) -> None:
            stats.evictions += count

        store = open_backend(
            backend,
            clock=self._clock,
            strict=self._strict,
            max_entries=policy.max_entries,
            max_bytes=policy.max_bytes,
            on_evict=on_evict,
        )
        self._owned.append(store)
        return self._guarded(store), kind.leaves_process

    # -- namespaces -----------------------------------------------------------------------------

    def backend_of(self, name: str) -> Backend:
        """The raw store under namespace ``name`` (for operations tooling and tests)."""
        record = self._namespaces.get(name)
        if record is None:
            raise KeyError("no namespace of that name in this manager")
        return record.store

    @property
    def namespaces(self) -> Mapping[str, Cache]:
        return {name: ns.cache for name, ns in self._namespaces.items()}

    def namespace(
        self,
        name: str,
        backend: str | Backend | None = None,
        *,
        ttl: float | None = None,
        max_ttl: float | None = None,
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
    ) -> Cache:
        """The namespace ``name``, created on first call (same arguments: the same object)."""
        self._check_open()
        name = validate_namespace_name(name)
        chosen = self._default_backend if backend is None else backend
        config = (
            chosen if isinstance(chosen, str) else id(chosen),
            ttl,
            max_ttl,
            ttl_jitter,
            encrypt,
            hash_keys,
            max_value_bytes,
            max_entries,
            max_bytes,
            pad_timing,
            fail_open,
            private,
            serializer,
            strict,
            memo,
        )
        existing = self._namespaces.get(name)
        if existing is not None:
            if existing.config != config:
                raise ConfigurationError(
                    "a namespace of that name already exists with a different configuration"
                )
            return existing.cache
        if metrics is not None and not isinstance(metrics, MetricsHook):
            raise TypeError("metrics must implement MetricsHook (a record() method)")
        if encrypt is not None and not isinstance(encrypt, bool):
            raise TypeError("encrypt must be True, False or None")
        if not isinstance(memo, bool):
            raise TypeError("memo must be True or False")
        if private and encrypt is False:
            raise ConfigurationError("private namespaces are always encrypted")

        stats = Stats()
        probe = Policy(
            ttl=ttl,
            max_ttl=max_ttl,
            ttl_jitter=ttl_jitter,
            hash_keys=hash_keys,
            max_value_bytes=max_value_bytes,
            max_entries=max_entries,
            max_bytes=max_bytes,
            pad_timing=pad_timing,
            fail_open=fail_open,
            private=private,
            serializer=serializer,
            strict=self._strict if strict is None else strict,
        )
        serializer_impl = get_serializer(serializer)
        store, leaves = self._resolve_backend(chosen, probe, stats)
        if isinstance(store, GuardedBackend):
            stats.breaker = store.circuit.state
            store.circuit.watch(_breaker_watcher(name, stats, metrics))
        encrypted = private or (leaves if encrypt is None else encrypt)
        needs_keyring = not (private and self._key_wrapper is not None)
        if encrypted and leaves and self._keyring is None and needs_keyring:
            raise ConfigurationError(
                "this backend stores data outside the process: pass keyring= to the manager "
                "(Keyring.generate(), Keyring.from_env()), or encrypt=False explicitly"
            )
        if leaves and not encrypted:
            if serializer == "pickle":
                raise ConfigurationError(
                    "pickle on a store shared beyond this process needs encryption, so entries "
                    "are authenticated before they are unpickled"
                )
            audit.emit("insecure_config", namespace=name, reason="encrypt_false_on_shared_store")
        policy = Policy(**{**_policy_fields(probe), "encrypt": encrypted})

        tag = self._tag(name, leaves_process=leaves)
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
            on_limit=lambda: None,
            memo=self._memo if memo else None,
        )
        stack = compose(store, policy, spec)
        cache = (Cache if metrics is None else MeteredCache)(
            name,
            stack.top,
            policy=policy,
            serializer=serializer_impl,
            clock=self._clock,
            lifecycle=self._lifecycle,
            stats=stats,
            encryption=stack.encryption,
            key_prefix=stack.key_layer.prefix,
            storage_key=stack.key_layer.storage_key,
            memo=stack.memo,
            memo_prefix=stack.memo_prefix,
        )
        if metrics is not None:
            cast(MeteredCache, cache).set_metrics(metrics)
        vault = (
            Vault(self._vault_store or store, self._current_keyring, self._key_wrapper)
            if private
            else None
        )
        record = _Namespace(cache, store, vault, tag, data_key, config)
        if private:
            cache.set_prepare(lambda: self._load_data_key(record))
        self._namespaces[name] = record
        return cache

    async def _load_data_key(self, record: _Namespace) -> None:
        assert record.vault is not None and record.data_key is not None  # noqa: S101
        found = await record.vault.load(record.cache.name, record.tag, create=True)
        assert found is not None  # noqa: S101 - create=True always yields a key
        record.data_key.load(*found)

    # -- erasure and rotation -------------------------------------------------------------------

    async def erase(self, name: str, *, backend: str | Backend | None = None) -> bool:
        """Crypto-shred namespace ``name``: destroy its data key, then delete its entries.

        Returns False when there was nothing to erase (not an error).
        """
        self._check_open()
        name = validate_namespace_name(name)
        record = self._namespaces.get(name)
        if record is not None:
            store, tag, vault = record.store, record.tag, record.vault
        else:
            chosen = self._default_backend if backend is None else backend
            if isinstance(chosen, str) and backend_kind(chosen).scheme == "memory":
                return False
            store, leaves = self._resolve_backend(chosen, Policy(), Stats())
            tag = self._tag(name, leaves_process=leaves)
            vault = Vault(self._vault_store or store, self._current_keyring, self._key_wrapper)
        if self._memo is not None:
            self._memo.discard_prefix(KEY_FORMAT + tag)
        destroyed = await vault.destroy(tag) if vault is not None else False
        removed = await store.delete_prefix(KEY_FORMAT + tag + b":")
        removed += await store.delete_prefix(KEY_FORMAT + tag + b"=")
        await store.delete_prefix(stats_prefix(tag))
        if record is not None:
            record.cache.forget_padding_sample()
            if record.data_key is not None:
                record.data_key.forget()
                record.cache.set_prepare(lambda: self._load_data_key(record))
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
        """
        self._check_open()
        ttl = check_ttl(ttl)
        written = 0
        for record in self._namespaces.values():
            body = {**record.cache.stats.as_dict(), "published_at": self._clock()}
            await record.store.set(
                stats_prefix(record.tag) + self._publisher,
                json.dumps(body, separators=(",", ":")).encode("ascii"),
                ttl=ttl,
            )
            written += 1
        return written

    async def read_stats(self, name: str) -> dict[str, int]:
        """The counters of namespace ``name`` summed over every process that published them."""
        self._check_open()
        record = self._namespaces.get(name)
        if record is None:
            raise KeyError("no namespace of that name in this manager")
        totals: dict[str, int] = {}
        async for _, raw in record.store.scan(stats_prefix(record.tag)):
            try:
                body = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            for field, value in body.items():
                if field in Stats.__dataclass_fields__ and type(value) is int:
                    totals[field] = totals.get(field, 0) + value
        return totals

    async def rewrap(self, keyring: Keyring | None = None) -> int:
        """Adopt ``keyring`` (if given), then re-wrap every private namespace's data key under
        its primary key. Entries are not touched. Returns how many data keys were re-wrapped."""
        self._check_open()
        if keyring is not None:
            if not isinstance(keyring, Keyring):
                raise TypeError("keyring must be a Keyring")
            current = self._current_keyring()
            probe = b"acs1/index-check"
            if self._keyring is not None and keyring.derive_index(probe) != current.derive_index(
                probe
            ):
                raise ConfigurationError(
                    "the new keyring has a different index key, which would move every storage "
                    "key; build it with Keyring.rotate() or pass index_key="
                )
            self._keyring = keyring
        count = 0
        for record in self._namespaces.values():
            if record.vault is not None and await record.vault.rewrap(
                record.cache.name, record.tag
            ):
                count += 1
        return count


def _breaker_watcher(name: str, stats: Stats, metrics: MetricsHook | None) -> Callable[[str], None]:
    def changed(state: str) -> None:
        stats.breaker = state
        if metrics is not None:
            metrics.record("breaker", name, state, 0.0)

    return changed


def stats_prefix(tag: bytes) -> bytes:
    return KEY_FORMAT + tag + b"!stats:"


def _policy_fields(policy: Policy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in Policy.__dataclass_fields__}


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
    global _default
    _default = manager


def get_cache(name: str, backend: str | Backend | None = None, **policy: Any) -> Cache:
    """Namespace ``name`` of the default manager."""
    return default_manager().namespace(name, backend, **policy)
