"""Structured audit events on the stdlib logger ``aiocache_secure.audit``.

Events: ``tamper_detected``, ``decrypt_failed``, ``insecure_config``, ``key_rotated``,
``namespace_erased``, ``limit_exceeded``, ``nonce_budget``, ``backend_error``,
``breaker_opened``, ``breaker_half_open``, ``breaker_closed``.

An event never carries a cache key, a value, key material or a credential: callers pass only
names, counts and reasons chosen from fixed vocabularies. Every field is rendered with CR, LF and
other control characters replaced, so a hostile namespace name cannot forge log lines. The fields
also travel as ``record.audit`` (a dict) for structured handlers.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["AUDIT_LOGGER", "EVENTS", "emit"]

AUDIT_LOGGER: Final = logging.getLogger("aiocache_secure.audit")
EVENTS: Final = frozenset(
    {
        "tamper_detected",
        "decrypt_failed",
        "insecure_config",
        "key_rotated",
        "namespace_erased",
        "limit_exceeded",
        "nonce_budget",
        "backend_error",
        "breaker_opened",
        "breaker_half_open",
        "breaker_closed",
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _clean(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float):
        return value
    return _CONTROL.sub("?", str(value))[:200]


def emit(event: str, *, level: int = logging.WARNING, **fields: object) -> None:
    if event not in EVENTS:
        raise ValueError("unknown audit event")
    if not AUDIT_LOGGER.isEnabledFor(level):
        return
    clean = {name: _clean(value) for name, value in fields.items()}
    rendered = " ".join(f"{name}={value}" for name, value in clean.items())
    AUDIT_LOGGER.log(level, "%s %s", event, rendered, extra={"audit": {"event": event, **clean}})
