"""Redis URLs: the scheme says standalone, Cluster or Sentinel and plain or TLS; the rest names
the server, a database number and credentials, nothing else (a query string is refused).

Errors never quote the URL: it may hold a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from ...errors import ConfigurationError

__all__ = ["DEFAULT_PORT", "DEFAULT_SENTINEL_PORT", "RedisAddress", "parse_url"]

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
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
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
    db = _db(path)
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
    return RedisAddress(tls, False, nodes, _db(db_text), username, password, service)


def _db(text: str) -> int:
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ConfigurationError("the path of a redis URL is a database number")
    return int(text)
