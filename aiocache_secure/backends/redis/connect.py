"""From a parsed URL and typed options, or from a ready client, to an engine factory.

Validation happens here, eagerly (TLS files, credentials given twice, the insecure-transport
rule of :mod:`.._transport`); nothing connects. The factory returned builds a fresh engine for
each event loop the backend is used on: connections belong to one loop.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ...errors import ConfigurationError
from .._transport import insecure_transport, plaintext_to_remote
from .cluster_tracking import ClusterChannel
from .engines import ClusterEngine, Engine, StandaloneEngine
from .sentinel import sentinel_wire
from .tracking import ChannelOptions, InvalidationChannel
from .url import RedisAddress
from .wire import Wire

__all__ = [
    "EngineFactory",
    "TrackingAddress",
    "adopt",
    "configure",
    "open_channel",
    "tracking_address",
]

EngineFactory = Callable[[], Engine]


def configure(
    address: RedisAddress,
    *,
    username: str | None,
    password: str | None,
    files: tuple[str | os.PathLike[str] | None, ...],
    verify_tls: bool,
    timeout: float,
    connect_timeout: float,
    max_connections: int,
    strict: bool,
    sentinel_auth: tuple[str | None, str | None],
) -> EngineFactory:
    """The engine factory for ``address`` with these options."""
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
    if plaintext_to_remote((host for host, _ in address.nodes), tls=address.tls):
        insecure_transport("redis", "plaintext_to_remote_host", strict=strict)
    if address.tls and not verify_tls:
        insecure_transport("redis", "tls_verification_off", strict=strict)

    options: dict[str, Any] = {
        "username": username if username is not None else address.username,
        "password": password if password is not None else address.password,
        "socket_timeout": timeout,
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
        return lambda: ClusterEngine(
            RedisCluster(startup_nodes=nodes, ssl=address.tls, **options),
            timeout=timeout,
            owned=True,
        )
    if address.service is not None:
        make_wire = sentinel_wire(address, options, sentinel_auth, timeout=timeout)
        return lambda: StandaloneEngine(make_wire())
    host, port = address.nodes[0]
    del options["max_connections"]
    options.update(
        host=host, port=port, db=address.db, retry=Retry(NoBackoff(), 0), socket_timeout=None
    )
    connection_class = SSLConnection if address.tls else Connection
    return lambda: StandaloneEngine(
        Wire(lambda: connection_class(**options), limit=max_connections, timeout=timeout)
    )


def adopt(
    client: Redis | RedisCluster, *, max_connections: int, timeout: float, strict: bool
) -> tuple[str, bool, EngineFactory]:
    """``(kind, cluster, engine factory)`` for a client the application built (and closes)."""
    if isinstance(client, RedisCluster):
        cluster = True
        kwargs: dict[str, Any] = dict(client.connection_kwargs)
        tls = bool(kwargs.get("ssl")) or "ssl_cert_reqs" in kwargs
        hosts = [node.host for node in client.nodes_manager.startup_nodes.values()]
    elif isinstance(client, Redis):
        cluster = False
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        tls = "ssl_cert_reqs" in kwargs or "SSL" in pool.connection_class.__name__
        # A unix socket (``path=``) is local by construction, whatever its file name.
        hosts = [] if kwargs.get("path") else [str(kwargs.get("host", "localhost"))]
    else:
        raise TypeError("client must be a redis.asyncio.Redis or RedisCluster")
    if kwargs.get("decode_responses"):
        raise ConfigurationError("the redis client must use decode_responses=False")
    kind = ("rediss" if tls else "redis") + ("+cluster" if cluster else "")
    if plaintext_to_remote(hosts, tls=tls):
        insecure_transport("redis", "plaintext_to_remote_host", strict=strict)
    if tls and str(kwargs.get("ssl_cert_reqs", "required")).lower() in ("none", "0"):
        insecure_transport("redis", "tls_verification_off", strict=strict)
    if isinstance(client, RedisCluster):
        return kind, cluster, lambda: ClusterEngine(client, timeout=timeout, owned=False)
    # The hot path makes its own connections exactly as the client's pool would.
    return (
        kind,
        cluster,
        lambda: StandaloneEngine(
            Wire(
                lambda: pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None}),
                limit=max_connections,
                timeout=timeout,
            )
        ),
    )


@dataclass(frozen=True, slots=True)
class TrackingAddress:
    """Where a near cache's invalidation channel connects, and as whom (never in a repr)."""

    nodes: tuple[tuple[str, int], ...]
    cluster: bool
    tls: tuple[str | None, str | None, str | None, bool] | None = field(repr=False)
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    connect_timeout: float = 5.0


def tracking_address(
    address: RedisAddress,
    *,
    username: str | None,
    password: str | None,
    files: tuple[str | os.PathLike[str] | None, ...],
    verify_tls: bool,
    connect_timeout: float,
) -> TrackingAddress | None:
    """Where invalidation channels for ``address`` connect (the options :func:`configure`
    validated); None through sentinels, which have none yet."""
    if address.service is not None:
        return None
    ca_file, cert_file, key_file = (None if f is None else os.fspath(f) for f in files)
    return TrackingAddress(
        tuple(address.nodes),
        address.cluster,
        (ca_file, cert_file, key_file, verify_tls) if address.tls else None,
        username if username is not None else address.username,
        password if password is not None else address.password,
        connect_timeout,
    )


def open_channel(
    where: TrackingAddress, on_invalidate: Callable[[list[bytes] | None], None]
) -> InvalidationChannel | ClusterChannel:
    """A new invalidation channel to ``where`` (one per primary on a cluster)."""
    context = None
    if where.tls is not None:
        ca_file, cert_file, key_file, verify = where.tls
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    options = ChannelOptions(
        ssl_context=context,
        username=where.username,
        password=where.password,
        connect_timeout=where.connect_timeout,
    )
    if where.cluster:
        return ClusterChannel(on_invalidate, seeds=where.nodes, options=options)
    host, port = where.nodes[0]
    return InvalidationChannel(on_invalidate, host=host, port=port, options=options)
