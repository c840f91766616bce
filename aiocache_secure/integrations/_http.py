"""The HTTP caching rules shared by the ASGI and aiohttp middlewares: pure functions, no I/O.

What may be stored (:meth:`HttpPolicy.storable_ttl`): a ``200`` answer to ``GET`` whose response
does not set a cookie, whose ``Cache-Control`` has none of ``no-store``, ``private``, ``no-cache``,
and whose ``Vary`` names only headers the cache keys on (``Vary: *`` never). ``s-maxage`` (else
``max-age``) bounds the lifetime.

Whom it may be served to (:meth:`HttpPolicy.request_key`): the key holds the method-normalized
scheme, host, the path as the router sees it (raw, ``%2F`` kept, and decoded), the query with the
names sorted but the values of one name in their order, the request's values of every configured
vary header and, for a credentialed request, who the caller is. A request is credentialed when it
carries any cookie outside ``public_cookies``, an ``Authorization``/``Proxy-Authorization``
header or an API-key header (:data:`DEFAULT_CREDENTIAL_HEADERS`, plus any named). It is keyed by
the caller's identity when one is known, else by a keyed hash of its credential material when
``per_credential`` is on, else neither served from nor stored in the cache: one caller's response
never reaches another. Request headers such as ``Cache-Control: no-cache``,
``Pragma`` or ``Clear-Site-Data`` are deliberately ignored: a client cannot bypass, refill or
purge the server-side cache.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson

from ..policy import check_ttl

__all__ = [
    "DEFAULT_CREDENTIAL_HEADERS",
    "DEFAULT_SESSION_COOKIES",
    "DEFAULT_VARY_HEADERS",
    "ENTRY_PREFIX",
    "BurstLog",
    "HttpPolicy",
    "PathRules",
    "Stored",
    "etag_matches",
    "etag_of",
    "not_modified_headers",
    "pack_entry",
    "stored_headers",
    "unpack_entry",
]

DEFAULT_VARY_HEADERS: Final = ("accept", "accept-encoding", "accept-language")
DEFAULT_SESSION_COOKIES: Final = ("session", "sessionid")
# Headers that carry credentials in common APIs; any cookie outside ``public_cookies`` does too.
DEFAULT_CREDENTIAL_HEADERS: Final = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "x-apikey",
    "x-auth-token",
    "x-access-token",
    "x-token",
    "x-session-token",
    "x-csrf-token",
    "x-xsrf-token",
)
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
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


def json_key(parts: Sequence[object], *, hash_long: bool = True) -> str:
    """A cache key (or credential material) from ``parts``: compact JSON, so no part can run
    into the next; a key over the plain-key limit becomes its BLAKE2b digest, so a long URL
    never exceeds the namespace's key limit (and fails the request)."""
    try:
        key = orjson.dumps(parts).decode("utf-8")
    except TypeError:  # a lone surrogate, which orjson refuses
        key = json.dumps(parts, separators=(",", ":"))
    if hash_long and len(key) > _MAX_PLAIN_KEY:
        key = (
            "#" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=32).hexdigest()
        )
    return key


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


def _parameter_name(part: str) -> str:
    name = part.partition("=")[0]
    return unquote_plus(name) if "%" in name or "+" in name else name


def query_key(query: str) -> str:
    """The raw query (percent-encoding kept) with its parameters sorted by decoded name.

    The sort is stable, so the values of one name keep their order: frameworks hand the handler
    the first or the last one, and ``?v=2&v=1`` is not ``?v=1&v=2``.
    """
    parts = [part for part in query.split("&") if part]
    if len(parts) > 1:
        parts.sort(key=_parameter_name)
    return "&".join(parts)


