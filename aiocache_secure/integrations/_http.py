"""The HTTP caching rules shared by the ASGI and aiohttp middlewares: pure functions, no I/O.

What may be stored (:meth:`HttpPolicy.storable_ttl`): a ``200`` answer to ``GET`` whose response
does not set a cookie, whose ``Cache-Control`` has none of ``no-store``, ``private``, ``no-cache``,
and whose ``Vary`` names only headers the cache keys on (``Vary: *`` never). ``s-maxage`` (else
``max-age``) bounds the lifetime.

Whom it may be served to (:meth:`HttpPolicy.request_key`): the key holds the method-normalized
scheme, host, path, sorted query, the request's values of every configured vary header and, when
the request carries credentials (``Authorization`` or a session cookie), the caller's identity.
A credentialed request without an identity is neither served from nor stored in the cache, so one
user's response can never reach another. Request headers such as ``Cache-Control: no-cache``,
``Pragma`` or ``Clear-Site-Data`` are deliberately ignored: a client cannot bypass, refill or
purge the server-side cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from ..policy import check_ttl

__all__ = [
    "DEFAULT_SESSION_COOKIES",
    "DEFAULT_VARY_HEADERS",
    "BurstLog",
    "HttpPolicy",
    "etag_matches",
    "etag_of",
    "not_modified_headers",
    "pack_entry",
    "unpack_entry",
]

DEFAULT_VARY_HEADERS: Final = ("accept", "accept-encoding", "accept-language")
DEFAULT_SESSION_COOKIES: Final = ("session", "sessionid")
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
_MAX_PLAIN_KEY: Final = 1024
_UNCACHEABLE_DIRECTIVES: Final = frozenset({"no-store", "private", "no-cache"})
# Never replayed from the cache: they describe one connection, or are recomputed on each answer.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "x-cache",
        "age",
    }
)
_NOT_MODIFIED_KEEP: Final = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)
_log: Final = logging.getLogger("aiocache_secure")

Headers = Sequence[tuple[str, str]]
"""Header pairs with lower-case names, as every rule here takes them."""


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for value in values:
        for part in value.split(","):
            name, sep, arg = part.strip().partition("=")
            name = name.strip().lower()
            if name:
                directives[name] = arg.strip().strip('"') if sep else None
    return directives


def _seconds(value: str | None) -> float | None:
    if value is None or not value.isdigit():
        return None
    return float(value)


def header_values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPolicy:
    """The caching rules of one middleware, validated once."""

    ttl: float
    vary_headers: tuple[str, ...] = DEFAULT_VARY_HEADERS
    session_cookies: tuple[str, ...] = DEFAULT_SESSION_COOKIES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    _vary: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl", check_ttl(self.ttl))
        if isinstance(self.vary_headers, str) or isinstance(self.session_cookies, str):
            raise TypeError("vary_headers and session_cookies are sequences of names")
        vary = tuple(sorted({name.strip().lower() for name in self.vary_headers}))
        if "*" in vary or "" in vary:
            raise ValueError("vary_headers holds header names")
        object.__setattr__(self, "vary_headers", vary)
        object.__setattr__(self, "_vary", frozenset(vary))
        object.__setattr__(self, "session_cookies", tuple(self.session_cookies))
        size = self.max_body_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError("max_body_bytes must be a positive int")

    # -- requests -------------------------------------------------------------------------------

    def has_credentials(self, headers: Headers) -> bool:
        for name, value in headers:
            if name in ("authorization", "proxy-authorization"):
                return True
            if name == "cookie":
                for part in value.split(";"):
                    if part.partition("=")[0].strip() in self.session_cookies:
                        return True
        return False

    def request_key(
        self,
        *,
        scheme: str,
        host: str,
        path: str,
        query: str,
        headers: Headers,
        identity: str | None,
    ) -> str | None:
        """The cache key of a ``GET``/``HEAD`` request, or None: do not use the cache for it."""
        if identity is None and self.has_credentials(headers):
            return None
        pairs = sorted(parse_qsl(query, keep_blank_values=True))
        vary = [", ".join(header_values(headers, name)) for name in self.vary_headers]
        parts: list[Any] = ["GET", scheme, host.lower(), path, urlencode(pairs), vary]
        if identity is not None:
            parts.append(["identity", identity])
        key = json.dumps(parts, separators=(",", ":"))
        if len(key) > _MAX_PLAIN_KEY:
            # A long URL must not exceed the namespace's key limit (and fail the request).
            key = "#" + hashlib.blake2b(key.encode("ascii"), digest_size=32).hexdigest()
        return key

    # -- responses ------------------------------------------------------------------------------

    def storable_ttl(self, status: int, headers: Headers) -> float | None:
        """Seconds to keep this response, or None when it must not be stored."""
        if status != 200:
            return None
        if any(name == "set-cookie" for name, _ in headers):
            return None
        directives = parse_cache_control(header_values(headers, "cache-control"))
        if _UNCACHEABLE_DIRECTIVES.intersection(directives):
            return None
        for value in header_values(headers, "vary"):
            for name in value.split(","):
                name = name.strip().lower()
                if name and name not in self._vary:
                    return None
        ttl = self.ttl
        bound = _seconds(directives.get("s-maxage"))
        if bound is None:
            bound = _seconds(directives.get("max-age"))
        if bound is not None:
            ttl = min(ttl, bound)
        return ttl if ttl > 0 else None


# -- entity tags ---------------------------------------------------------------------------------


def etag_of(body: bytes) -> str:
    """A strong ETag derived from the body alone: stable across processes and restarts."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: Iterable[str], etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison (RFC 9110 13.1.2)."""
    mine = etag.removeprefix("W/")
    for value in if_none_match:
        for tag in value.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == mine:
                return True
    return False


def not_modified_headers(headers: Headers) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name in _NOT_MODIFIED_KEEP]


# -- stored entries -----------------------------------------------------------------------------


def pack_entry(status: int, headers: Headers, body: bytes) -> tuple[dict[str, Any], str]:
    """The JSON-safe cache entry of a response, and its ETag (the response's own when it has
    one, else :func:`etag_of` the body)."""
    kept = [[name, value] for name, value in headers if name not in _HOP_BY_HOP]
    etags = header_values(headers, "etag")
    etag = etags[0] if etags else etag_of(body)
    if not etags:
        kept.append(["etag", etag])
    entry = {"s": status, "h": kept, "b": base64.b64encode(body).decode("ascii")}
    return entry, etag


def unpack_entry(entry: object) -> tuple[int, list[tuple[str, str]], bytes, str] | None:
    """``(status, headers, body, etag)`` of a stored entry; None when it is not one of ours."""
    if not isinstance(entry, dict):
        return None
    status, headers, body = entry.get("s"), entry.get("h"), entry.get("b")
    if type(status) is not int or not isinstance(headers, list) or not isinstance(body, str):
        return None
    pairs: list[tuple[str, str]] = []
    for pair in headers:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(p) is str for p in pair)):
            return None
        pairs.append((pair[0], pair[1]))
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    etags = header_values(pairs, "etag")
    return status, pairs, raw, etags[0] if etags else etag_of(raw)


class BurstLog:
    """Logs a failure once per burst and kind, so an outage cannot flood the logs."""

    __slots__ = ("_last", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._last: dict[type[BaseException], float] = {}

    def failed(self, exc: BaseException) -> None:
        kind = type(exc)
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) >= 10.0:
            self._last[kind] = now
            _log.warning("%s: the cache failed (%s); serving uncached", self._what, kind.__name__)


def lower_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
