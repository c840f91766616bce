"""The MongoDB backend: one collection, one document per entry, expiry by a TTL index.

URL: ``mongodb://[user:password@]host[:port][,host2...]/[database[.collection]][?options]``
(``mongodb+srv://`` too). The database defaults to ``aiocache_secure`` and so does the collection;
``/db.collection`` names both, MongoDB's own URI convention. The URL is handed to PyMongo's
``AsyncMongoClient`` as it is, so every standard URI option works; as in every MongoDB driver, the
path's database is also the authentication database unless ``authSource`` says otherwise. TLS
files, credentials and timeouts are also typed keyword options of :class:`MongoBackend`, which
also accepts a ready ``AsyncMongoClient`` or Motor ``AsyncIOMotorClient`` as ``client=``.

Documents::

    {_id: <storage key, escaped>, v: BinData(value), exp: ISODate | null}

``_id`` is a string: the storage key with every byte outside ``[A-Za-z0-9_.~:=!-]`` written as
``%XX`` (upper-case hex), so the keys this package produces (``acs1<tag>:<hex>``) are stored as
they are, and any byte string survives. This code is prefix-free, so "keys starting with
``prefix``" is exactly "``_id`` in ``[escape(prefix), escape(prefix) with its last character
incremented)``": :meth:`delete_prefix` and :meth:`scan` are ``_id`` index range scans, never
regular expressions, and a prefix ending in ``0xff`` needs no special case (it ends in ``F``).
Strings rather than ``BinData`` ids: the MongoDB-protocol test server cannot match binary ``_id``
values at all, and strings compare bytewise (simple collation) on every server.

Expiry: a TTL index on ``exp`` (``expireAfterSeconds=0``) is created, idempotently, by the first
operation (constructing a backend does no I/O). MongoDB's TTL monitor runs once a minute, so reads
also drop documents whose ``exp`` has passed. ``exp`` is wall-clock time (``clock``, by default
``time.time``), which must agree with the server's clock: the manager's injected clock is *not*
used here, since a test clock behind real time would have the server delete fresh entries. The
absolute expiry the layers above write into every entry stays authoritative either way.
(nx-27017, the test server, turns a date that ``$set`` writes into an *existing* document into an
ISO string, which its TTL emulation then ignores; reads parse such strings, so expiry holds.)

Writes are ``update_one({_id}, {$set: {v, exp}}, upsert=True)`` (``bulk_write`` of the same,
unordered, for :meth:`set_many`); reads are ``find_one`` by ``_id`` and one ``$in`` query.

Security: the URL and credentials are never kept, logged or shown: errors name the backend kind
only, and driver exceptions are chained (``raise … from``) for debugging. ``tlsInsecure`` /
``tlsAllowInvalidCertificates`` / ``tlsAllowInvalidHostnames`` (URL or keyword), and plaintext to
a host that is not loopback (:mod:`._transport` says what is), raise an ``insecure_config``
audit event, or ``ConfigurationError`` under ``strict=True``. A client passed as ``client=`` is
the caller's: it is neither inspected for transport security nor closed by :meth:`aclose`.

The drivers need asyncio: under trio (or any other runtime) operations raise
``ConfigurationError`` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import string
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote_from_bytes, unquote_to_bytes

from bson.codec_options import CodecOptions
from bson.errors import BSONError
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import (
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    PyMongoError,
    WTimeoutError,
)
from pymongo.uri_parser_shared import _validate_uri

from ..backend import Backend
from ..clock import Clock, system_clock
from ..errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    ValueTooLarge,
)
from ._transport import insecure_transport, plaintext_to_remote

__all__ = ["DEFAULT_COLLECTION", "DEFAULT_DATABASE", "MongoBackend", "from_url"]

DEFAULT_DATABASE: Final = "aiocache_secure"
DEFAULT_COLLECTION: Final = "aiocache_secure"
TTL_INDEX: Final = "aiocache_secure_exp"
_SAFE: Final = "_.~:=!-"  # besides ASCII letters and digits, which quote_from_bytes keeps
_SAFE_BYTES: Final = (string.ascii_letters + string.digits + _SAFE).encode("ascii")
_CODEC: Final = CodecOptions(document_class=dict, tz_aware=False)
_INSECURE_TLS: Final = ("tlsinsecure", "tlsallowinvalidcertificates", "tlsallowinvalidhostnames")
_BAD_DB_CHARS: Final = frozenset('/\\. "$\x00')
_AUTH_MECHANISMS: Final = ("SCRAM-SHA-256", "SCRAM-SHA-1", "MONGODB-X509")


def _revision() -> str:
    return secrets.token_hex(8)


def encode_key(key: bytes) -> str:
    """A storage key as a document ``_id``: prefix-free, printable ASCII, reversible."""
    if not key.translate(None, _SAFE_BYTES):  # the common case: nothing to escape
        return key.decode("ascii")
    return quote_from_bytes(key, safe=_SAFE)


def decode_key(doc_id: object) -> bytes | None:
    """The storage key of ``doc_id``, or None if this backend cannot have written it."""
    if not isinstance(doc_id, str):
        return None
    key = unquote_to_bytes(doc_id)
    # A non-canonical spelling (``%61`` for ``a``) was planted: acting on its decoded key, say
    # deleting it as tampered, would hit the genuine entry instead.
    return key if encode_key(key) == doc_id else None


def id_range(prefix: bytes) -> dict[str, str]:
    low = encode_key(prefix)
    if not low:
        return {"$gte": ""}
    # Escaped ids are printable ASCII, so the last character is below U+007F and increments.
    return {"$gte": low, "$lt": low[:-1] + chr(ord(low[-1]) + 1)}


_NEEDS_ASYNCIO: Final = (
    "the mongodb backend needs asyncio (its driver does); under trio, use a memory or file backend"
)


def _in_trio() -> bool:
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


def _require_asyncio() -> None:
    """Called from async code: the running loop must be asyncio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(_NEEDS_ASYNCIO) from None