def header_values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpPolicy:
    """The caching rules of one middleware or route, validated once.

    ``session_cookies`` name cookies that are always credentials (kept for compatibility: every
    cookie is one unless listed in ``public_cookies``, cookies that never change a response, such
    as analytics or consent cookies; they are neither credentials nor part of the key).
    ``credential_headers`` are added to :data:`DEFAULT_CREDENTIAL_HEADERS`.
    """

    ttl: float
    vary_headers: tuple[str, ...] = DEFAULT_VARY_HEADERS
    session_cookies: tuple[str, ...] = DEFAULT_SESSION_COOKIES
    public_cookies: tuple[str, ...] = ()
    credential_headers: tuple[str, ...] = ()
    per_credential: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    credential_query: tuple[str, ...] = ()
    """Query parameters that carry credentials (``?api_key=``): they make a request
    credentialed, and are left out of its key (the caller's identity or credential hash keys it)."""
    _vary: frozenset[str] = field(init=False, repr=False)
    _credential_headers: frozenset[str] = field(init=False, repr=False)
    _public: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl", check_ttl(self.ttl))
        for names in (
            self.vary_headers,
            self.session_cookies,
            self.public_cookies,
            self.credential_headers,
            self.credential_query,
        ):
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise TypeError(
                    "vary_headers, session_cookies, public_cookies, credential_headers and "
                    "credential_query are sequences of names"
                )
        object.__setattr__(self, "credential_query", tuple(self.credential_query))
        vary = tuple(sorted({name.strip().lower() for name in self.vary_headers}))
        if "*" in vary or "" in vary:
            raise ValueError("vary_headers holds header names")
        object.__setattr__(self, "vary_headers", vary)
        object.__setattr__(self, "_vary", frozenset(vary))
        object.__setattr__(self, "session_cookies", tuple(self.session_cookies))
        public = tuple(self.public_cookies)
        if set(public) & set(self.session_cookies):
            raise ValueError("a session cookie cannot be a public cookie")
        object.__setattr__(self, "public_cookies", public)
        object.__setattr__(self, "_public", frozenset(public))
        extra = tuple(name.strip().lower() for name in self.credential_headers)
        if "" in extra or "cookie" in extra:
            raise ValueError("credential_headers holds header names (cookies always count)")
        object.__setattr__(self, "credential_headers", extra)
        object.__setattr__(
            self, "_credential_headers", frozenset(DEFAULT_CREDENTIAL_HEADERS + extra)
        )
        credentialed_vary = self._vary & (self._credential_headers | {"cookie"})
        if credentialed_vary:
            raise ValueError("vary_headers cannot name credential headers or cookies")
        if not isinstance(self.per_credential, bool):
            raise TypeError("per_credential is a bool")
        size = self.max_body_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError("max_body_bytes must be a positive int")

    @property
    def credential_names(self) -> frozenset[str]:
        """The request headers that carry credentials (besides ``Cookie``)."""
        return self._credential_headers

    # -- requests -------------------------------------------------------------------------------

    def split_query(self, query: str) -> tuple[list[tuple[str, str]], str]:
        """The credentials a query carries (the parameters named by ``credential_query``, as
        ``("query:" + name, value)``) and the query without them."""
        if not self.credential_query or not query:
            return [], query
        found: list[tuple[str, str]] = []
        kept: list[str] = []
        for part in query.split("&"):
            name = _parameter_name(part)
            if name in self.credential_query:
                found.append(("query:" + name, part.partition("=")[2]))
            else:
                kept.append(part)
        return found, "&".join(kept)

    def credentials(
        self, headers: Headers, query_credentials: Sequence[tuple[str, str]] = ()
    ) -> bytes | None:
        """The request's credential material, canonical, or None when it carries none.
        ``query_credentials``: what :meth:`split_query` found in its query."""
        found: list[tuple[str, str]] = list(query_credentials)
        for name, value in headers:
            if name in self._credential_headers:
                found.append((name, value))
            elif name == "cookie":
                for part in value.split(";"):
                    cookie, _, content = part.partition("=")
                    cookie = cookie.strip()
                    if cookie and cookie not in self._public:
                        found.append(("cookie:" + cookie, content.strip()))
        if not found:
            return None
        return json_key(sorted(found), hash_long=False).encode("utf-8", "surrogatepass")

    def has_credentials(self, headers: Headers) -> bool:
        return self.credentials(headers) is not None

    def caller(
        self,
        headers: Headers,
        identity: str | None,
        secret: bytes,
        query_credentials: Sequence[tuple[str, str]] = (),
    ) -> list[str] | None | bool:
        """Who the key is for: ``["identity", id]``, ``["credential", keyed hash]``, ``[]``
        (anonymous), or False: this request must bypass the cache.

        The credential hash is keyed with ``secret`` (never an unkeyed hash: tokens are often
        guessable enough to brute-force), so neither the raw token nor a plain digest of it is
        ever part of a key or an entry.
        """
        if identity is not None:
            if not isinstance(identity, str):
                raise TypeError("identity must give a str or None")
            return ["identity", identity]
        material = self.credentials(headers, query_credentials)
        if material is None:
            return []
        if not self.per_credential:
            return False
        digest = hmac.new(secret, material, hashlib.sha256).hexdigest()
        return ["credential", digest]

    def request_key(
        self,
        *,
        scheme: str,
        host: str,
        path: str,
        query: str,
        headers: Headers,
        identity: str | None,
        raw_path: str | None = None,
        secret: bytes = b"",
    ) -> str | None:
        """The cache key of a ``GET``/``HEAD`` request, or None: do not use the cache for it.

        ``raw_path`` is the path as received (percent-encoding kept): routers such as aiohttp's
        route on it, so ``/a%2Fb`` and ``/a/b`` may reach different handlers and must never
        share an entry.
        """
        query_credentials, query = self.split_query(query)
        who = self.caller(headers, identity, secret, query_credentials)
        if who is False:
            return None
        varied: dict[str, list[str]] = {}
        wanted = self._vary
        for name, value in headers:
            if name in wanted:
                varied.setdefault(name, []).append(value)
        vary = [", ".join(varied.get(name, ())) for name in self.vary_headers]
        parts: list[Any] = [
            "GET",
            scheme,
            host.lower(),
            path,
            raw_path if raw_path is not None else path,
            query_key(query),
            vary,
        ]
        if who:
            parts.append(who)
        return json_key(parts)

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

