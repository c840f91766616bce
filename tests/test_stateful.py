"""Stateful model test: the cache against a dict with TTLs, over every backend and two stacks.

Operations: set / set_many / get / get_many / delete / clear / advance clock / export / tamper /
erase / invalidate_tags (sets carry tags), compared step by step with a plain dict model. Runs
``max_examples=60`` per backend and stack in CI (18 of them, about 4 minutes on 2 slow cores);
more by hand with ``ACS_STATEFUL_EXAMPLES=2000``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from aiocache_secure import MISSING, CacheManager, Keyring, ManualClock

KEYS = st.sampled_from(["a", "b", "c", "ключ", "a:b", ""])
VALUES = (
    st.none() | st.integers(-5, 5) | st.text(max_size=5) | st.lists(st.integers(0, 3), max_size=3)
)
TTLS = st.none() | st.integers(1, 100)
TAGS = st.lists(st.sampled_from(["t1", "t2", "user:42"]), max_size=2, unique=True)
EXAMPLES = int(os.environ.get("ACS_STATEFUL_EXAMPLES", "60"))

STACKS = {
    "plain": {"hash_keys": False, "encrypt": False},
    "encrypted": {"hash_keys": True, "encrypt": True},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the machine drives its own event loop through a blocking portal


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_cache_matches_model(backend_url: Any, stack: str) -> None:
    with start_blocking_portal("asyncio") as portal:
        run_state_machine_as_test(
            lambda: make_machine(portal, backend_url, STACKS[stack]),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


@pytest.mark.parametrize("quota_backend", ["memory", "file"])
def test_bounded_cache_matches_model(request: pytest.FixtureRequest, quota_backend: str) -> None:
    """With ``max_entries``, LRU eviction may turn any entry into a miss, but never into a wrong
    value, and only when the namespace counted an eviction; it never holds more than the quota."""
    url = request.getfixturevalue(f"{quota_backend}_url")
    with start_blocking_portal("asyncio") as portal:
        run_state_machine_as_test(
            lambda: make_machine(
                portal, url, {"hash_keys": True, "encrypt": True, "max_entries": QUOTA}
            ),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )


QUOTA = 3


def make_machine(
    portal: BlockingPortal, backend_url: Any, options: dict[str, Any]
) -> RuleBasedStateMachine:
    bounded = "max_entries" in options

    class CacheModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = ManualClock()
            backend = backend_url() if callable(backend_url) else backend_url
            self.backend = backend  # a Backend built by a factory is ours to close
            self.manager = CacheManager(
                keyring=Keyring.generate(), default_backend=backend, clock=self.clock
            )
            self.ns = self.manager.namespace("model", **options)
            self.private = self.manager.namespace("model:private", private=True)
            self.model: dict[str, tuple[Any, float, frozenset[str]]] = {}
            self.private_model: dict[str, Any] = {}

        def teardown(self) -> None:
            portal.call(self.manager.aclose)
            if not isinstance(self.backend, str):
                portal.call(self.backend.aclose)

        def live(self) -> dict[str, Any]:
            now = self.clock()
            return {k: v for k, (v, exp, _) in self.model.items() if exp > now}

        def check(self, key: str, got: Any) -> None:
            """``got`` is what the model holds, or (bounded namespaces) an evicted miss."""
            expected = self.live().get(key, MISSING)
            if got == expected:
                return
            assert bounded and got is MISSING and self.ns.stats.evictions > 0, (key, got)
            self.model.pop(key)

        @initialize()
        def start(self) -> None:
            assert portal.call(self.ns.clear) == 0

        @rule(key=KEYS, value=VALUES, ttl=TTLS, tags=TAGS)
        def set(self, key: str, value: Any, ttl: int | None, tags: list[str]) -> None:
            portal.call(functools.partial(self.ns.set, key, value, ttl, tags=tags))
            expires = self.clock() + ttl if ttl else float("inf")
            self.model[key] = (value, expires, frozenset(tags))

        @rule(items=st.dictionaries(KEYS, VALUES, max_size=4), ttl=TTLS, tags=TAGS)
        def set_many(self, items: dict[str, Any], ttl: int | None, tags: list[str]) -> None:
            portal.call(functools.partial(self.ns.set_many, items, ttl, tags=tags))
            for key, value in items.items():
                expires = self.clock() + ttl if ttl else float("inf")
                self.model[key] = (value, expires, frozenset(tags))

        @rule(tags=TAGS)
        def invalidate_tags(self, tags: list[str]) -> None:
            portal.call(self.ns.invalidate_tags, tags)
            for key, (_, _, carried) in list(self.model.items()):
                if carried & set(tags):
                    del self.model[key]

        @rule(key=KEYS)
        def exists(self, key: str) -> None:
            found = portal.call(self.ns.exists, key)
            self.check(key, portal.call(self.ns.get, key, MISSING))
            assert found == (key in self.live()) or (bounded and not found)

        @rule(key=KEYS)
        def get(self, key: str) -> None:
            self.check(key, portal.call(self.ns.get, key, MISSING))

        @rule(keys=st.lists(KEYS, max_size=5))
        def get_many(self, keys: list[str]) -> None:
            for key, got in zip(keys, portal.call(self.ns.get_many, keys, MISSING), strict=True):
                self.check(key, got)

        @rule(key=KEYS)
        def delete(self, key: str) -> None:
            deleted = portal.call(self.ns.delete, key)
            if key in self.live() and not bounded:
                assert deleted
            self.model.pop(key, None)

        @rule()
        def clear(self) -> None:
            portal.call(self.ns.clear)
            self.model.clear()

        @rule(seconds=st.sampled_from([0.5, 1, 10, 50.5, 120]))
        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)

        @rule()
        def export(self) -> None:
            async def collect() -> dict[str, Any]:
                return {k: v async for k, v in self.ns.items()}

            exported = portal.call(collect)
            live = self.live()
            if bounded:
                assert len(exported) <= QUOTA
                for key in set(live) - set(exported):
                    self.check(key, MISSING)
                live = self.live()
            assert exported == live

        @rule(key=KEYS)
        def tamper(self, key: str) -> None:
            async def corrupt() -> bool:
                store = self.manager.backend_of("model")
                target = None
                async for storage_key, _ in store.scan(self.ns.key_prefix):
                    target = storage_key
                    break
                if target is None:
                    return False
                await store.set(target, b"\x00garbage\x00", ttl=None)
                return True

            if portal.call(corrupt):
                # Which key was hit is unknown to the model (keys may be hashed): every stored
                # key is re-read; exactly the corrupted one is now a miss, or, if it was a tag's
                # record, the entries carrying that tag.
                live = self.live()
                lost: list[frozenset[str]] = []
                for k in list(self.model):
                    got = portal.call(self.ns.get, k, MISSING)
                    if got is MISSING:
                        if k in live:
                            lost.append(self.model[k][2])
                        self.model.pop(k)
                    else:
                        assert got == live[k]
                assert len(lost) <= 1 or bounded or frozenset.intersection(*lost)

        @rule(key=KEYS, value=VALUES)
        def private_set(self, key: str, value: Any) -> None:
            portal.call(self.private.set, key, value)
            self.private_model[key] = value

        @rule()
        def erase(self) -> None:
            portal.call(self.manager.erase, "model:private")
            self.private_model.clear()

        @invariant()
        def private_matches(self) -> None:
            async def collect() -> dict[str, Any]:
                return {k: v async for k, v in self.private.items()}

            assert portal.call(collect) == self.private_model

    return CacheModel()
