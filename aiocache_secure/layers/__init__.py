"""Layers, and the one place their order is decided: :func:`compose`.

A namespace's stack, outermost first::

    SizeLimit      serialized value ≤ max_value_bytes, else ValueTooLarge, before any I/O
    VerifiedReads  the verified-read memo: envelopes already authenticated are not opened again
                   (encrypted, unpadded namespaces with the memo on; see layers/verified.py)
    HashedKeys     storage key = "acs1" + namespace tag + ":" + PRF(namespace key, key)
     or PrefixedKeys  storage key = "acs1" + namespace tag + "=" + key      (hash_keys=False)
                   (every spelling of a key: aiocache_secure/keyspace.py)
    Encryption     AES-256-GCM envelope; AAD binds version, key id, namespace, storage key, expiry
    backend        memory │ file │ redis (+cluster) │ mongo

Encryption sits *below* key mapping so that it sees the storage key it binds into the associated
data, and needs no second PRF computation; the original key, which export needs, travels inside
the sealed entry frame (see :mod:`aiocache_secure.frame`). TTL policy and timing padding are not
Backend layers: TTL resolution is pure logic whose result (the absolute expiry) is written into
the frame by the facade, and padding must also cover deserialization, which happens in the
facade (see :mod:`aiocache_secure.layers.padding`).

A layer that a namespace's policy turns off is not in its stack: no ``if enabled`` on hot paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import keyspace
from ..backend import Backend
from ..clock import Clock
from ..memo import Memo
from ..policy import Policy
from .base import Layer
from .encryption import Encryption, KeySource, PaddedEncryption
from .keys import HashedKeys, PrefixedKeys
from .limits import SizeLimit
from .near import NearCache, NearStore
from .verified import VerifiedReads

__all__ = ["Layer", "Stack", "StackSpec", "compose"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StackSpec:
    """Everything :func:`compose` needs beyond the policy: derived keys and callbacks."""

    namespace: str
    namespace_id: bytes
    tag: bytes
    prf_key: bytes
    keys: KeySource | None
    clock: Clock
    on_tamper: Callable[[], None]
    memo: Memo | None = None
    # The store's near cache (near_cache=True), and what counts its hits.
    near: NearStore | None = None
    on_near_hit: Callable[[int], None] = lambda count: None


@dataclass(frozen=True, slots=True)
class Stack:
    """A composed stack, and the layers of it that the facade calls besides ``top``."""

    top: Backend
    encryption: Encryption | None
    key_layer: HashedKeys | PrefixedKeys
    verified: VerifiedReads | None = None


def compose(backend: Backend, policy: Policy, spec: StackSpec) -> Stack:
    # A memo hit is faster than a first read: padded namespaces never use one.
    memo = spec.memo if policy.memo and not policy.pad_timing else None
    layers: list[tuple[type[Layer], dict[str, Any]]] = []
    if policy.max_value_bytes is not None:
        layers.append(
            (
                SizeLimit,
                {"max_value_bytes": policy.max_value_bytes, "namespace": spec.namespace},
            )
        )
    if memo is not None and spec.keys is not None:
        layers.append(
            (
                VerifiedReads,
                {
                    "memo": memo,
                    "memo_prefix": keyspace.verified_memo_prefix(spec.tag),
                    "clock": spec.clock,
                },
            )
        )
    if policy.hash_keys:
        layers.append((HashedKeys, {"tag": spec.tag, "prf_key": spec.prf_key, "memo": memo}))
    else:
        layers.append((PrefixedKeys, {"tag": spec.tag}))
    if spec.keys is not None:
        layers.append(
            (
                PaddedEncryption if policy.pad_timing else Encryption,
                {
                    "keys": spec.keys,
                    "namespace": spec.namespace,
                    "namespace_id": spec.namespace_id,
                    "clock": spec.clock,
                    "strict": policy.strict,
                    "on_tamper": spec.on_tamper,
                },
            )
        )

    if spec.near is not None:
        # Innermost: it keeps sealed envelopes under the storage keys the store reports.
        layers.append(
            (
                NearCache,
                {
                    "near": spec.near,
                    "prefix": keyspace.namespace_prefix(spec.tag),
                    "on_hit": spec.on_near_hit,
                },
            )
        )

    built: list[Layer] = []
    for cls, kwargs in reversed(layers):
        layer = cls(backend, **kwargs)
        built.append(layer)
        backend = layer

    encryption = next((layer for layer in built if isinstance(layer, Encryption)), None)
    key_layer = next(layer for layer in built if isinstance(layer, HashedKeys | PrefixedKeys))
    verified = next((layer for layer in built if isinstance(layer, VerifiedReads)), None)
    return Stack(top=backend, encryption=encryption, key_layer=key_layer, verified=verified)


def layer_names(stack: Backend) -> Sequence[str]:
    """The classes of a composed stack, outermost first (for diagnostics and tests)."""
    names: list[str] = []
    node: object = stack
    while isinstance(node, Layer):
        names.append(type(node).__name__)
        node = node.inner
    names.append(type(node).__name__)
    return names
