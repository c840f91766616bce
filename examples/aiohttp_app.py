"""aiohttp with aiocache_secure: ``@cached`` data, a response cache, per-user private namespaces.

Run it (needs the ``web`` extra: ``pip install 'aiocache_secure[web]'``)::

    python examples/aiohttp_app.py            # serves http://127.0.0.1:8000

    curl -i http://127.0.0.1:8000/profiles/7                       # X-Cache: MISS, then HIT
    curl -i -X POST -H 'Authorization: Bearer alice' 'http://127.0.0.1:8000/me/notes?text=hi'
    curl -i -H 'Authorization: Bearer alice' http://127.0.0.1:8000/me/notes   # never shared
    curl -i -X DELETE -H 'Authorization: Bearer alice' http://127.0.0.1:8000/me  # crypto-shred

Everything lives in memory with a freshly generated keyring: no other server is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from aiocache_secure import Cache, CacheManager, Keyring, cached
from aiocache_secure.integrations.aiohttp import cache_middleware, namespace, setup

manager = CacheManager(keyring=Keyring.generate(), default_backend="memory://")


@cached("profiles", ttl=60, manager=manager)
async def load_profile(user_id: int) -> dict[str, Any]:
    """Pretend to be a slow database query: concurrent callers share one execution."""
    await asyncio.sleep(0.2)
    return {"id": user_id, "name": f"user {user_id}"}


def current_user(request: web.Request) -> str:
    # Demo authentication only: "Bearer <name>" is taken at its word.
    scheme, _, name = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not name.isalnum():
        raise web.HTTPUnauthorized(text="send 'Authorization: Bearer <name>'")
    return name


def user_notes(request: web.Request) -> Cache:
    # One private namespace per user: its own data key, which DELETE /me destroys.
    return namespace(request, f"user:{current_user(request)}", private=True)


async def profile(request: web.Request) -> web.Response:
    try:
        user_id = int(request.match_info["user_id"])
    except ValueError:
        raise web.HTTPBadRequest(text="user_id must be an integer") from None
    return web.json_response(await load_profile(user_id))


async def add_note(request: web.Request) -> web.Response:
    notes = user_notes(request)
    saved: list[str] = await notes.get("notes", []) or []
    saved.append(request.query.get("text", ""))
    await notes.set("notes", saved, ttl=3600)
    return web.json_response(saved)


async def list_notes(request: web.Request) -> web.Response:
    return web.json_response(await user_notes(request).get("notes", []) or [])


async def forget_me(request: web.Request) -> web.Response:
    erased = await manager.erase(f"user:{current_user(request)}")
    return web.json_response({"erased": erased})


def make_app() -> web.Application:
    pages = manager.namespace("pages", ttl=30)
    # GET /profiles/* responses are cached for 30 s; requests with credentials (Authorization,
    # any cookie, API-key headers) are never served from (or stored in) this shared cache, and a
    # successful POST/PUT/PATCH/DELETE drops the stored responses of its URL.
    # (@cache_response(cache=pages, ttl=30) on one handler does the same per route.)
    cache = cache_middleware(pages, ttl=30, include=["/profiles/*"], x_cache_header=True)
    app = web.Application(middlewares=[cache])
    setup(app, manager)
    app.router.add_get("/profiles/{user_id}", profile)
    app.router.add_post("/me/notes", add_note)
    app.router.add_get("/me/notes", list_notes)
    app.router.add_delete("/me", forget_me)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=8000)
