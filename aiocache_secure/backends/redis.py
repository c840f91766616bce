"""The Redis backend: standalone or Cluster, on redis-py's asyncio client (with hiredis).

URLs name the server and nothing else::

    redis://[user:password@]host[:port][/db]        plain TCP (meant for loopback)
    rediss://[user:password@]host[:port][/db]       TLS, certificate and host name verified
    redis+cluster://host:port[,host:port...]        a Redis Cluster (seed nodes; db is always 0)
    rediss+cluster://host:port[,host:port...]       the same over TLS
    redis+sentinel://host:port[,host:port...]/service[/db]   the primary of ``service``, found
                                                    through these sentinels (port 26379 default)
    rediss+sentinel://...                           the same, sentinels and data nodes over TLS

User name and password are percent-decoded; a query string is refused. Everything else is a typed
keyword argument of :class:`RedisBackend` (build the instance yourself and pass it as
``backend=``): ``password=`` (kept out of URLs and logs), ``ca_file=``, ``cert_file=``,
``key_file=``, ``verify_tls=``, ``timeout=``, ``connect_timeout=``, ``max_connections=``,
``auto_batch=``, ``max_batch=``, ``sentinel_username=``, ``sentinel_password=`` (the
sentinels' own credentials; user info in a sentinel URL is the data nodes'), or ``client=`` with
a ready ``redis.asyncio.Redis`` / ``RedisCluster`` built with ``decode_responses=False`` (its
owner closes it).

Nothing connects at construction; the first command does, on the running asyncio loop. Under trio
every operation raises :class:`~aiocache_secure.errors.ConfigurationError`: redis-py needs asyncio.

Security. Plain ``redis://`` to a host that is not loopback, or TLS with ``verify_tls=False``, emits
one ``insecure_config`` audit event (``ConfigurationError`` under ``strict=True``). Neither the
password nor the URL reaches a ``repr``, an exception message or a log line: driver exceptions
become ``BackendUnavailable("redis backend unreachable")`` (or ``BackendTimeout``, or
``BackendUnavailable("redis backend refused the command")`` for server-side errors such as an ACL
``NOPERM``) raised ``from`` the driver's exception. One context manager, :func:`_driver_errors`,
does that conversion around every call, Cluster topology discovery included.

Commands. ``set`` is ``SET key value PX ms`` (``ttl`` in float seconds, at least 1 ms);
``get_many`` is one ``MGET`` (on a cluster one ``MGET`` per hash slot, pipelined per node);
``set_many`` is one non-transactional pipeline; ``delete_prefix`` runs ``SCAN MATCH`` with the
prefix's glob metacharacters escaped and ``UNLINK``\\s each page, on every primary of a cluster
(never ``KEYS``, never ``FLUSHDB``); ``scan`` streams ``SCAN`` pages and ``MGET``\\s each one.

Automatic batching (``auto_batch=True``, the default). When nothing is in flight a ``get``/``set``
goes straight to the server, so a lone caller pays nothing. While a command is in flight, further
single ``get``/``set`` calls queue up and are sent together at the end of the current event-loop
tick (``loop.call_soon``) as one ``MGET`` or one pipeline, at most ``max_batch`` per round trip,
in arrival order. Each caller gets its own reply; a server error on one command fails only that
command's callers, a connection failure only that batch's; a cancelled caller is simply dropped.

Faults. Every operation finishes within ``timeout`` seconds (default 3) with a result,
``BackendTimeout`` or ``BackendUnavailable``; nothing is retried behind the caller's back, and a
later call reconnects, so service resumes as soon as the server is back. A caller cancelled
mid-command never leaves a connection one reply behind: a connection whose exchange did not
complete is disconnected before it returns to the pool (see :mod:`._rediswire`; redis-py, pinned
to ``>=5.0.3,<9`` in ``pyproject.toml``, also disconnects on cancellation in ``read_response``).

On a standalone server, commands bypass redis-py's client object and go straight to redis-py
connections in a pool of our own (:class:`._rediswire.Wire`); a cluster uses ``RedisCluster``.

Sentinel. The same wire, on redis-py's sentinel-managed connections: every new connection asks the
sentinels (``SENTINEL MASTERS``, first answering sentinel wins, ones that report the primary down
are skipped) for the primary's address, within the operation's deadline. When a connection finds
a new address, every older connection is dropped before its next command, and a primary demoted
to replica answers writes with ``READONLY``, which drops that connection too; so after a failover
service resumes on the promoted replica as soon as the sentinels name it.

Lease (distributed lock for stampede protection)::

    async with backend.lease(key, ttl=10.0, wait=2.0) as held:   # held: bool
        if held: ...compute and store...
    token = await backend.acquire_lease(key, ttl, wait=0.0)     # owner token, or None
    await backend.release_lease(key, token)                     # True if it was still ours

``acquire_lease`` is ``SET key token NX PX ttl`` with a random 128-bit token, retried until
``wait`` seconds have passed; ``release_lease`` deletes the key only if it still holds our token
(a compare-and-delete Lua script, run by ``EVALSHA``), so a holder whose lease expired cannot
release somebody else's. ``key`` is stored verbatim: pick one no cache entry uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import os
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import unquote

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import audit
from ..clock import Clock
from ..errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CacheError,
    ClosedError,
    ConfigurationError,
)
from ._rediswire import Wire
from ._tracking import ClusterChannel, InvalidationChannel

__all__ = ["RedisAddress", "RedisBackend", "escape_glob", "from_url", "parse_url"]

DEFAULT_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
_SENTINEL_SCHEMES: Final = {"redis+sentinel": False, "rediss+sentinel": True}
_SERVICE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SCHEMES: Final = {
    "redis": (False, False),
    "rediss": (True, False),
    "redis+cluster": (False, True),
    "rediss+cluster": (True, True),
}
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_GLOB: Final = re.compile(rb"([*?\[\]\\])")
_RELEASE_LUA: Final = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""
_RELEASE_SHA: Final = hashlib.sha1(_RELEASE_LUA.encode(), usedforsecurity=False).hexdigest()
# Compare-and-set on a digest of the stored bytes, so the expected value never travels back.
_CAS_LUA: Final = """
local current = redis.call("GET", KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[1] then
    return 0
end
if ARGV[3] == "" then
    redis.call("SET", KEYS[1], ARGV[2])
else
    redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
end
return 1
"""
_CAS_SHA: Final = hashlib.sha1(_CAS_LUA.encode(), usedforsecurity=False).hexdigest()
_GET: Final = 0
_SET: Final = 1
_MGET: Final = 2


def escape_glob(prefix: bytes) -> bytes:
    """``prefix`` with Redis glob metacharacters (``* ? [ ] \\``) escaped for ``SCAN MATCH``."""
    return _GLOB.sub(rb"\\\1", prefix)


def _px(ttl: float | None) -> int | None:
    if ttl is None or ttl == math.inf:
        return None
    if ttl != ttl:
        raise ValueError("ttl must be a number of seconds or None")
    return max(1, math.ceil(ttl * 1000))


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- URLs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """A parsed Redis URL. Credentials never appear in its ``repr``."""

    tls: bool
    cluster: bool
    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    service: str | None = None  # Sentinel: the monitored primary's name; nodes are sentinels

    @property
    def scheme(self) -> str:
        kind = "+cluster" if self.cluster else "+sentinel" if self.service is not None else ""
        return ("rediss" if self.tls else "redis") + kind


def _parse_node(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError("malformed IPv6 address in a redis URL")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise ConfigurationError("IPv6 addresses in redis URLs go in brackets")
    if not host:
        raise ConfigurationError("a redis URL needs a host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError("the port of a redis URL must be a number in 1..65535")
    return host, int(port_text)


def parse_url(url: str) -> RedisAddress:
    """Parse ``redis[s][+cluster|+sentinel]://`` URLs. Errors never quote the URL (it may hold a
    password)."""
    if not isinstance(url, str):
        raise TypeError("a redis URL is a str")
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _SENTINEL_SCHEMES:
        return _parse_sentinel_url(_SENTINEL_SCHEMES[scheme.lower()], rest)
    kind = _SCHEMES.get(scheme.lower()) if sep else None
    if kind is None:
        raise ConfigurationError(
            "not a redis URL (redis://, rediss://, redis[s]+cluster://, redis[s]+sentinel://)"
        )
    tls, cluster = kind
    username, password, hosts, path = _split_url(rest, "TLS files, timeouts")
    nodes = tuple(_parse_node(part) for part in hosts.split(","))
    if len(nodes) > 1 and not cluster:
        raise ConfigurationError("several hosts are only allowed in redis+cluster:// URLs")
    db = 0
    if path:
        if not path.isdigit() or len(path) > 5:
            raise ConfigurationError("the path of a redis URL is a database number")
        db = int(path)
        if cluster and db != 0:
            raise ConfigurationError("a Redis Cluster has only database 0")
    return RedisAddress(tls, cluster, nodes, db, username, password)


def _split_url(rest: str, options: str) -> tuple[str | None, str | None, str, str]:
    """``(username, password, hosts, path)`` of what follows ``scheme://``; options in a query
    string are refused (``options`` names what goes into keyword arguments instead)."""
    if "?" in rest or "#" in rest:
        raise ConfigurationError(
            f"redis URLs take no query options: pass {options} and the like as keyword "
            "arguments of RedisBackend"
        )
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return username, password, hosts, path


def _parse_sentinel_url(tls: bool, rest: str) -> RedisAddress:
    """``host:port[,host:port...]/service[/db]`` after ``redis[s]+sentinel://``."""
    username, password, hosts, path = _split_url(rest, "sentinel credentials, TLS files")
    nodes = tuple(_parse_node(part, DEFAULT_SENTINEL_PORT) for part in hosts.split(","))
    service, _, db_text = path.partition("/")
    if not _SERVICE.fullmatch(service):
        raise ConfigurationError(
            "a redis+sentinel URL names the monitored service: redis+sentinel://host:port/service"
        )
    db = 0
    if db_text:
        if not db_text.isdigit() or len(db_text) > 5:
            raise ConfigurationError("the path of a redis URL is a database number")
        db = int(db_text)
    return RedisAddress(tls, False, nodes, db, username, password, service)


