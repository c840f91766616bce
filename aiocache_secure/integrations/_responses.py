"""The response store shared by every web front end (ASGI and aiohttp, middleware and per-route).

Entries and generations. Every stored response records the *generation* of its URL (and of each
of its tags) at the time it was made; a generation is a small random token under its own key in
the same namespace, and a missing one reads as ``""``. A hit reads the entry and the generations
in one ``get_many`` round trip and counts only when they still match. Invalidating a URL (a
successful ``POST``/``PUT``/``PATCH``/``DELETE``, RFC 9111 section 4.4) or a tag writes a new
token: one store write reaches every variant and identity of that URL, in every process sharing
the store, and a response computed while the URL changed is stored under the old token, so it is
never served.

A URL's generation key holds the host and the decoded path, not the query: invalidating
``/notes/a`` drops ``/notes/a?format=csv`` too. Generation keys live as long as the namespace's
``max_ttl`` when it has one, else the longest of the response ``ttl`` and
:data:`GENERATION_TTL`: always at least as long as the entries they guard. Storing a response
under a generation that does not exist yet creates it first, so no entry ever records a missing
generation: a generation key that expires or is evicted (``max_entries``) turns the entries it
guarded into misses, never back into hits.

A hit parses its entry once: the store keeps the response last read under each key (within
:data:`PARSED_BUDGET` characters) and serves it again only while the namespace returns an equal
entry string, which on an encrypted namespace is the very string it verified; the generation
check still runs on every request.

Credential hashes are keyed with a secret derived from the namespace's key-hashing key (itself
from the manager's keyring), so every process sharing the keyring computes the same keys; on a
namespace that does not hash keys, or is not encrypted, the secret is random per process, which
is safe but shares no credentialed entry across processes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import unquote, urljoin, urlsplit

import anyio
import anyio.lowlevel

from ..cache import MISSING, Cache
from ..errors import CacheError
from ._http import (
    BurstLog,
    Headers,
    HttpPolicy,
    Stored,
    json_key,
    pack_entry,
    unpack_entry,
)

__all__ = ["GENERATION_TTL", "ResponseStore", "invalidate_tags", "invalidate_url"]

GENERATION_TTL: Final = 7 * 86400.0
PARSED_BUDGET: Final = 1024 * 1024
"""Characters of entries whose parsed response one front end keeps (first in, first out)."""
Generations = list[tuple[str, str]]
"""The generation keys of a request and the tokens read for them (``""`` where missing)."""
# Not valid UTF-8, so no str cache key ever hashes to this input.
_log: Final = logging.getLogger("aiocache_secure")
_warned: set[tuple[str, str]] = set()  # the start-up warning, once per front end and namespace


def _short(parts: list[str]) -> str:
    return json_key(parts)


def url_generation_key(host: str, path: str) -> str:
    return _short(["gen", host.lower(), path])


def tag_generation_key(tag: str) -> str:
    if not isinstance(tag, str) or not tag:
        raise TypeError("tags are non-empty strings")
    return _short(["tag", tag])


def credential_secret(cache: Cache) -> bytes:
    """The key of the credential hashes of responses stored in ``cache`` (never stored)."""
    return cache.derive_secret(b"web-credential") or secrets.token_bytes(32)


def generation_ttl(cache: Cache, ttl: float = 0.0) -> float:
    return cache.policy.max_ttl or max(ttl, GENERATION_TTL)


async def _bump(cache: Cache, keys: Iterable[str], ttl: float) -> None:
    items = {key: secrets.token_hex(8) for key in keys}
    if items:
        await cache.set_many(items, ttl=ttl)


async def invalidate_url(cache: Cache, url: str) -> None:
    """Drop every stored response of ``url`` (absolute: ``https://host/path``; the query is
    ignored), for every variant and identity, in every process sharing the store."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError("invalidate_url takes an absolute URL (scheme://host/path)")
    key = url_generation_key(parts.netloc, unquote(parts.path) or "/")
    await _bump(cache, [key], generation_ttl(cache))


async def invalidate_tags(cache: Cache, tags: Iterable[str]) -> None:
    """Drop every stored response that was cached with one of ``tags`` (``cache_response(...,
    tags=...)``), in O(1) store writes per tag."""
    if isinstance(tags, str):
        raise TypeError("tags is a sequence of tag names")
    await _bump(cache, [tag_generation_key(tag) for tag in tags], generation_ttl(cache))


class _Flight:
    """One shared lookup: its result (None until read, or when the read was cancelled).

    Under asyncio (every store that shares reads but files needs it) the event is asyncio's
    own: a shared lookup is on the hot path of every hit, and AnyIO's event costs a runtime
    detection on each creation. Each waiter waits on a future of its own either way, so a
    cancelled waiter never cancels the others."""

    __slots__ = ("done", "result")

    def __init__(self, native: bool) -> None:
        self.done: asyncio.Event | anyio.Event = asyncio.Event() if native else anyio.Event()
        self.result: tuple[Stored | None, Generations | None] | None = None


class ResponseStore:
    """One front end's view of a response namespace: keys, lookups, stores, invalidation."""

    __slots__ = (
        "_flights",
        "_gen_ttl",
        "_log",
        "_parsed",
        "_parsed_size",
        "_secret",
        "_share_reads",
        "cache",
        "policy",
    )

    def __init__(
        self, cache: Cache, policy: HttpPolicy, *, what: str, warn_uncached: bool = True
    ) -> None:
        if not isinstance(cache, Cache):
            raise TypeError("cache must be a namespace (CacheManager.namespace(...))")
        self.cache = cache
        self.policy = policy
        self._secret = credential_secret(cache)
        self._gen_ttl = generation_ttl(cache, policy.ttl)
        self._log = BurstLog(what)
        self._parsed: OrderedDict[str, tuple[str, Stored]] = OrderedDict()  # O(1) eviction
        self._parsed_size = 0
        self._flights: dict[tuple[str, ...], _Flight] = {}
        self._share_reads = not cache.store_in_process
        warn = warn_uncached and not policy.per_credential
        if warn and (what, cache.name) not in _warned:
            _warned.add((what, cache.name))
            _log.warning(
                "%s on namespace %r: requests with credentials (any cookie outside "
                "public_cookies, Authorization, API-key headers) are never cached; give "
                "identity= or per_credential=True to cache them per caller",
                what,
                cache.name,
            )

    def key(
        self,
        *,
        scheme: str,
        host: str,
        path: str,
        raw_path: str | None,
        query: str,
        headers: Headers,
        identity: str | None,
    ) -> str | None:
        return self.policy.request_key(
            scheme=scheme,
            host=host,
            path=path,
            raw_path=raw_path,
            query=query,
            headers=headers,
            identity=identity,
            secret=self._secret,
        )

    @staticmethod
    def generation_keys(host: str, path: str, tags: Sequence[str] = ()) -> list[str]:
        return [url_generation_key(host, path), *(tag_generation_key(tag) for tag in tags)]

    def now(self) -> float:
        return self.cache.clock()

    async def lookup(
        self, key: str, generation_keys: Sequence[str]
    ) -> tuple[Stored | None, Generations | None]:
        """The stored response (None on a miss) and the current generations (None when the
        store failed: then nothing is stored either).

        Concurrent lookups of one key and generations share one read, joined only until it is
        issued: the read starts after every request that shares it arrived, so each sees every
        invalidation that completed before it came (what a read of its own would see). Reads
        of an in-process store are not shared: they cost less than the wait to join them."""
        if not self._share_reads:
            return await self._read(key, generation_keys)
        wanted = (key, *generation_keys)
        flight = self._flights.get(wanted)
        if flight is not None:
            await flight.done.wait()
            if flight.result is not None:
                found, generations = flight.result
                return found, None if generations is None else list(generations)
            return await self._read(key, generation_keys)  # the shared read was cancelled
        native = asyncio._get_running_loop() is not None
        flight = _Flight(native)
        self._flights[wanted] = flight
        try:  # the requests ready to run now join this read
            await (asyncio.sleep(0) if native else anyio.lowlevel.checkpoint())
        finally:
            del self._flights[wanted]
        try:
            flight.result = await self._read(key, generation_keys)
        finally:
            flight.done.set()
        return flight.result

    async def _read(
        self, key: str, generation_keys: Sequence[str]
    ) -> tuple[Stored | None, Generations | None]:
        try:
            values = await self.cache.get_many([key, *generation_keys], MISSING)
        except CacheError as exc:
            self._log.failed(exc)
            return None, None
        tokens = [value if isinstance(value, str) else "" for value in values[1:]]
        found = self._parse(key, values[0])
        if found is not None and list(found.generations) != tokens:
            found = None  # its URL or one of its tags was invalidated since
        return found, list(zip(generation_keys, tokens, strict=True))

    def _parse(self, key: str, entry: object) -> Stored | None:
        parsed = self._parsed
        held = parsed.get(key)
        if held is not None:
            if held[0] == entry:
                return held[1]
            del parsed[key]
            self._parsed_size -= len(held[0])
        found = unpack_entry(entry)
        if found is None or not isinstance(entry, str) or len(entry) > PARSED_BUDGET // 4:
            return found
        self._parsed_size += len(entry)
        while self._parsed_size > PARSED_BUDGET:
            self._parsed_size -= len(parsed.popitem(last=False)[1][0])
        parsed[key] = (entry, found)
        return found

    async def store(
        self,
        key: str,
        generations: Generations,
        status: int,
        headers: Headers,
        body: bytes,
        ttl: float,
    ) -> str:
        """Store a response; returns its ETag (stored or not).

        A generation that does not exist yet (never invalidated, expired or evicted) is created
        first, so every entry records real tokens: were it to record the empty token of a missing
        generation, an invalidation whose token is later evicted would revive it.
        """
        missing = {k: secrets.token_hex(8) for k, token in generations if not token}
        tokens = [token or missing[k] for k, token in generations]
        entry, etag = pack_entry(status, headers, body, generations=tokens, stored_at=self.now())
        try:
            for generation_key, token in missing.items():
                # Only if still absent: a generation written since the lookup is an
                # invalidation that raced this response, which must then not be stored.
                if not await self.cache.add(generation_key, token, ttl=self._gen_ttl):
                    return etag
            await self.cache.set(key, entry, ttl=ttl)
        except CacheError as exc:
            self._log.failed(exc)
        return etag

    async def invalidate(
        self,
        *,
        scheme: str,
        host: str,
        path: str,
        locations: Iterable[str] = (),
        tags: Sequence[str] = (),
    ) -> None:
        """After a successful unsafe request: its URL, the same-origin URLs of its
        ``Location``/``Content-Location`` headers (RFC 9111 4.4) and ``tags``."""
        keys = self.generation_keys(host, path, tags)
        base = f"{scheme}://{host}{path}"
        for location in locations:
            target = urlsplit(urljoin(base, location.strip()))
            if target.netloc.lower() == host.lower():
                keys.append(url_generation_key(host, unquote(target.path) or "/"))
        try:
            await _bump(self.cache, dict.fromkeys(keys), self._gen_ttl)
        except CacheError as exc:
            self._log.failed(exc)


def is_success(status: int) -> bool:
    """A non-error status: what RFC 9111 4.4 calls a successful response."""
    return 200 <= status < 400
