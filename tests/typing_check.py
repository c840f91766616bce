"""Checked by mypy (tests/test_typing.py), never run: @cached keeps the signature it decorates."""

from __future__ import annotations

from typing import assert_type

from aiocache_secure import MISSING, Cache, cached


@cached("typing", ttl=5)
async def load(user_id: int, *, full: bool = False) -> dict[str, int]:
    return {"id": user_id}


class Repo:
    @cached("typing")
    async def find(self, name: str) -> list[str]:
        return [name]

    @staticmethod
    @cached("typing")
    async def static(x: int) -> int:
        return x


async def uses() -> None:
    assert_type(await load(1), dict[str, int])
    assert_type(await load(1, full=True), dict[str, int])
    assert_type(await load.invalidate(1), bool)
    assert_type(await load.refresh(user_id=1), dict[str, int])
    assert_type(load.cache, Cache)
    assert_type(await Repo().find("a"), list[str])
    assert_type(await Repo().find.invalidate("a"), bool)
    assert_type(await Repo.find(Repo(), "a"), list[str])
    assert_type(await Repo.static(1), int)
    await load("1")  # type: ignore[arg-type]
    await load(1, fast=True)  # type: ignore[call-arg]
    await Repo().find(1)  # type: ignore[arg-type]


async def narrows(cache: Cache) -> int:
    value = await cache.get("k", default=MISSING)
    if value is not MISSING:
        found: int = value  # narrowed: no longer "Any | MISSING"
        return found
    return 0


async def lifetimes(cache: Cache) -> None:
    from datetime import timedelta

    await cache.set("k", 1, ttl=timedelta(minutes=5))
    await cache.expire("k", timedelta(seconds=30))
