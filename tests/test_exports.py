"""The public surface, pinned: a change to ``__all__`` is a deliberate API change."""

from __future__ import annotations

import aiocache_secure

EXPECTED = [
    "MISSING",
    "AtomicBackend",
    "Backend",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "Breaker",
    "Cache",
    "CacheError",
    "CacheManager",
    "ClosedError",
    "ConfigurationError",
    "ContentionError",
    "IntegrityError",
    "Keyring",
    "ManualClock",
    "MemoryBackend",
    "SerializationError",
    "Stats",
    "UnsupportedOperation",
    "ValueTooLarge",
    "__version__",
    "cached",
    "default_manager",
    "get_cache",
    "set_default_manager",
]


def test_all_is_pinned() -> None:
    assert aiocache_secure.__all__ == EXPECTED


def test_every_exported_name_exists() -> None:
    for name in aiocache_secure.__all__:
        assert getattr(aiocache_secure, name) is not None
