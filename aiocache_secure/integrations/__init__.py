"""Web framework integrations.

* :mod:`.fastapi` — ``cache_response`` per route, lifespan and dependency helpers for
  Starlette/FastAPI.
* :mod:`.aiohttp` — ``cache_response`` per handler, the same response cache as a middleware,
  and app setup helpers.
* :mod:`.asgi` — ``CacheMiddleware``, plain ASGI (Starlette, FastAPI, any ASGI server).

Each submodule imports its framework only when imported itself.
"""