# -- driver errors -------------------------------------------------------------------------------

# RedisClusterException (topology discovery, slot routing) is not a RedisError.
_DRIVER_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)
_T = TypeVar("_T")


def _convert(exc: BaseException) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return BackendTimeout("redis backend timed out")
    if isinstance(exc, AuthenticationError):
        return BackendUnavailable("redis backend refused the credentials")
    if isinstance(exc, ResponseError):
        return BackendUnavailable("redis backend refused the command")
    return BackendUnavailable("redis backend unreachable")


@contextlib.contextmanager
def _driver_errors() -> Iterator[None]:
    """Driver exceptions leave as the project's own, in one place (httpx's
    ``map_httpcore_exceptions``): their messages carry host:port and more, ours never do."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise _convert(exc) from exc


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, CacheError):
        future.set_exception(exc)
        return
    error = _convert(exc)
    error.__cause__ = exc
    future.set_exception(error)


@dataclass(slots=True)
class _Op:
    kind: int
    key: bytes
    value: bytes | None
    px: int | None
    future: asyncio.Future[Any]


# -- the backend ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TrackingAddress:
    """Where an invalidation channel connects, and as whom (never in a repr)."""

    nodes: tuple[tuple[str, int], ...]
    cluster: bool
    tls: tuple[str | None, str | None, str | None, bool] | None = field(repr=False)
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    connect_timeout: float = 5.0


class RedisBackend:
    """``redis[s][+cluster]://``: a store shared by every namespace that names the same URL.

    Pass ``url`` or a ready ``client`` (not both). Options are keyword-only and validated here;
    nothing connects until the first command.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | RedisCluster | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        verify_tls: bool = True,
        timeout: float = 3.0,
        connect_timeout: float | None = None,
        max_connections: int = 64,
        auto_batch: bool = True,
        max_batch: int = 256,
        scan_count: int = 1000,
        strict: bool = False,
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError("RedisBackend takes a url or a client, not both or neither")
        for name, number in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if number is not None and (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not 0 < number < math.inf
            ):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        for name, count in (
            ("max_connections", max_connections),
            ("max_batch", max_batch),
            ("scan_count", scan_count),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        for name, flag in (("verify_tls", verify_tls), ("auto_batch", auto_batch)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False")
        self._timeout = float(timeout)
        self._batching = auto_batch
        self._max_batch = max_batch
        self._scan_count = scan_count
        self._owned = client is None
        self._tracking: _TrackingAddress | None = None
        self._connect: Callable[[], Any]
        if client is not None:
            unused: tuple[object, ...] = (username, password, ca_file, cert_file, key_file)
            unused += (connect_timeout, sentinel_username, sentinel_password)
            if unused != (None,) * len(unused) or not verify_tls:
                raise ConfigurationError(
                    "connection options belong to the client you pass, not to RedisBackend"
                )
            self._connect = self._adopt(client, max_connections=max_connections, strict=strict)
        else:
            assert url is not None  # noqa: S101 - checked above
            address = parse_url(url)
            self._connect = self._configure(
                address,
                username=username,
                password=password,
                files=(ca_file, cert_file, key_file),
                verify_tls=verify_tls,
                connect_timeout=self._timeout if connect_timeout is None else connect_timeout,
                max_connections=max_connections,
                strict=strict,
                sentinel_auth=(sentinel_username, sentinel_password),
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: Any = None
        self._wire: Wire | None = None
        self._scripts: dict[str, Any] = {}
        self._cluster_ready = False
        self._cluster_lock: asyncio.Lock | None = None
        self._queue: list[_Op] = []
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"RedisBackend(kind={self.kind!r}, auto_batch={self._batching}, closed={self._closed})"
        )

    # -- configuration ----------------------------------------------------------------------------

    def _configure(
        self,
        address: RedisAddress,
        *,
        username: str | None,
        password: str | None,
        files: tuple[str | os.PathLike[str] | None, ...],
        verify_tls: bool,
        connect_timeout: float,
        max_connections: int,
        strict: bool,
        sentinel_auth: tuple[str | None, str | None] = (None, None),
    ) -> Callable[[], Any]:
        self.kind = address.scheme
        self.cluster = address.cluster
        if (username is not None and address.username is not None) or (
            password is not None and address.password is not None
        ):
            raise ConfigurationError("credentials given both in the URL and as arguments")
        if address.service is None and sentinel_auth != (None, None):
            raise ConfigurationError("sentinel credentials need a redis+sentinel:// URL")
        ca_file, cert_file, key_file = (None if f is None else os.fspath(f) for f in files)
        if not address.tls and (
            ca_file is not None or cert_file is not None or key_file is not None or not verify_tls
        ):
            raise ConfigurationError("TLS options need a rediss:// URL")
        if (cert_file is None) != (key_file is None):
            raise ConfigurationError("cert_file and key_file go together")
        for name, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
            if path is not None and not os.path.isfile(path):
                raise ConfigurationError(f"{name} does not name a readable file")
        if not address.tls and not all(_is_loopback(host) for host, _ in address.nodes):
            self._insecure("plaintext_to_remote_host", strict)
        if address.tls and not verify_tls:
            self._insecure("tls_verification_off", strict)

        if address.service is None:
            self._tracking = _TrackingAddress(
                tuple(address.nodes),
                address.cluster,
                (ca_file, cert_file, key_file, verify_tls) if address.tls else None,
                username if username is not None else address.username,
                password if password is not None else address.password,
                connect_timeout,
            )
        options: dict[str, Any] = {
            "username": username if username is not None else address.username,
            "password": password if password is not None else address.password,
            "socket_timeout": self._timeout,
            "socket_connect_timeout": connect_timeout,
            "max_connections": max_connections,
            "decode_responses": False,
        }
        if address.tls:
            options.update(
                ssl_ca_certs=ca_file,
                ssl_certfile=cert_file,
                ssl_keyfile=key_file,
                ssl_cert_reqs="required" if verify_tls else "none",
                ssl_check_hostname=verify_tls,
            )
        if address.cluster:
            nodes = [ClusterNode(host, port) for host, port in address.nodes]
            # Cluster redirections (MOVED/ASK) are followed regardless; this bounds the rest.
            options["retry"] = Retry(NoBackoff(), 1)
            return lambda: RedisCluster(startup_nodes=nodes, ssl=address.tls, **options)
        if address.service is not None:
            return _sentinel_wire(address, options, sentinel_auth, timeout=self._timeout)
        host, port = address.nodes[0]
        del options["max_connections"]
        options.update(
            host=host, port=port, db=address.db, retry=Retry(NoBackoff(), 0), socket_timeout=None
        )
        connection_class = SSLConnection if address.tls else Connection
        return lambda: Wire(
            lambda: connection_class(**options), limit=max_connections, timeout=self._timeout
        )

    def _adopt(
        self, client: Redis | RedisCluster, *, max_connections: int, strict: bool
    ) -> Callable[[], Any]:
        if isinstance(client, RedisCluster):
            self.cluster = True
            kwargs: dict[str, Any] = dict(client.connection_kwargs)
            tls = bool(kwargs.get("ssl")) or "ssl_cert_reqs" in kwargs
            hosts = [node.host for node in client.nodes_manager.startup_nodes.values()]
        elif isinstance(client, Redis):
            self.cluster = False
            pool = client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            tls = "ssl_cert_reqs" in kwargs or "SSL" in pool.connection_class.__name__
            hosts = [str(kwargs.get("host", "localhost"))]
            if kwargs.get("path"):
                hosts = []
        else:
            raise TypeError("client must be a redis.asyncio.Redis or RedisCluster")
        if kwargs.get("decode_responses"):
            raise ConfigurationError("the redis client must use decode_responses=False")
        self.kind = ("rediss" if tls else "redis") + ("+cluster" if self.cluster else "")
        if not tls and not all(_is_loopback(host) for host in hosts):
            self._insecure("plaintext_to_remote_host", strict)
        if tls and str(kwargs.get("ssl_cert_reqs", "required")).lower() in ("none", "0"):
            self._insecure("tls_verification_off", strict)
        if self.cluster:
            return lambda: client
        # The hot path makes its own connections exactly as the client's pool would.
        return lambda: Wire(
            lambda: pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None}),
            limit=max_connections,
            timeout=self._timeout,
        )

    def open_invalidation_channel(
        self, on_invalidate: Callable[[list[bytes] | None], None]
    ) -> InvalidationChannel | ClusterChannel:
        """A new channel reporting changes of this store's keys (see ``_tracking``), for a near
        cache; the caller closes it. ``ConfigurationError`` where there is none to open:
        through sentinels, or on a client passed in."""
        where = self._tracking
        if where is None:
            raise ConfigurationError(
                "near_cache needs a redis://, rediss:// or redis+cluster:// URL "
                "(not sentinels, nor a client passed in)"
            )
        context = None
        if where.tls is not None:
            ca_file, cert_file, key_file, verify = where.tls
            context = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                context.load_cert_chain(cert_file, key_file)
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        if where.cluster:
            return ClusterChannel(
                on_invalidate,
                seeds=where.nodes,
                ssl_context=context,
                username=where.username,
                password=where.password,
                connect_timeout=where.connect_timeout,
            )
        host, port = where.nodes[0]
        return InvalidationChannel(
            on_invalidate,
            host=host,
            port=port,
            ssl_context=context,
            username=where.username,
            password=where.password,
            connect_timeout=where.connect_timeout,
        )

    def _insecure(self, reason: str, strict: bool) -> None:
        if strict:
            raise ConfigurationError(
                "insecure redis transport: use rediss:// with certificate verification "
                "(or strict=False to accept the risk)"
            )
        audit.emit("insecure_config", backend="redis", reason=reason)

    # -- connection -------------------------------------------------------------------------------

    def _bind(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "the redis backend needs asyncio (redis-py is asyncio-only); it cannot run "
                "under trio"
            ) from None
        if loop is self._loop:
            return
        if self._closed:
            raise ClosedError("the redis backend is closed")
        # Connections belong to one event loop: a backend used from a new loop starts afresh.
        engine = self._connect()
        if isinstance(engine, Wire):
            self._wire, self._redis = engine, None
        else:
            self._wire, self._redis = None, engine
        self._scripts = {}
        self._cluster_ready = False
        self._cluster_lock = None
        self._queue = []
        self._loop = loop

    async def _command(self, *command: Any) -> Any:
        """One command on the standalone wire; errors converted."""
        assert self._wire is not None  # noqa: S101 - standalone only
        with _driver_errors():
            reply = (await self._wire.run((command,)))[0]
        if isinstance(reply, Exception):
            raise _convert(reply) from reply
        return reply

    async def _cluster(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` on the cluster client, topology discovery included, within the timeout;
        errors converted. ``call`` is only invoked once discovery succeeded, so a failed
        discovery leaves no coroutine behind unawaited."""
        with _driver_errors():
            async with asyncio.timeout(self._timeout):
                if not self._cluster_ready:
                    await self._initialize_cluster()
                return await call()

    async def _cluster_pipeline(
        self, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True
    ) -> list[Any]:
        pipe = self._redis.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
        return replies

    async def _initialize_cluster(self) -> None:
        # A burst of first commands on a fresh RedisCluster would each start the topology
        # discovery, and a late discovery replaces node objects (and closes their connections)
        # under commands still in flight: discover once, before anything else is sent.
        if self._cluster_lock is None:
            self._cluster_lock = asyncio.Lock()
        async with self._cluster_lock:
            if not self._cluster_ready:
                await self._redis.initialize()
                self._cluster_ready = True

    # -- single-key operations, batched when concurrent ------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        self._bind()
        if self._batching and (self._busy or self._queue):
            result: bytes | None = await self._enqueue(_GET, key, None, None)
            return result
        self._busy += 1
        try:
            if self._wire is not None:
                value: bytes | None = await self._command(b"GET", key)
            else:
                value = await self._cluster(partial(self._redis.get, key))
            return value
        finally:
            self._busy -= 1

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        px = _px(ttl)
        self._bind()
        if self._batching and (self._busy or self._queue):
            await self._enqueue(_SET, key, value, px)
            return
        self._busy += 1
        try:
            if self._wire is not None:
                await self._command(*_set_command(key, value, px))
            else:
                await self._cluster(partial(self._redis.set, key, value, px=px))
        finally:
            self._busy -= 1

    def _enqueue(
        self, kind: int, key: bytes, value: bytes | None, px: int | None
    ) -> asyncio.Future[Any]:
        loop = self._loop
        assert loop is not None  # noqa: S101 - _bind() set it
        future = loop.create_future()
        queue = self._queue
        queue.append(_Op(kind, key, value, px, future))
        if len(queue) >= self._max_batch:
            self._flush()
        elif len(queue) == 1:
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        if self._loop is None:
            for op in batch:
                _fail(op.future, ClosedError("the redis backend is closed"))
            return
        self._busy += 1
        task = self._loop.create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Op]) -> None:
        live = [op for op in batch if not op.future.done()]
        try:
            if not live:
                return
            groups, commands = _plan(live, merge_gets=self._wire is not None)
            if self._wire is not None:
                replies = await self._wire.run(commands)
            else:
                replies = await self._cluster(
                    partial(self._cluster_pipeline, commands, raise_on_error=False)
                )
            for (shape, ops), reply in zip(groups, replies, strict=True):
                if isinstance(reply, Exception):
                    for op in ops:
                        _fail(op.future, reply)
                    continue
                values = reply if shape == _MGET else [None if shape == _SET else reply]
                for op, value in zip(ops, values, strict=True):
                    if not op.future.done():
                        op.future.set_result(value)
        except (*_DRIVER_ERRORS, BackendError) as exc:
            for op in live:
                _fail(op.future, exc)
        except BaseException:
            for op in live:
                op.future.cancel()
            raise
        finally:
            self._busy -= 1

    # -- batches --------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._bind()
        if not keys:
            return []
        if self._wire is not None:
            if self._batching and (self._busy or self._queue) and len(keys) <= self._max_batch:
                # Concurrent with other reads: ride in their round trip (its MGET runs).
                return await _gather_ops([self._enqueue(_GET, key, None, None) for key in keys])
            self._busy += 1
            try:
                values: list[bytes | None] = await self._command(b"MGET", *keys)
            finally:
                self._busy -= 1
            return values
        return await self._cluster(partial(self._cluster_mget, list(keys)))

    async def _cluster_mget(self, keys: list[bytes]) -> list[bytes | None]:
        client = self._redis
        by_slot: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            by_slot.setdefault(client.keyslot(key), []).append(index)
        pipe = client.pipeline()
        for indexes in by_slot.values():
            pipe.execute_command("MGET", *(keys[i] for i in indexes))
        replies = await pipe.execute()
        out: list[bytes | None] = [None] * len(keys)
        for indexes, values in zip(by_slot.values(), replies, strict=True):
            for index, value in zip(indexes, values, strict=True):
                out[index] = value
        return out

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        px = _px(ttl)
        self._bind()
        if not items:
            return
        commands = [_set_command(key, value, px) for key, value in items]
        if self._wire is not None:
            with _driver_errors():
                replies = await self._wire.run(commands)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise _convert(reply) from reply
            return
        await self._cluster(partial(self._cluster_pipeline, commands))

    async def delete(self, key: bytes) -> bool:
        self._bind()
        if self._wire is not None:
            return bool(await self._command(b"UNLINK", key))
        return bool(await self._cluster(partial(self._redis.unlink, key)))

    # -- namespaces: clear and export -------------------------------------------------------------

    async def _pages(self, prefix: bytes) -> AsyncIterator[list[bytes]]:
        """SCAN pages of keys starting with ``prefix``, on every primary of a cluster."""
        pattern = escape_glob(prefix) + b"*"
        scan = ("SCAN", 0, "MATCH", pattern, "COUNT", self._scan_count)
        if self._wire is not None:
            nodes: list[Any] = [None]
        else:
            await self._cluster(self._redis.initialize)
            nodes = list(self._redis.get_primaries())
        for node in nodes:
            cursor = 0
            while True:
                command = (scan[0], cursor, *scan[2:])
                if node is None:
                    raw_cursor, keys = await self._command(*command)
                else:
                    raw_cursor, keys = await self._cluster(partial(node.execute_command, *command))
                cursor = int(raw_cursor)
                keys = [k for k in keys if k.startswith(prefix)]
                if keys:
                    yield keys
                if cursor == 0:
                    break

    async def delete_prefix(self, prefix: bytes) -> int:
        self._bind()
        removed = 0
        async for keys in self._pages(prefix):
            if self._wire is not None:
                removed += int(await self._command(b"UNLINK", *keys))
                continue
            by_slot: dict[int, list[bytes]] = {}
            for key in keys:
                by_slot.setdefault(self._redis.keyslot(key), []).append(key)
            unlinks = [("UNLINK", *group) for group in by_slot.values()]
            removed += sum(
                int(n) for n in await self._cluster(partial(self._cluster_pipeline, unlinks))
            )
        return removed

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        self._bind()
        seen: set[bytes] = set()  # SCAN may return a key twice while the table rehashes
        async for page in self._pages(prefix):
            keys = [k for k in page if k not in seen]
            if not keys:
                continue
            seen.update(keys)
            values = await self.get_many(keys)
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    yield key, value

    # -- lease ------------------------------------------------------------------------------------

    async def acquire_lease(self, key: bytes, ttl: float, *, wait: float = 0.0) -> bytes | None:
        """Take the lease ``key`` for ``ttl`` seconds: the owner token, or None after ``wait``."""
        px = _px(ttl)
        if px is None:
            raise ValueError("a lease needs a finite ttl")
        if not 0 <= wait < math.inf:
            raise ValueError("wait must be a finite number of seconds >= 0")
        self._bind()
        token = secrets.token_hex(16).encode("ascii")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = 0.005
        while True:
            if self._wire is not None:
                taken = await self._command(b"SET", key, token, b"NX", b"PX", px)
            else:
                taken = await self._cluster(partial(self._redis.set, key, token, px=px, nx=True))
            if taken:
                return token
            left = deadline - loop.time()
            if left <= 0:
                return None
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.1)

    async def release_lease(self, key: bytes, token: bytes) -> bool:
        """Release the lease ``key`` if ``token`` still owns it (compare-and-delete)."""
        return bool(await self._eval(_RELEASE_LUA, _RELEASE_SHA, key, token))

    async def _eval(self, lua: str, sha: str, key: bytes, *args: Any) -> Any:
        """Run a one-key Lua script by its SHA, loading it when the server does not know it."""
        self._bind()
        if self._wire is None:
            script = self._scripts.get(sha)
            if script is None:
                script = self._scripts[sha] = self._redis.register_script(lua)
            return await self._cluster(partial(script, keys=[key], args=list(args)))
        try:
            return await self._command(b"EVALSHA", sha, 1, key, *args)
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, NoScriptError):
                raise
        return await self._command(b"EVAL", lua, 1, key, *args)

    # -- atomic updates (AtomicBackend) -----------------------------------------------------------

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        """``SET key value NX [PX ms]``."""
        px = _px(ttl)
        self._bind()
        if self._wire is not None:
            command: tuple[Any, ...] = (b"SET", key, value, b"NX")
            if px is not None:
                command += (b"PX", px)
            return bool(await self._command(*command))
        return bool(await self._cluster(partial(self._redis.set, key, value, px=px, nx=True)))

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        """The value and its SHA-1 (what :meth:`compare_and_set` compares on the server)."""
        value = await self.get(key)
        if value is None:
            return None
        return value, hashlib.sha1(value, usedforsecurity=False).hexdigest().encode("ascii")

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        """Replace ``key`` only while it still holds the value ``token`` was read from (Lua)."""
        px = _px(ttl)
        return bool(
            await self._eval(_CAS_LUA, _CAS_SHA, key, token, value, b"" if px is None else px)
        )

    @contextlib.asynccontextmanager
    async def lease(self, key: bytes, ttl: float, wait: float = 0.0) -> AsyncIterator[bool]:
        """``async with backend.lease(key, ttl, wait) as held``: released on exit if held."""
        token = await self.acquire_lease(key, ttl, wait=wait)
        try:
            yield token is not None
        finally:
            if token is not None:
                # An unreleased lease expires after ttl; failing the caller here helps nobody.
                with contextlib.suppress(BackendError):
                    await self.release_lease(key, token)

    # -- lifecycle --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop, self._loop = self._loop, None
        queued, self._queue = self._queue, []
        for op in queued:
            _fail(op.future, ClosedError("the redis backend is closed"))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # trio: nothing can have been opened
            return
        if loop is not running:
            return  # nothing was opened on this loop (or it is gone with its connections)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._timeout)
        wire, self._wire = self._wire, None
        client, self._redis = self._redis, None
        with _driver_errors():
            async with asyncio.timeout(self._timeout):
                if wire is not None:
                    await wire.aclose()
                if client is not None and self._owned:
                    await client.aclose()


# -- Sentinel ------------------------------------------------------------------------------------


class _SentinelPool(SentinelConnectionPool):
    """Counts changes of the primary's address, so connections to an older one are dropped."""

    generation = 0

    async def get_master_address(self) -> Any:
        before = self.master_address
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        if before is not None and address != before:
            self.generation += 1
        return address


class _SentinelConnection(SentinelManagedConnection):
    generation = -1

    async def connect_to(self, address: Any) -> None:
        # Found by this connection's own discovery, so current (the handshake sends commands).
        self.generation = self.connection_pool.generation
        await super().connect_to(address)  # type: ignore[no-untyped-call]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.generation != self.connection_pool.generation:
            await self.disconnect()
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class _SentinelSSLConnection(_SentinelConnection, SentinelManagedSSLConnection):
    pass


class _SentinelWire(Wire):
    """The standalone wire on sentinel-managed connections; closing it closes the sentinels."""

    __slots__ = ("_sentinel",)

    def __init__(self, sentinel: Sentinel, pool: _SentinelPool, *, limit: int, timeout: float):
        # The connections hold the pool by weak reference: the closure keeps it alive.
        super().__init__(
            lambda: pool.connection_class(**pool.connection_kwargs), limit=limit, timeout=timeout
        )
        self._sentinel = sentinel

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._sentinel.aclose()


def _sentinel_wire(
    address: RedisAddress,
    options: dict[str, Any],
    auth: tuple[str | None, str | None],
    *,
    timeout: float,
) -> Callable[[], Wire]:
    limit = options.pop("max_connections")
    tls = {k: v for k, v in options.items() if k.startswith("ssl_")}
    sentinel_options: dict[str, Any] = {
        "username": auth[0],
        "password": auth[1],
        "socket_timeout": timeout,
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
        **({"ssl": True, **tls} if address.tls else {}),
    }
    options.update(db=address.db, retry=Retry(NoBackoff(), 0), socket_timeout=None)
    connection_class = _SentinelSSLConnection if address.tls else _SentinelConnection
    service = address.service

    def connect() -> Wire:
        sentinel = Sentinel(list(address.nodes), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
        pool = _SentinelPool(service, sentinel, connection_class=connection_class, **options)  # type: ignore[no-untyped-call]
        return _SentinelWire(sentinel, pool, limit=limit, timeout=timeout)

    return connect


async def _gather_ops(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """The results of queued operations, in order. On a failure or a cancellation the others
    are settled too (retrieved or cancelled), so none is left unretrieved."""
    results: list[Any] = []
    try:
        for future in futures:
            results.append(await future)
    except BaseException:
        for other in futures:
            if not other.done():
                other.cancel()
            elif not other.cancelled():
                other.exception()
        raise
    return results


def _set_command(key: bytes, value: bytes, px: int | None) -> tuple[Any, ...]:
    return ("SET", key, value) if px is None else ("SET", key, value, "PX", px)


def _plan(ops: list[_Op], *, merge_gets: bool) -> tuple[list[tuple[int, list[_Op]]], list[Any]]:
    """Commands for a batch, in arrival order: runs of GETs become one MGET when ``merge_gets``
    (not on a cluster, where the keys of a run may live in different slots)."""
    groups: list[tuple[int, list[_Op]]] = []
    commands: list[Any] = []
    run: list[_Op] = []

    def close_run() -> None:
        if run:
            commands.append(("MGET", *(o.key for o in run)))
            groups.append((_MGET, run.copy()))
            run.clear()

    for op in ops:
        if op.kind == _GET:
            if merge_gets:
                run.append(op)
                continue
            commands.append(("GET", op.key))
            groups.append((_GET, [op]))
            continue
        close_run()
        assert op.value is not None  # noqa: S101 - a SET always carries its value
        commands.append(_set_command(op.key, op.value, op.px))
        groups.append((_SET, [op]))
    close_run()
    return groups, commands


def from_url(
    url: str,
    *,
    clock: Clock,
    strict: bool,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    on_evict: Callable[[int], None] | None = None,
) -> RedisBackend:
    """The factory :func:`aiocache_secure.backends.open_backend` calls (Redis keeps time itself)."""
    if max_entries is not None or max_bytes is not None:
        raise ConfigurationError("bound a redis store with its own maxmemory policy")
    return RedisBackend(url, strict=strict)
