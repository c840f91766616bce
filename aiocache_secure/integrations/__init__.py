"""Web framework integrations.

* :mod:`.asgi` — ``CacheMiddleware``, plain ASGI (Starlette, FastAPI, any ASGI server).
* :mod:`.fastapi` — lifespan and dependency helpers for Starlette/FastAPI.
* :mod:`.aiohttp` — the same response cache as an aiohttp middleware, and app setup helpers.

Each submodule imports its framework only when imported itself.
"""
