"""Backend URLs → Backend objects.

=====================  ===========================================  =====================
URL                    backend                                      extra
=====================  ===========================================  =====================
``memory://``          :class:`~.memory.MemoryBackend`               (core)
``file:///abs/dir``    :class:`~.file.FileBackend`                   ``files``
``redis://``           :class:`~.redis.RedisBackend`                 ``redis``
``rediss://``          the same over TLS
``redis+cluster://``   Redis Cluster (``rediss+cluster://`` for TLS) ``redis``
``redis+sentinel://``  Redis Sentinel (``rediss+sentinel://``: TLS)  ``redis``
``mongodb://``         :class:`~.mongo.MongoBackend`                 ``mongo``
=====================  ===========================================  =====================

Memory and file backends are *per namespace*: each namespace gets its own instance (cheap: file
instances on one directory share their process-wide state), which is what makes per-namespace
``max_entries``/``max_bytes`` quotas possible and keeps one namespace from evicting another's
entries. Remote backends are *shared*: namespaces naming the same URL share one client.
Advanced options (TLS files, timeouts, a ready driver client) are typed keyword arguments of each
backend class; build the instance yourself and pass it as ``backend=``.

Anything that shows a URL (a repr, a message, command-line output) shows ``mask_url(url)``:
passwords and secret-looking query options become ``***``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..backend import Backend
from ..clock import Clock
from ..errors import ConfigurationError
from ._masking import mask_url, mask_urls
from .memory import MemoryBackend

__all__ = ["BackendKind", "MemoryBackend", "backend_kind", "mask_url", "mask_urls", "open_backend"]


class Factory(Protocol):
    def __call__(
        self,
        url: str,
        *,
        clock: Clock,
        strict: bool,
        max_entries: int | None,
        max_bytes: int | None,
        on_evict: Callable[[int], None] | None,
    ) -> Backend: ...


@dataclass(frozen=True, slots=True)
class BackendKind:
    scheme: str
    module: str
    extra: str | None
    per_namespace: bool
    leaves_process: bool


_KINDS = {
    kind.scheme: kind
    for kind in (
        BackendKind("memory", "memory", None, True, False),
        BackendKind("file", "file", "files", True, True),
        BackendKind("redis", "redis", "redis", False, True),
        BackendKind("rediss", "redis", "redis", False, True),
        BackendKind("redis+cluster", "redis", "redis", False, True),
        BackendKind("rediss+cluster", "redis", "redis", False, True),
        BackendKind("redis+sentinel", "redis", "redis", False, True),
        BackendKind("rediss+sentinel", "redis", "redis", False, True),
        BackendKind("mongodb", "mongo", "mongo", False, True),
        BackendKind("mongodb+srv", "mongo", "mongo", False, True),
    )
}


def backend_kind(url: object) -> BackendKind:
    if not isinstance(url, str):
        raise TypeError("a backend is a URL string or a Backend instance")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            "that is not a backend URL: expected SCHEME://ADDRESS (memory://, file:///abs/dir, "
            "redis://host:port/db, mongodb://host:port/db)"
        )
    kind = _KINDS.get(scheme.lower())
    if kind is None:
        shown = scheme if sep and scheme.isascii() and len(scheme) < 20 else "?"
        raise ConfigurationError(
            f"unknown backend scheme {shown!r} (known: {', '.join(sorted(_KINDS))})"
        )
    return kind


def open_backend(
    url: str,
    *,
    clock: Clock,
    strict: bool,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    on_evict: Callable[[int], None] | None = None,
) -> Backend:
    kind = backend_kind(url)
    if kind.scheme == "memory":
        if url.partition("://")[2] not in ("", "/"):
            raise ConfigurationError("memory:// takes no address or options")
        return MemoryBackend(
            max_entries=max_entries, max_bytes=max_bytes, clock=clock, on_evict=on_evict
        )
    try:
        module = importlib.import_module(f"{__name__}.{kind.module}")
    except ImportError as exc:
        raise ConfigurationError(
            f"the {kind.scheme}:// backend needs the {kind.extra!r} extra "
            f"(pip install 'aiocache_secure[{kind.extra}]')"
        ) from exc
    factory: Factory = module.from_url
    return factory(
        url,
        clock=clock,
        strict=strict,
        max_entries=max_entries,
        max_bytes=max_bytes,
        on_evict=on_evict,
    )
