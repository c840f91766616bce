"""The insecure-transport rule, defined once for every backend and for ``check-config``.

A connection that cannot leave this machine may go without TLS; any other must use TLS with its
certificate verified. A breach of the rule is one ``insecure_config`` audit event per reason, or a
``ConfigurationError`` under ``strict=True``.

What counts as loopback is decided for safety: only what cannot reach another machine, whatever
the resolver, ``/etc/hosts`` or DNS say.

- IP literals in ``127.0.0.0/8`` and ``::1`` (IPv6 literals with or without brackets, and
  IPv4-mapped ``::ffff:127.x.x.x``, on every Python version);
- ``localhost`` in any letter case (RFC 6761 reserves it for loopback, resolvers treat it so);
- unix domain socket paths (absolute, ending in ``.sock``, the form MongoDB URLs use);

and nothing else. Names that resolve to loopback only on some systems (``ip6-localhost``,
``ip6-loopback``, ``localhost.localdomain``), a trailing-dot ``localhost.``, subdomains of
``localhost``, names that merely start with ``localhost`` or ``127.`` (``localhost.example.com``,
``127.0.0.1.nip.io``), the unspecified addresses ``0.0.0.0`` and ``::``, and an empty host are
not loopback: any of them could be sent to a resolver that answers with an address elsewhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from .. import audit
from ..errors import ConfigurationError

__all__ = ["host_of", "insecure_transport", "is_loopback", "plaintext_to_remote"]

_LOOPBACK_NAME: Final = "localhost"


def is_loopback(host: str) -> bool:
    """True only if a connection to ``host`` cannot leave this machine (see the module doc)."""
    if not isinstance(host, str):
        raise TypeError("a host is a str")
    if host.startswith("/"):
        return host.endswith(".sock")
    if host.lower() == _LOOPBACK_NAME:
        return True
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return False
    if not isinstance(address, ipaddress.IPv6Address):
        return not bracketed and address.is_loopback  # brackets are for IPv6 only
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def host_of(node: str) -> str:
    """The host of ``host[:port]`` or ``[v6]:port`` (user info already removed)."""
    if node.startswith("["):
        host, sep, _ = node[1:].partition("]")
        return host if sep else node
    host, _, port = node.partition(":")
    return node if ":" in port else host  # a bare IPv6 literal has several colons


def plaintext_to_remote(hosts: Iterable[str], *, tls: bool) -> bool:
    """True if a connection without TLS would reach one of ``hosts`` off this machine."""
    return not tls and not all(is_loopback(host) for host in hosts)


def insecure_transport(backend: str, reason: str, *, strict: bool) -> None:
    """The one answer to an insecure transport: ``ConfigurationError`` under ``strict``, else
    an ``insecure_config`` audit event. Neither carries a host, a URL or a credential."""
    if strict:
        raise ConfigurationError(
            f"insecure {backend} transport ({reason}): strict mode refuses it; use TLS with "
            "certificate verification (or strict=False to accept the risk)"
        )
    audit.emit("insecure_config", backend=backend, reason=reason)
