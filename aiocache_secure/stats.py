"""Per-namespace counters: the zero-dependency view of what a namespace did.

``breaker`` is not a counter: it is the state of the circuit breaker of the namespace's backend
(``closed``, ``open``, ``half_open``; ``off`` without one), kept current by the breaker, and left
out of :meth:`Stats.as_dict` and :meth:`Stats.reset`.

Published records (``CacheManager.publish_stats``/``read_stats``): the counters as JSON with
their publication and expiry times, then an HMAC-SHA256 over the record's storage key and that
text, so a forged, moved or replayed record is ignored.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["Stats", "add_record", "seal_record"]

_MAC_SIZE: Final = 32


@dataclass(slots=True)
class Stats:
    """What one namespace did since it was opened (or :meth:`reset`): plain counters.

    ``tampered`` counts entries that failed authentication (each also an audit event);
    ``errors`` counts backend errors, including those ``fail_open`` turned into misses.
    """

    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    evictions: int = 0
    tampered: int = 0
    near_hits: int = 0
    breaker: str = field(default="off", compare=False)

    @property
    def hit_ratio(self) -> float:
        """Hits over reads (0.0 before the first read)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict (for JSON and metrics exporters)."""
        return {name: getattr(self, name) for name in _COUNTERS}

    def reset(self) -> None:
        """Set every counter back to 0."""
        for name in _COUNTERS:
            setattr(self, name, 0)


_COUNTERS = tuple(name for name in Stats.__dataclass_fields__ if name != "breaker")


def seal_record(key: bytes, record_key: bytes, stats: Stats, now: float, ttl: float) -> bytes:
    """The published record of ``stats`` under ``record_key``, authenticated with ``key``."""
    body = {**stats.as_dict(), "published_at": now, "expires_at": now + ttl}
    text = json.dumps(body, separators=(",", ":")).encode("ascii")
    return text + _mac(key, record_key, text)


def add_record(
    totals: dict[str, int], key: bytes, record_key: bytes, raw: bytes, now: float
) -> bool:
    """Add a published record's counters to ``totals``; False (nothing added) when it is not
    authentic or has expired."""
    body = _open_record(key, record_key, raw, now)
    if body is None:
        return False
    for name, value in body.items():
        if name in _COUNTERS and type(value) is int and value >= 0:
            totals[name] = totals.get(name, 0) + value
    return True


def _mac(key: bytes, record_key: bytes, text: bytes) -> bytes:
    message = len(record_key).to_bytes(4, "big") + record_key + text
    return hmac.digest(key, message, "sha256")


def _open_record(key: bytes, record_key: bytes, raw: bytes, now: float) -> dict[str, Any] | None:
    text, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
    if len(raw) <= _MAC_SIZE or not hmac.compare_digest(mac, _mac(key, record_key, text)):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    expires = body.get("expires_at")
    if not isinstance(expires, int | float) or isinstance(expires, bool) or not now < expires:
        return None
    return body
