"""What a FastAPI route reads from a request, found in its dependant tree (no framework import:
everything is read with ``getattr``, so plain Starlette routes and other apps read as nothing).

The web front ends key responses on it, so that nothing a route depends on is left out of the
key: the headers and cookies it declares as parameters (in its endpoint or any dependency,
header models and aliases included), and what its API-key security schemes (``APIKeyHeader``,
``APIKeyCookie``, ``APIKeyQuery``) read, which is a credential like ``Authorization``.
``cache_response`` reads its own route; ``CacheMiddleware``, which runs before routing, reads
every route of the app it wraps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._http import HttpPolicy

__all__ = ["Reads", "app_reads", "declared_reads", "with_reads"]


def _param_names(field: Any, *, header: bool) -> set[str]:
    """Every request name a FastAPI parameter field may be read under (a header or cookie
    model contributes each of its fields); headers in lower case, with FastAPI's
    underscore-to-hyphen conversion added."""
    infos: list[tuple[str, Any]] = [
        (getattr(field, "name", ""), getattr(field, "field_info", None))
    ]
    annotation = getattr(infos[0][1], "annotation", None)
    if isinstance(annotation, type):
        model_fields = getattr(annotation, "model_fields", None)
        if isinstance(model_fields, dict):
            infos.extend(model_fields.items())
    names: set[str] = set()
    for name, info in infos:
        for candidate in (
            name,
            getattr(info, "alias", None),
            getattr(info, "validation_alias", None),
        ):
            if isinstance(candidate, str) and candidate:
                names.add(candidate)
    if header:
        names = {name.lower() for name in names} | {
            name.lower().replace("_", "-") for name in names
        }
    return names


@dataclasses.dataclass(frozen=True)
class Reads:
    """What a FastAPI route reads from a request besides its path and query: the headers and
    cookies it declares as parameters, those its security schemes (``APIKeyHeader``,
    ``APIKeyCookie``, ``APIKeyQuery``) take credentials from, and whether it reads a body."""

    headers: frozenset[str] = frozenset()
    cookies: frozenset[str] = frozenset()
    credential_headers: frozenset[str] = frozenset()
    credential_cookies: frozenset[str] = frozenset()
    credential_query: frozenset[str] = frozenset()
    body: bool = False

    def __or__(self, other: Reads) -> Reads:
        return Reads(
            headers=self.headers | other.headers,
            cookies=self.cookies | other.cookies,
            credential_headers=self.credential_headers | other.credential_headers,
            credential_cookies=self.credential_cookies | other.credential_cookies,
            credential_query=self.credential_query | other.credential_query,
            body=self.body or other.body,
        )


def _scheme_source(call: object) -> tuple[str, str] | None:
    """``(where, name)`` a FastAPI API-key security scheme reads its key from, else None."""
    model = getattr(call, "model", None)
    where = getattr(getattr(model, "in_", None), "value", getattr(model, "in_", None))
    name = getattr(model, "name", None)
    if isinstance(where, str) and isinstance(name, str) and name:
        return where, name
    return None


def declared_reads(route: object) -> Reads:
    """What ``route`` (its endpoint and every dependency below it) reads, as :class:`Reads`
    (nothing for a plain Starlette route)."""
    headers: set[str] = set()
    cookies: set[str] = set()
    credentials: dict[str, set[str]] = {"header": set(), "cookie": set(), "query": set()}
    body = False
    pending = [getattr(route, "dependant", None)]
    seen: set[int] = set()
    while pending:
        dependant = pending.pop()
        if dependant is None or id(dependant) in seen:
            continue
        seen.add(id(dependant))
        for field in getattr(dependant, "header_params", ()):
            headers |= _param_names(field, header=True)
        for field in getattr(dependant, "cookie_params", ()):
            cookies |= _param_names(field, header=False)
        body = body or bool(getattr(dependant, "body_params", ()))
        source = _scheme_source(getattr(dependant, "call", None))
        if source is not None and source[0] in credentials:
            credentials[source[0]].add(source[1])
        pending.extend(getattr(dependant, "dependencies", ()))
    return Reads(
        headers=frozenset(headers),
        cookies=frozenset(cookies),
        credential_headers=frozenset(name.lower() for name in credentials["header"]),
        credential_cookies=frozenset(credentials["cookie"]),
        credential_query=frozenset(credentials["query"]),
        body=body,
    )


def _included(node: object) -> list[object]:
    """The routes of an included router as FastAPI routes them (each with the dependant that
    includes the router's own dependencies), where FastAPI keeps them apart from the router."""
    candidates = getattr(node, "effective_candidates", None)
    if not callable(candidates) or getattr(node, "original_router", None) is None:
        return []
    try:
        found = candidates()
    except Exception:  # noqa: BLE001 - a private FastAPI API; its original_router still counts
        return []
    return list(found) if isinstance(found, list | tuple) else []


def app_reads(*apps: object, depth: int = 8) -> Reads:
    """What any route of ``apps`` reads (the union of :func:`declared_reads` over their routes,
    mounted and included ones too, each read once), for a front end that runs before routing.
    ``body`` is left False: a front end before routing cannot tell which request reaches such
    a route."""
    total = Reads()
    pending: list[tuple[object, int]] = [(app, 0) for app in apps if app is not None]
    seen: set[int] = set()
    while pending:
        node, level = pending.pop()
        if id(node) in seen or level > depth:
            continue
        seen.add(id(node))
        if getattr(node, "dependant", None) is not None:
            total = total | declared_reads(node)
        routes = getattr(node, "routes", None)
        if isinstance(routes, list | tuple):
            pending.extend((route, level + 1) for route in routes)
        pending.extend((context, level + 1) for context in _included(node))
        for inner in ("router", "app", "original_router"):  # an app's router, a mount's app
            child = getattr(node, inner, None)
            if child is not None and child is not node:
                pending.append((child, level + 1))
    return dataclasses.replace(total, body=False)


def with_reads(policy: HttpPolicy, reads: Reads) -> HttpPolicy | None:
    """``policy`` extended by what a route reads: its declared headers join the key
    (credential headers and ``Cookie`` are keyed by identity already), its declared cookies
    are never public, and what its API-key schemes read is a credential. None when it reads a
    request body: no key covers it, so such a route is never cached."""
    if reads.body:
        return None
    extra_credentials = reads.credential_headers - policy.credential_names - {"cookie"}
    credentials = policy.credential_names | extra_credentials
    vary = reads.headers - credentials - {"cookie"} - set(policy.vary_headers)
    kept_public = reads.cookies | reads.credential_cookies
    public = tuple(name for name in policy.public_cookies if name not in kept_public)
    query = tuple(sorted(reads.credential_query - set(policy.credential_query)))
    if not vary and not extra_credentials and not query and public == policy.public_cookies:
        return policy
    return dataclasses.replace(
        policy,
        vary_headers=(*policy.vary_headers, *sorted(vary)),
        public_cookies=public,
        credential_headers=(*policy.credential_headers, *sorted(extra_credentials)),
        credential_query=(*policy.credential_query, *query),
    )
