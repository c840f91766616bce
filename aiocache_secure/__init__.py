"""aiocache_secure: an asyncio cache and memory framework whose data is safe by construction."""

from __future__ import annotations

from .backend import AtomicBackend, Backend
from .backends.memory import MemoryBackend
from .breaker import Breaker
from .cache import MISSING, Cache
from .clock import ManualClock
from .decorator import cached
from .errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CacheError,
    ClosedError,
    ConfigurationError,
    ContentionError,
    IntegrityError,
    SerializationError,
    UnsupportedOperation,
    ValueTooLarge,
)
from .keyring import Keyring
from .manager import CacheManager, default_manager, get_cache, set_default_manager
from .stats import Stats

__version__ = "0.1.0"

__all__ = [
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
