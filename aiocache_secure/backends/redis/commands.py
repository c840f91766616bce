"""How operations become Redis commands: expiry in milliseconds, ``SET``, glob escaping."""

from __future__ import annotations

import math
import re
from typing import Any, Final

__all__ = ["escape_glob", "px", "set_command"]

_GLOB: Final = re.compile(rb"([*?\[\]\\])")


def escape_glob(prefix: bytes) -> bytes:
    """``prefix`` with Redis glob metacharacters (``* ? [ ] \\``) escaped for ``SCAN MATCH``."""
    return _GLOB.sub(rb"\\\1", prefix)


def px(ttl: float | None) -> int | None:
    """``ttl`` seconds as ``PX`` milliseconds, rounded up, at least 1; None for no expiry."""
    if ttl is None or ttl == math.inf:
        return None
    if ttl != ttl:
        raise ValueError("ttl must be a number of seconds or None")
    return max(1, math.ceil(ttl * 1000))


def set_command(key: bytes, value: bytes, ttl_px: int | None) -> tuple[Any, ...]:
    return ("SET", key, value) if ttl_px is None else ("SET", key, value, "PX", ttl_px)