ENTRY_PREFIX: Final = "w1"
"""Every stored response is one ``str``: this prefix, its head (compact JSON: status, headers,
generations, time stored, body encoding), a newline, then the body (its UTF-8 text, else base64).

One string, not a JSON tree: a namespace hands an unchanged immutable value back as the very
object it verified, and the body is read without decoding a tree or base64 on the hit path."""


def stored_headers(headers: Headers, body: bytes) -> tuple[list[tuple[str, str]], str]:
    """The headers a stored response replays (hop-by-hop ones dropped, an ETag added when it had
    none), and its ETag: its own, else :func:`etag_of` the body."""
    kept = [(name, value) for name, value in headers if name not in _HOP_BY_HOP]
    etags = header_values(headers, "etag")
    etag = etags[0] if etags else etag_of(body)
    if not etags:
        kept.append(("etag", etag))
    return kept, etag


def pack_entry(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    generations: Sequence[str] = (),
    stored_at: float = 0.0,
) -> tuple[str, str]:
    """The cache entry of a response (see :data:`ENTRY_PREFIX`), and its ETag.

    ``generations`` are the values of the entry's generation keys when it was made (see
    :mod:`._responses`); ``stored_at`` gives ``Age``."""
    kept, etag = stored_headers(headers, body)
    try:
        text, encoding = body.decode("utf-8"), "u"  # JSON and HTML bodies: stored as they are
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "b"
    head = {"s": status, "h": kept, "g": list(generations), "t": stored_at, "e": encoding}
    # Names and values are latin-1 text and the tokens hex: orjson takes them all.
    return ENTRY_PREFIX + orjson.dumps(head).decode("utf-8") + "\n" + text, etag


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored response, as read back: everything a hit replays, computed once per entry."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    etag: str
    stored_at: float
    generations: tuple[str, ...] = ()
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()
    """``headers`` and the body's ``content-length``, latin-1 encoded, as ASGI sends them."""

    def age(self, now: float) -> str:
        return str(max(0, int(now - self.stored_at)))


def unpack_entry(entry: object) -> Stored | None:
    """The response of a stored entry; None when it is not one of ours."""
    if type(entry) is not str or not entry.startswith(ENTRY_PREFIX):
        return None
    head_text, newline, text = entry.partition("\n")
    if not newline:
        return None
    try:
        head = orjson.loads(head_text[len(ENTRY_PREFIX) :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(head, dict):
        return None
    status, headers, generations = head.get("s"), head.get("h"), head.get("g")
    stored_at, encoding = head.get("t"), head.get("e")
    if (
        type(status) is not int
        or not isinstance(headers, list)
        or not isinstance(generations, list)
    ):
        return None
    if not all(type(token) is str for token in generations):
        return None
    if not isinstance(stored_at, int | float) or isinstance(stored_at, bool):
        return None
    pairs: list[tuple[str, str]] = []
    for pair in headers:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(p) is str for p in pair)):
            return None
        pairs.append((pair[0], pair[1]))
    if encoding == "u":
        body = text.encode("utf-8", "surrogatepass")
    elif encoding == "b":
        try:
            body = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    try:
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
    except UnicodeEncodeError:
        return None
    raw.append((b"content-length", str(len(body)).encode("ascii")))
    etags = header_values(pairs, "etag")
    return Stored(
        status,
        pairs,
        body,
        etags[0] if etags else etag_of(body),
        float(stored_at),
        tuple(generations),
        tuple(raw),
    )


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


@dataclass(frozen=True, slots=True)
class PathRules:
    """Which request paths a middleware caches: ``include`` (None: all) minus ``exclude``.

    Patterns are :mod:`fnmatch` globs matched against the decoded path, case-sensitively (``*``
    also matches ``/``): ``"/api/*"``, ``"/live/counter"``.
    """

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str] | None, exclude: Sequence[str]) -> PathRules:
        if isinstance(include, str) or isinstance(exclude, str):
            raise TypeError("include and exclude are sequences of path patterns")
        return cls(None if include is None else tuple(include), tuple(exclude))

    def allows(self, path: str) -> bool:
        if self.include is not None and not any(
            fnmatch.fnmatchcase(path, pattern) for pattern in self.include
        ):
            return False
        return not any(fnmatch.fnmatchcase(path, pattern) for pattern in self.exclude)


def lower_pairs(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
