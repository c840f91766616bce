"""Namespace policy: validated once at construction, then consulted as plain attributes.

TTL resolution lives here as pure synchronous logic (STYLE 9); the facade turns its result into the
absolute expiry written into every entry frame, and into the relative TTL handed to the store.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, TypeAlias

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_TTL",
    "Policy",
    "Seconds",
    "check_ttl",
    "validate_namespace_name",
]

Seconds: TypeAlias = "float | timedelta"
"""A lifetime: seconds as a number, or a ``datetime.timedelta``."""

DEFAULT_MAX_VALUE_BYTES: Final = 16 * 1024 * 1024
MAX_TTL: Final = 100 * 365 * 86400.0
"""The longest lifetime an entry may be given: a hundred years. Every absolute expiry it yields
fits every store's range (the entry frame's and the envelope's unsigned 64-bit milliseconds,
Redis's signed 64-bit milliseconds, MongoDB dates up to the year 9999)."""
_NAME: Final = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
RESERVED_PREFIX: Final = "__acs"


def validate_namespace_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError("namespace names must be str")
    if not _NAME.fullmatch(name) or name != name.strip():
        raise ConfigurationError(
            "namespace names are 1-200 printable characters without surrounding spaces"
        )
    if name.startswith(RESERVED_PREFIX):
        raise ConfigurationError(f"namespace names starting with {RESERVED_PREFIX!r} are reserved")
    return name


def check_ttl(ttl: object, what: str = "ttl", *, bounded: bool = True) -> float:
    """A finite, positive number of seconds (or a ``datetime.timedelta``), at most
    :data:`MAX_TTL` unless ``bounded`` is false (the caller clamps it); TypeError or ValueError
    otherwise."""
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"{what} must be a number of seconds or a datetime.timedelta")
    try:
        value = float(ttl)
    except OverflowError:  # an int beyond float's range
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number of seconds greater than 0")
    if bounded and value > MAX_TTL:
        raise ValueError(f"{what} must be at most {MAX_TTL:.0f} seconds (100 years)")
    return value


def _limit(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None")
    if value <= 0:
        raise ConfigurationError(f"{what} must be positive")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    ttl: float | None = None
    max_ttl: float | None = None
    ttl_jitter: float = 0.0
    encrypt: bool = False
    hash_keys: bool = True
    max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES
    max_entries: int | None = None
    max_bytes: int | None = None
    pad_timing: bool = False
    fail_open: bool = False
    private: bool = False
    serializer: str = "json"
    strict: bool = False
    # Whether the namespace may use its manager's verified-read memo (aiocache_secure.memo).
    memo: bool = True
    near_cache: bool = False

    def __post_init__(self) -> None:
        if self.ttl is not None:
            object.__setattr__(self, "ttl", check_ttl(self.ttl))
        if self.max_ttl is not None:
            object.__setattr__(self, "max_ttl", check_ttl(self.max_ttl, "max_ttl"))
        if self.ttl is not None and self.max_ttl is not None and self.ttl > self.max_ttl:
            raise ConfigurationError("ttl is larger than max_ttl")
        jitter = self.ttl_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, int | float):
            raise TypeError("ttl_jitter must be a fraction between 0 and 0.5")
        if not 0 <= jitter <= 0.5:
            raise ConfigurationError("ttl_jitter must be a fraction between 0 and 0.5")
        for flag in (
            "encrypt",
            "hash_keys",
            "pad_timing",
            "fail_open",
            "private",
            "strict",
            "memo",
            "near_cache",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False")
        _limit(self.max_value_bytes, "max_value_bytes")
        _limit(self.max_entries, "max_entries")
        _limit(self.max_bytes, "max_bytes")
        if self.near_cache and self.pad_timing:
            raise ConfigurationError(
                "near_cache and pad_timing exclude each other: a near-cache hit is faster than "
                "a first read, which is what padding hides"
            )
        if not isinstance(self.serializer, str):
            raise TypeError("serializer must be a name: 'json', 'msgpack' or 'pickle'")

    def resolve_ttl(self, ttl: object) -> float | None:
        """The lifetime to store for a write asked with ``ttl`` (None: namespace default)."""
        if ttl is None:
            value = self.ttl if self.ttl is not None else self.max_ttl
            if value is None:
                return None
        else:
            # Beyond MAX_TTL only when max_ttl (itself at most MAX_TTL) clamps it below.
            value = check_ttl(ttl, bounded=self.max_ttl is None)
        if self.max_ttl is not None and value > self.max_ttl:
            value = self.max_ttl
        if self.ttl_jitter:
            value *= 1.0 - self.ttl_jitter * random.random()  # noqa: S311 - spreading, not secrecy
        return value