@contextlib.contextmanager
def _driver_errors() -> Iterator[None]:
    """Driver exceptions become the project's, at the boundary, without their messages."""
    try:
        yield
    except (PyMongoError, BSONError) as exc:
        raise _converted(exc) from exc


def _converted(exc: BaseException) -> BackendError | ValueTooLarge:
    if isinstance(exc, DocumentTooLarge):
        return ValueTooLarge("the value is too large for a MongoDB document")
    if isinstance(exc, NetworkTimeout | ExecutionTimeout | WTimeoutError):
        return BackendTimeout("the mongodb backend timed out")
    return BackendUnavailable("the mongodb backend failed")


def _as_datetime(exp: object) -> datetime:
    """``exp`` as a naive UTC datetime; anything unreadable counts as long expired."""
    if isinstance(exp, str):
        # nx-27017 (the test server) stores a date written by ``$set`` on an existing document
        # as its ISO string; real MongoDB keeps the BSON date.
        try:
            exp = datetime.fromisoformat(exp)
        except ValueError:
            return datetime.min
    if not isinstance(exp, datetime):
        return datetime.min
    return exp if exp.tzinfo is None else exp.astimezone(UTC).replace(tzinfo=None)


def _check_name(kind: str, name: object, bad: frozenset[str], limit: int) -> str:
    if not isinstance(name, str):
        raise TypeError(f"the mongodb {kind} name must be a str")
    if not name or len(name.encode("utf-8")) > limit or any(ch in bad for ch in name):
        raise ConfigurationError(f"invalid mongodb {kind} name")
    if kind == "collection" and name.startswith("system."):
        raise ConfigurationError("the mongodb collection name must not start with 'system.'")
    return name


