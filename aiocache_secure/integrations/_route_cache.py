"""``cache_response``: the response cache on one Starlette or FastAPI route.

::

    @app.get("/notes/{name}")
    @cache_response(cache=pages, ttl=60, identity=Depends(current_user_id))
    async def note(name: str, user: User) -> Note: ...

The decorator is the endpoint FastAPI calls, so it runs after the route's dependencies: an
``identity`` that is a dependency (``Depends(...)``) is resolved by FastAPI like any other, and
an ``identity`` callable taking the request can read what a dependency left in
``request.state``. The endpoint keeps its signature for FastAPI (the decorator adds a
``Request`` parameter when the endpoint has none, and one for the identity dependency).

What is stored is the *rendered* response: status, headers and body bytes, rendered the way the
route would (its ``response_model``, ``response_class`` and ``status_code``, through FastAPI's
own serializer). A hit builds a ``Response`` from the stored bytes without calling the endpoint.
The rules (credentials, ``Cache-Control``, ``Vary``, cookies, ETags, generations) are the
middleware's: :mod:`._http` and :mod:`._responses`.

On a FastAPI route the key also covers every request header the route declares, in the
endpoint or in any of its dependencies (``x_tenant: str = Header()``): a response that depends
on such a header is never served to a request that sends another value. A declared cookie is
never a public one on that route (it is a credential, keyed by identity). What a dependency
reads from ``request.headers`` directly is not declared: name it in ``vary_headers``. A route
that declares a body parameter is never cached (no key covers the body). What the route's
API-key security schemes (``APIKeyHeader``, ``APIKeyCookie``, ``APIKeyQuery``) read is a
credential there, like ``Authorization``: such requests are cached only under an identity (or
per credential), and a query key never enters the cache key.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..cache import Cache
from ._declared import declared_reads, with_reads
from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SESSION_COOKIES,
    DEFAULT_VARY_HEADERS,
    UNSAFE_METHODS,
    Headers,
    HttpPolicy,
    Stored,
    etag_matches,
    header_values,
    lower_pairs,
    not_modified_headers,
)
from ._responses import ResponseStore, is_success
from .asgi import scope_key, scope_path

try:
    import fastapi.params as fastapi_params
    import fastapi.routing as fastapi_routing
    from fastapi.encoders import jsonable_encoder
except ImportError:  # pragma: no cover - Starlette without FastAPI
    fastapi_params = fastapi_routing = None  # type: ignore[assignment]
    jsonable_encoder = None  # type: ignore[assignment]

# The route as FastAPI (0.165+) serves it from an included router, with that router's own
# dependencies and response settings; None where FastAPI has no such context.
_effective_context: Callable[[Any], Any] | None = getattr(
    fastapi_routing, "_get_scope_effective_route_context", None
)

__all__ = ["cache_response"]

Identity = Callable[[Request], "str | None | Awaitable[str | None]"]
Tags = Sequence[str] | Callable[[Request], Sequence[str]]
_REQUEST: Final = "_aiocache_secure_request"
_IDENTITY: Final = "_aiocache_secure_identity"
_MAX_ROUTES: Final = 1024


def _is_dependency(value: object) -> bool:
    return fastapi_params is not None and isinstance(value, fastapi_params.Depends)


def _respond(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    x_cache: str | None = None,
    head: bool = False,
) -> Response:
    response = Response(content=b"" if head else body, status_code=status)
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if status != 304:
        raw.append((b"content-length", str(len(body)).encode("ascii")))
    if x_cache is not None:
        raw.append((b"x-cache", x_cache.encode("ascii")))
    response.raw_headers = raw
    return response


class _Replayed(Response):
    """A stored response, replayed: its headers come encoded from the store's parsed entry."""

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


def _replay(found: Stored, age: str, *, x_cache: bool, head: bool) -> Response:
    raw = [*found.raw_headers, (b"age", age.encode("ascii"))]
    if x_cache:
        raw.append((b"x-cache", b"HIT"))
    return _Replayed(found.status, raw, b"" if head else found.body)


