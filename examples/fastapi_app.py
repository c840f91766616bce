"""FastAPI with aiocache_secure: ``@cached`` data, a response cache, per-user private namespaces.

Run it (needs the ``web`` extra: ``pip install 'aiocache_secure[web]'``)::

    python examples/fastapi_app.py            # serves http://127.0.0.1:8000

    curl -i http://127.0.0.1:8000/profiles/7                       # X-Cache: MISS, then HIT
    curl -i -X PUT http://127.0.0.1:8000/profiles/7                # the next GET is a MISS
    curl -i -X POST -H 'Authorization: Bearer alice' 'http://127.0.0.1:8000/me/notes?text=hi'
    curl -i -H 'Authorization: Bearer alice' http://127.0.0.1:8000/me/notes   # never shared
    curl -i -X DELETE -H 'Authorization: Bearer alice' http://127.0.0.1:8000/me  # crypto-shred

Everything lives in memory with a freshly generated keyring: no other server is needed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request

from aiocache_secure import Cache, CacheManager, Keyring, cached
from aiocache_secure.integrations.fastapi import (
    cache_lifespan,
    cache_response,
    namespace_dependency,
)

manager = CacheManager(keyring=Keyring.generate(), default_backend="memory://")
app = FastAPI(lifespan=cache_lifespan(manager))
# Rendered responses of the @cache_response routes; max_ttl bounds every entry here (and the
# generation keys that invalidate them).
pages = manager.namespace("pages", max_ttl=300)


@cached("profiles", ttl=60, manager=manager)
async def load_profile(user_id: int) -> dict[str, Any]:
    """Pretend to be a slow database query: concurrent callers share one execution."""
    await asyncio.sleep(0.2)
    return {"id": user_id, "name": f"user {user_id}"}


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    # Demo authentication only: "Bearer <name>" is taken at its word.
    scheme, _, name = authorization.partition(" ")
    if scheme.lower() != "bearer" or not name.isalnum():
        raise HTTPException(status_code=401, detail="send 'Authorization: Bearer <name>'")
    return name


def user_namespace(request: Request) -> str:
    return f"user:{current_user(request.headers.get('authorization', ''))}"


User = Annotated[str, Depends(current_user)]
# One private namespace per user: its own data key, which DELETE /me destroys.
UserCache = Annotated[Cache, Depends(namespace_dependency(user_namespace, private=True))]


@app.get("/profiles/{user_id}")
@cache_response(cache=pages, ttl=30, x_cache_header=True)
async def profile(user_id: int) -> dict[str, Any]:
    # Served from the stored response bytes on a hit; a request with credentials is not cached
    # here (no identity=), so one caller never sees another's answer.
    return await load_profile(user_id)


@app.put("/profiles/{user_id}")
@cache_response(cache=pages)
async def refresh_profile(user_id: int) -> dict[str, Any]:
    # A successful PUT drops every stored response of GET /profiles/{user_id}.
    return await load_profile.refresh(user_id)


@app.post("/me/notes")
async def add_note(user: User, notes: UserCache, text: str) -> list[str]:
    saved: list[str] = await notes.get("notes", []) or []
    saved.append(text)
    await notes.set("notes", saved, ttl=3600)
    return saved


@app.get("/me/notes")
async def list_notes(user: User, notes: UserCache) -> list[str]:
    found: list[str] = await notes.get("notes", []) or []
    return found


@app.delete("/me")
async def forget_me(user: User) -> dict[str, bool]:
    return {"erased": await manager.erase(f"user:{user}")}


if __name__ == "__main__":
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("this example needs uvicorn: pip install 'aiocache_secure[web]'") from None
    uvicorn.run(app, host="127.0.0.1", port=8000)