def _seconds(name: str, value: float | None, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a positive number of seconds")
    return max(1, round(value * 1000))


class MongoBackend:
    """``mongodb://``: entries in one MongoDB collection.

    Either ``url`` (the manager's way in) or ``client`` (an ``AsyncMongoClient`` or a Motor
    ``AsyncIOMotorClient`` you own and close) names the server. ``database``/``collection`` name
    the collection (URL path ``/db.collection`` otherwise; both default to ``aiocache_secure``).

    Transport and credentials (URL-built clients only): ``tls``, ``tls_ca_file``,
    ``tls_certificate_key_file`` (client certificate, for ``MONGODB-X509`` too),
    ``tls_certificate_key_file_password``, ``tls_allow_invalid_certificates``,
    ``tls_allow_invalid_hostnames``, ``tls_insecure`` (each of the last three raises an
    ``insecure_config`` event), ``username``, ``password``, ``auth_source``, ``auth_mechanism``
    (``SCRAM-SHA-256``, ``SCRAM-SHA-1`` or ``MONGODB-X509``). Keyword options win over the URL's.

    Timeouts, in seconds: ``server_selection_timeout`` (how fast an unreachable server fails,
    default 3), ``connect_timeout`` (default 3), ``socket_timeout`` (one network read or write;
    default 5, so a server that accepts connections but stops answering fails the operation with
    ``BackendTimeout`` instead of hanging it; ``None`` removes the bound, which saves the driver's
    per-operation timer, about 10% of a cached read's client CPU in ``benchmarks/mongo.py``).
    ``batch_size`` bounds the documents :meth:`scan` holds at once. ``create_ttl_index=False``
    skips the index creation (for a user without ``createIndex`` rights; create it yourself).
    """

    __slots__ = (
        "_batch_size",
        "_client",
        "_clock",
        "_coll",
        "_collection_name",
        "_database_name",
        "_owned",
        "_closed",
        "_create_index",
        "_ready",
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        client: object | None = None,
        database: str | None = None,
        collection: str | None = None,
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_certificate_key_file: str | None = None,
        tls_certificate_key_file_password: str | None = None,
        tls_allow_invalid_certificates: bool = False,
        tls_allow_invalid_hostnames: bool = False,
        tls_insecure: bool = False,
        username: str | None = None,
        password: str | None = None,
        auth_source: str | None = None,
        auth_mechanism: str | None = None,
        server_selection_timeout: float = 3.0,
        connect_timeout: float = 3.0,
        socket_timeout: float | None = 5.0,
        batch_size: int = 500,
        create_ttl_index: bool = True,
        strict: bool = False,
        clock: Clock = system_clock,
    ) -> None:
        if _in_trio():
            raise ConfigurationError(_NEEDS_ASYNCIO)
        if (url is None) == (client is None):
            raise ConfigurationError("pass exactly one of url= and client=")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ConfigurationError("batch_size must be a positive int")
        if auth_mechanism is not None and auth_mechanism not in _AUTH_MECHANISMS:
            raise ConfigurationError(f"auth_mechanism must be one of {', '.join(_AUTH_MECHANISMS)}")
        options: dict[str, Any] = {
            "serverSelectionTimeoutMS": _seconds(
                "server_selection_timeout", server_selection_timeout
            ),
            "connectTimeoutMS": _seconds("connect_timeout", connect_timeout),
            "socketTimeoutMS": _seconds("socket_timeout", socket_timeout, optional=True),
        }
        named = {
            "tls": tls,
            "tlsCAFile": tls_ca_file,
            "tlsCertificateKeyFile": tls_certificate_key_file,
            "tlsCertificateKeyFilePassword": tls_certificate_key_file_password,
            "username": username,
            "password": password,
            "authSource": auth_source,
            "authMechanism": auth_mechanism,
        }
        options.update({name: value for name, value in named.items() if value is not None})
        for name, flag in (
            ("tlsAllowInvalidCertificates", tls_allow_invalid_certificates),
            ("tlsAllowInvalidHostnames", tls_allow_invalid_hostnames),
            ("tlsInsecure", tls_insecure),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False")
            if flag:
                options[name] = True

        url_db: str | None = None
        url_coll: str | None = None
        if url is not None:
            url_db, url_coll = self._check_url(url, options, strict=strict)
            self._client: Any = self._open_client(url, options)
            self._owned = True
        else:
            self._client = self._adopt_client(client)
            self._owned = False
        if collection is not None and url_coll is not None and collection != url_coll:
            raise ConfigurationError("the collection is named twice, differently (URL and keyword)")
        if database is not None and url_db is not None and database != url_db:
            raise ConfigurationError("the database is named twice, differently (URL and keyword)")
        self._database_name = _check_name(
            "database", database or url_db or DEFAULT_DATABASE, _BAD_DB_CHARS, 63
        )
        self._collection_name = _check_name(
            "collection", collection or url_coll or DEFAULT_COLLECTION, frozenset("$\x00"), 200
        )
        self._coll: Any = self._client[self._database_name].get_collection(
            self._collection_name, codec_options=_CODEC
        )
        self._batch_size = batch_size
        self._create_index = bool(create_ttl_index)
        self._clock = clock
        self._ready = False
        self._closed = False

    # -- construction ---------------------------------------------------------------------------

    @staticmethod
    def _check_url(
        url: object, options: dict[str, Any], *, strict: bool
    ) -> tuple[str | None, str | None]:
        if not isinstance(url, str):
            raise TypeError("the mongodb URL must be a str")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("mongodb", "mongodb+srv"):
            raise ConfigurationError("a mongodb URL starts with mongodb:// or mongodb+srv://")
        try:
            parsed = _validate_uri(scheme.lower() + "://" + rest, warn=False)
        except (PyMongoError, ValueError, TypeError):
            # The driver's message may quote the URL, credentials included: drop it.
            raise ConfigurationError("invalid mongodb URL") from None
        url_options = {name.lower(): value for name, value in parsed["options"].items()}
        keyword = {name.lower(): value for name, value in options.items()}
        merged = {**url_options, **keyword}

        reasons = [name for name in _INSECURE_TLS if merged.get(name) is True]
        srv = scheme.lower() == "mongodb+srv"
        tls_on = merged.get("tls", merged.get("ssl", srv)) is True
        hosts = [str(host) for host, _port in parsed["nodelist"]] if not srv else [parsed["fqdn"]]
        if plaintext_to_remote(hosts, tls=tls_on):
            reasons.append("plaintext_to_remote_host")
        for reason in reasons:
            insecure_transport("mongodb", reason, strict=strict)
        return parsed["database"], parsed["collection"]

    @staticmethod
    def _open_client(url: str, options: dict[str, Any]) -> AsyncMongoClient[dict[str, Any]]:
        scheme, _, rest = url.partition("://")
        try:
            return AsyncMongoClient(scheme.lower() + "://" + rest, **options)
        except (PyMongoError, ValueError, TypeError):
            raise ConfigurationError("invalid mongodb client options") from None

    @staticmethod
    def _adopt_client(client: object) -> Any:
        if isinstance(client, AsyncMongoClient):
            return client
        module = type(client).__module__
        if module.startswith("motor.") and type(client).__name__ == "AsyncIOMotorClient":
            return client
        raise TypeError("client must be a pymongo AsyncMongoClient or a motor AsyncIOMotorClient")

    def __repr__(self) -> str:
        return (
            f"MongoBackend(database={self._database_name!r}, "
            f"collection={self._collection_name!r}, owned_client={self._owned}, "
            f"closed={self._closed})"
        )

    # -- helpers --------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        _require_asyncio()
        if self._closed:
            raise BackendUnavailable("the mongodb backend is closed")
        if self._create_index:
            with _driver_errors():
                await self._coll.create_index([("exp", 1)], name=TTL_INDEX, expireAfterSeconds=0)
        self._ready = True

    def _expiry(self, ttl: float | None) -> datetime | None:
        if ttl is None:
            return None
        return datetime.fromtimestamp(self._clock() + ttl, UTC).replace(tzinfo=None)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC).replace(tzinfo=None)

    def _value(self, doc: dict[str, Any]) -> bytes | None:
        exp = doc.get("exp")
        if exp is not None and _as_datetime(exp) <= self._now():
            return None
        value = doc.get("v")
        # Anything but binary was not written by this backend: b"" fails every check above.
        return value if isinstance(value, bytes) else b""

    # -- the Backend protocol -------------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        if not self._ready:
            await self._prepare()
        with _driver_errors():
            doc = await self._coll.find_one({"_id": encode_key(key)})
        return None if doc is None else self._value(doc)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        if not self._ready:
            await self._prepare()
        ids = [encode_key(key) for key in keys]
        found: dict[str, bytes | None] = {}
        with _driver_errors():
            async for doc in self._coll.find({"_id": {"$in": list(set(ids))}}):
                found[doc["_id"]] = self._value(doc)
        return [found.get(doc_id) for doc_id in ids]

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        if not self._ready:
            await self._prepare()
        doc_id = encode_key(key)
        update = {"$set": {"v": value, "exp": self._expiry(ttl), "r": _revision()}}
        with _driver_errors():
            try:
                await self._coll.update_one({"_id": doc_id}, update, upsert=True)
            except DuplicateKeyError:
                # Two upserts of one new _id raced; the second now finds the document.
                await self._coll.update_one({"_id": doc_id}, update, upsert=True)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        if not items:
            return
        if not self._ready:
            await self._prepare()
        exp = self._expiry(ttl)
        # Last write wins, as for a loop of set(): an unordered bulk has no order to rely on.
        latest = {encode_key(key): value for key, value in items}
        requests = [
            UpdateOne(
                {"_id": doc_id}, {"$set": {"v": value, "exp": exp, "r": _revision()}}, upsert=True
            )
            for doc_id, value in latest.items()
        ]
        with _driver_errors():
            await self._coll.bulk_write(requests, ordered=False)

    # -- atomic updates (AtomicBackend) -----------------------------------------------------------
    #
    # Every write stamps the document with a random revision ``r``; compare-and-set is an
    # update conditioned on ``{_id, r}``, which MongoDB applies atomically to one document.

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        """Insert; on a duplicate ``_id``, replace only a dead (expired) document."""
        if not self._ready:
            await self._prepare()
        doc_id = encode_key(key)
        doc = {"_id": doc_id, "v": value, "exp": self._expiry(ttl), "r": _revision()}
        with _driver_errors():
            try:
                await self._coll.insert_one(doc)
                return True
            except DuplicateKeyError:
                pass
            current = await self._coll.find_one({"_id": doc_id})
            if current is None or self._value(current) is not None or "r" not in current:
                return False
            result = await self._coll.update_one(
                {"_id": doc_id, "r": current["r"]},
                {"$set": {"v": value, "exp": doc["exp"], "r": doc["r"]}},
            )
        return bool(result.matched_count)

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        if not self._ready:
            await self._prepare()
        with _driver_errors():
            doc = await self._coll.find_one({"_id": encode_key(key)})
        if doc is None:
            return None
        value = self._value(doc)
        revision = doc.get("r")
        if value is None or not isinstance(revision, str):
            return None if value is None else (value, b"")
        return value, revision.encode("ascii")

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        if not token:
            return False
        if not self._ready:
            await self._prepare()
        with _driver_errors():
            result = await self._coll.update_one(
                {"_id": encode_key(key), "r": token.decode("ascii")},
                {"$set": {"v": value, "exp": self._expiry(ttl), "r": _revision()}},
            )
        return bool(result.matched_count)

    async def delete(self, key: bytes) -> bool:
        if not self._ready:
            await self._prepare()
        with _driver_errors():
            result = await self._coll.delete_one({"_id": encode_key(key)})
        return bool(result.deleted_count)

    async def delete_prefix(self, prefix: bytes) -> int:
        if not self._ready:
            await self._prepare()
        with _driver_errors():
            result = await self._coll.delete_many({"_id": id_range(prefix)})
        return int(result.deleted_count)

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        if not self._ready:
            await self._prepare()
        cursor = self._coll.find({"_id": id_range(prefix)}, batch_size=self._batch_size)
        try:
            while True:
                try:
                    doc = await anext(cursor)
                except StopAsyncIteration:
                    return
                except (PyMongoError, BSONError) as exc:
                    raise _converted(exc) from exc
                key = decode_key(doc.get("_id"))
                value = self._value(doc)
                if key is not None and key.startswith(prefix) and value is not None:
                    yield key, value
        finally:
            try:
                await cursor.close()
            except (PyMongoError, BSONError):
                pass  # the cursor dies with its connection anyway

    async def aclose(self) -> None:
        """Closes the client if this backend created it (from a URL); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        if not self._owned:
            return
        with _driver_errors():
            await self._client.close()


def from_url(
    url: str,
    *,
    clock: Clock,
    strict: bool,
    max_entries: int | None,
    max_bytes: int | None,
    on_evict: Callable[[int], None] | None,
) -> Backend:
    """The manager's factory. ``clock`` is deliberately unused: see the module docstring."""
    del clock, on_evict
    if max_entries is not None or max_bytes is not None:
        raise ConfigurationError("max_entries/max_bytes do not apply to the mongodb backend")
    return MongoBackend(url, strict=strict)