async def _render(request: Request, result: Any) -> Response:
    """``result`` as the route would render it (FastAPI: its response model and class)."""
    if isinstance(result, Response):
        return result
    route = request.scope.get("route")
    if fastapi_routing is None or not isinstance(route, fastapi_routing.APIRoute):
        encoded = result if jsonable_encoder is None else jsonable_encoder(result)
        return JSONResponse(encoded)
    context = _effective_context(request.scope) if _effective_context is not None else None
    source: Any = context if hasattr(context, "response_class") else route
    content = await fastapi_routing.serialize_response(
        field=source.response_field,
        response_content=result,
        include=source.response_model_include,
        exclude=source.response_model_exclude,
        by_alias=source.response_model_by_alias,
        exclude_unset=source.response_model_exclude_unset,
        exclude_defaults=source.response_model_exclude_defaults,
        exclude_none=source.response_model_exclude_none,
    )
    response_class = source.response_class
    if not isinstance(response_class, type):
        response_class = response_class.value  # FastAPI's DefaultPlaceholder
    status = source.status_code
    response: Response = (
        response_class(content) if status is None else response_class(content, status_code=status)
    )
    return response


def _signature(endpoint: Callable[..., Any], identity: object) -> tuple[inspect.Signature, str]:
    """The signature FastAPI sees, and the name of its ``Request`` parameter."""
    signature = inspect.signature(endpoint)
    try:
        hints = typing.get_type_hints(endpoint, include_extras=True)
    except (NameError, TypeError):
        hints = {}
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]
    request_name = next(
        (
            p.name
            for p in params
            if isinstance(p.annotation, type) and issubclass(p.annotation, Request)
        ),
        None,
    )
    added = []
    if request_name is None:
        request_name = _REQUEST
        added.append(
            inspect.Parameter(_REQUEST, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )
    if _is_dependency(identity):
        added.append(
            inspect.Parameter(
                _IDENTITY, inspect.Parameter.KEYWORD_ONLY, default=identity, annotation=Any
            )
        )
    tail = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return_annotation = hints.get("return", signature.return_annotation)
    return signature.replace(
        parameters=[*head, *added, *tail], return_annotation=return_annotation
    ), request_name


def cache_response(
    cache: Cache,
    *,
    ttl: float = 60.0,
    identity: Identity | Any | None = None,
    tags: Tags | None = None,
    vary_headers: Sequence[str] = DEFAULT_VARY_HEADERS,
    session_cookies: Sequence[str] = DEFAULT_SESSION_COOKIES,
    public_cookies: Sequence[str] = (),
    credential_headers: Sequence[str] = (),
    credential_query: Sequence[str] = (),
    per_credential: bool = False,
    x_cache_header: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache one route's responses: ``@cache_response(cache=ns, ttl=60)`` under the route
    decorator.

    ``identity``: who the caller is, for credentialed requests (same rules as
    :class:`~aiocache_secure.integrations.asgi.CacheMiddleware`): a FastAPI dependency
    (``Depends(current_user_id)``, resolved with the route's other dependencies) or a callable
    taking the request (sync or async), called after the dependencies ran. It returns a string,
    or None for "unknown" (a credentialed request is then not cached, unless
    ``per_credential``). ``tags``: names, or a function of the request, that
    :func:`~aiocache_secure.integrations.asgi.invalidate_tags` invalidates together.

    On a ``POST``/``PUT``/``PATCH``/``DELETE`` route nothing is cached: a successful answer
    invalidates the stored responses of its URL, of its same-origin ``Location`` and
    ``Content-Location``, and of ``tags``.
    """
    if identity is not None and not callable(identity) and not _is_dependency(identity):
        raise TypeError("identity is a dependency (Depends(...)) or a callable of the request")
    if isinstance(tags, str):
        raise TypeError("tags is a sequence of tag names or a function of the request")
    policy = HttpPolicy(
        ttl=ttl,
        vary_headers=tuple(vary_headers),
        session_cookies=tuple(session_cookies),
        public_cookies=tuple(public_cookies),
        credential_headers=tuple(credential_headers),
        per_credential=per_credential,
        max_body_bytes=max_body_bytes,
        credential_query=tuple(credential_query),
    )
    store = ResponseStore(cache, policy, what="cache_response", warn_uncached=identity is None)
    x_cache = x_cache_header
    route_stores: dict[int, tuple[object, ResponseStore | None]] = {}

    def store_for(request: Request) -> ResponseStore | None:
        """The store keyed by what this request's route declares (see the module docstring),
        or None: this route is never cached."""
        route = request.scope.get("route")
        if route is None:
            return store
        context = _effective_context(request.scope) if _effective_context is not None else None
        if getattr(context, "dependant", None) is not None:
            route = context  # an included router's route: its dependant has the router's own
        held = route_stores.get(id(route))
        if held is None or held[0] is not route:
            chosen = with_reads(policy, declared_reads(route))
            routed: ResponseStore | None = store
            if chosen is None:
                routed = None  # the route reads a body: never cached
            elif chosen is not policy:
                routed = ResponseStore(cache, chosen, what="cache_response", warn_uncached=False)
            if len(route_stores) >= _MAX_ROUTES:  # routes are few; bounded all the same
                route_stores.clear()
            held = route_stores[id(route)] = (route, routed)
        return held[1]

    def decorate(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        signature, request_name = _signature(endpoint, identity)
        is_async = inspect.iscoroutinefunction(endpoint)

        async def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if is_async:
                return await endpoint(*args, **kwargs)
            return await run_in_threadpool(endpoint, *args, **kwargs)

        @functools.wraps(endpoint)
        async def cached_endpoint(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.pop(_REQUEST, None)
            if request is None:
                request = kwargs.get(request_name)
            if request is None:  # Starlette calls endpoint(request)
                request = next(a for a in args if isinstance(a, Request))
            who = kwargs.pop(_IDENTITY, None)
            chosen_tags = tuple(tags(request) if callable(tags) else tags or ())
            if request.method in UNSAFE_METHODS:
                response = await _render(request, await call(args, kwargs))
                if is_success(response.status_code):
                    path = scope_path(request.scope)[0]
                    locations = [
                        value
                        for name, value in lower_pairs(response.raw_headers)
                        if name in ("location", "content-location")
                    ]
                    await store.invalidate(
                        scheme=request.url.scheme,
                        host=", ".join(
                            header_values(lower_pairs(request.scope["headers"]), "host")
                        ),
                        path=path,
                        locations=locations,
                        tags=chosen_tags,
                    )
                return response
            if request.method not in ("GET", "HEAD"):
                return await call(args, kwargs)
            if identity is not None and not _is_dependency(identity):
                who = identity(request)
                if inspect.isawaitable(who):
                    who = await who
            headers = lower_pairs(request.scope.get("headers", ()))
            host = ", ".join(header_values(headers, "host"))
            paths = scope_path(request.scope)
            routed = store_for(request)
            if routed is None:
                return await call(args, kwargs)
            key = scope_key(routed, request.scope, headers, who, paths, host)
            if key is None:
                return await call(args, kwargs)
            generation_keys = routed.generation_keys(host, paths[0], chosen_tags)
            found, generations = await routed.lookup(key, generation_keys)
            if_none_match = header_values(headers, "if-none-match")
            hit = "HIT" if x_cache else None
            if found is not None:
                age = found.age(routed.now())
                if if_none_match and etag_matches(if_none_match, found.etag):
                    return _respond(
                        304, [*not_modified_headers(found.headers), ("age", age)], b"", x_cache=hit
                    )
                return _replay(found, age, x_cache=x_cache, head=request.method == "HEAD")
            response = await _render(request, await call(args, kwargs))
            if x_cache:
                response.headers["x-cache"] = "MISS"
            payload = getattr(response, "body", None)
            if (
                request.method == "HEAD"
                or generations is None
                or not isinstance(payload, bytes)
                or len(payload) > routed.policy.max_body_bytes
            ):
                return response
            response_headers = [
                (name, value)
                for name, value in lower_pairs(response.raw_headers)
                if name != "x-cache"
            ]
            keep_for = routed.policy.storable_ttl(response.status_code, response_headers)
            if keep_for is None:
                return response
            etag = await routed.store(
                key, generations, response.status_code, response_headers, payload, keep_for
            )
            if "etag" not in response.headers:
                response.headers["etag"] = etag
            if if_none_match and etag_matches(if_none_match, etag):
                kept = not_modified_headers([*response_headers, ("etag", etag)])
                return _respond(304, kept, b"", x_cache="MISS" if x_cache else None)
            return response

        cached_endpoint.__signature__ = signature  # type: ignore[attr-defined]
        return cached_endpoint

    return decorate
