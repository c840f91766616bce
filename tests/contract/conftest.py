"""Fixtures of the contract suite: every backend × every layer stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiocache_secure import Cache, CacheManager, Keyring, ManualClock
from tests.conftest import deselect

STACKS = {
    "plain": {"hash_keys": False, "encrypt": False},
    "hashed": {"hash_keys": True, "encrypt": False},
    "encrypted": {"hash_keys": True, "encrypt": True},
    "encrypted-unhashed": {"hash_keys": False, "encrypt": True},
}


@pytest.fixture(params=list(STACKS))
def stack_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect(
        config,
        items,
        lambda item, params: (
            item.get_closest_marker("encrypting_stacks") is not None
            and not STACKS[params.get("stack_name", "encrypted")]["encrypt"]
        ),
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manager(backend_url: Any, clock: ManualClock) -> AsyncIterator[CacheManager]:
    backend = _resolve(backend_url)
    async with CacheManager(
        keyring=Keyring.generate(), default_backend=backend, clock=clock
    ) as mgr:
        yield mgr
    if not isinstance(backend, str):
        await backend.aclose()  # built here from a factory: the manager does not own it


def _resolve(url: Any) -> Any:
    return url() if callable(url) else url


@pytest.fixture
def make_ns(manager: CacheManager, stack_name: str) -> Callable[..., Cache]:
    def make(name: str = "contract", **policy: Any) -> Cache:
        return manager.namespace(name, **{**STACKS[stack_name], **policy})

    return make


@pytest.fixture
def ns(make_ns: Callable[..., Cache]) -> Cache:
    return make_ns()
