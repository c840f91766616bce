"""``@cached``: keys, single flight, methods, stale-while-revalidate, failures."""

from __future__ import annotations

import enum
import functools
import inspect
import logging
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from aiocache_secure import (
    MISSING,
    BackendUnavailable,
    Cache,
    CacheManager,
    ConfigurationError,
    Keyring,
    ManualClock,
    MemoryBackend,
    cached,
    set_default_manager,
)
from aiocache_secure.decorator import EARLY_REFRESH
from aiocache_secure.testing import FailingBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manager(clock: ManualClock) -> AsyncIterator[CacheManager]:
    async with CacheManager(keyring=Keyring.generate(), clock=clock) as mgr:
        yield mgr


class Counter:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        return len(self.calls)


# -- hits, misses, values ---------------------------------------------------------------------


async def test_second_call_is_a_hit(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", ttl=60, manager=manager)
    async def double(x: int) -> int:
        count(x)
        return x * 2

    assert await double(21) == 42
    assert await double(21) == 42
    assert len(count.calls) == 1
    assert double.cache.stats.hits == 1


async def test_cached_none_is_a_hit(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def nothing() -> None:
        count()

    assert await nothing() is None
    assert await nothing() is None
    assert len(count.calls) == 1


async def test_entry_expires_with_ttl(manager: CacheManager, clock: ManualClock) -> None:
    count = Counter()

    @cached("n", ttl=10, manager=manager)
    async def value() -> int:
        return count()

    assert await value() == 1
    clock.advance(9)
    assert await value() == 1
    clock.advance(2)
    assert await value() == 2


async def test_exceptions_are_not_cached(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def flaky() -> str:
        if count() == 1:
            raise LookupError("first call fails")
        return "ok"

    with pytest.raises(LookupError):
        await flaky()
    assert await flaky() == "ok"
    assert await flaky() == "ok"
    assert len(count.calls) == 2


async def test_condition_vetoes_storing(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager, condition=lambda result: result["ok"])
    async def fetch(ok: bool) -> dict[str, bool]:
        count()
        return {"ok": ok}

    assert await fetch(False) == {"ok": False}
    assert await fetch(False) == {"ok": False}
    assert len(count.calls) == 2
    await fetch(True)
    await fetch(True)
    assert len(count.calls) == 3


# -- keys ---------------------------------------------------------------------------------------


async def test_bound_arguments_give_one_key(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def f(x: int, y: str = "a", *, z: float = 1.5) -> int:
        return count()

    first = await f(1)
    assert await f(x=1) == first
    assert await f(1, "a") == first
    assert await f(1, y="a", z=1.5) == first
    assert await f(z=1.5, x=1) == first
    assert len(count.calls) == 1
    with pytest.raises(TypeError):
        await f()
    with pytest.raises(TypeError):
        await f(1, x=1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        await f(1, unknown=2)  # type: ignore[call-arg]
    assert len(count.calls) == 1


async def test_variadic_and_positional_only_parameters(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def f(a: int, /, *rest: int, flag: bool = False, **extra: str) -> int:
        return count()

    first = await f(1, 2, 3, x="1", y="2")
    assert await f(1, 2, 3, y="2", x="1", flag=False) == first
    assert await f(1, 2, 3, x="1") != first
    assert await f(1, 2, x="1", y="2") != first
    assert await f(1, 2, 3, x="1", y="2", flag=True) != first
    with pytest.raises(TypeError):
        await f(a=1)  # type: ignore[call-arg]
    assert len(count.calls) == 4


async def test_types_are_tagged(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def f(x: Any) -> int:
        return count()

    values: list[Any] = [1, "1", 1.0, True, None, b"1", [1], (1,), {"1": 1}, {1}, "", 0, False]
    results = [await f(v) for v in values]
    assert len(set(results)) == len(values)
    assert [await f(v) for v in values] == results
    assert len(count.calls) == len(values)


async def test_containers_are_canonical(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def f(x: Any) -> int:
        return count()

    a = await f({"b": [1, {"c": None}], "a": (b"x", 2.5), 3: frozenset({"q", "p"})})
    assert await f({3: {"p", "q"}, "a": (b"x", 2.5), "b": [1, {"c": None}]}) == a
    assert await f({"b": [1, {"c": None}], "a": (b"x", 2.5), 3: {"q"}}) != a
    assert await f(["a,b"]) != await f(["a", "b"])
    assert await f(("s1:a",)) != await f(("s", "a"))


async def test_unsupported_argument_names_the_parameter(manager: CacheManager) -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Thing:
        def __repr__(self) -> str:
            return "secret-repr"

    @cached("n", manager=manager)
    async def f(x: int, payload: Any) -> int:
        return 1

    for bad in (Thing(), Color.RED, [Thing()], {"k": object()}):
        with pytest.raises(TypeError, match="'payload'") as info:
            await f(1, bad)
        assert "secret-repr" not in str(info.value)
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(TypeError, match="'payload'"):
        await f(1, deep)


async def test_two_functions_in_one_namespace_do_not_collide(manager: CacheManager) -> None:
    @cached("shared", manager=manager)
    async def one(x: int) -> str:
        return "one"

    @cached("shared", manager=manager)
    async def two(x: int) -> str:
        return "two"

    assert await one(1) == "one"
    assert await two(1) == "two"
    assert await one(1) == "one"


FACTORY_CALLS = Counter()


class Client:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant


class Base:
    async def label(self, x: int) -> str:
        return f"base{x}"


class Derived(Base):
    @cached("x")
    async def label(self, x: int) -> str:
        return "derived/" + await super().label(x)


def helper(x: int) -> str:
    return f"helper{x}"


async def test_closures_of_one_factory_do_not_share_entries(manager: CacheManager) -> None:
    """Closures made by one factory had one key space (module and qualified name): tenant b
    was served tenant a's cached result."""
    count = FACTORY_CALLS
    count.calls.clear()

    def make(tenant: str, region: tuple[str, int] = ("eu", 1)) -> Any:
        @cached("x", manager=manager)
        async def load(uid: int) -> str:
            FACTORY_CALLS(tenant)  # a global: a free variable holding an object is not keyed
            return f"{tenant}/{region[0]}:{uid}"

        return load

    assert await make("a")(1) == "a/eu:1"
    assert await make("b")(1) == "b/eu:1"
    assert await make("a", ("us", 2))(1) == "a/us:1"
    assert len(count.calls) == 3
    # Keyed by the values they hold: the same tenant's closures share entries, across
    # factory calls and processes.
    assert await make("b")(1) == "b/eu:1"
    assert len(count.calls) == 3


async def test_closures_over_other_objects_have_their_own_key_space(
    manager: CacheManager,
) -> None:
    count = Counter()

    def make(client: Client) -> Any:
        @cached("x", manager=manager)
        async def load(uid: int) -> str:
            count(client.tenant)
            return f"{client.tenant}:{uid}"

        return load

    first, second = make(Client("a")), make(Client("b"))
    assert [await first(1), await second(1), await first(1), await second(1)] == [
        "a:1",
        "b:1",
        "a:1",
        "b:1",
    ]
    assert len(count.calls) == 2
    assert await make(Client("a"))(1) == "a:1"  # another object: nothing says it is the same
    assert len(count.calls) == 3


def test_keys_of_plain_functions_and_methods_are_unchanged() -> None:
    """Module-level functions, methods using super() (a __class__ free variable) and closures
    over module-level functions keep deterministic keys, the same in every process."""

    def make() -> Any:
        @cached("x")
        async def load(uid: int) -> str:
            return helper(uid)

        @cached("x")
        async def via(uid: int) -> str:
            return fetch(uid)

        fetch = helper
        return load, via

    prefix = f"{__name__}:Derived.label("
    assert Derived.label._core._key((Derived(), 1), {}, 1) == f"{prefix}i1;)"
    assert make()[0]._core._key((1,), {}, 0) == make()[0]._core._key((1,), {}, 0)
    assert "|" not in make()[0]._core._key((1,), {}, 0)
    # A free variable assigned only after decoration cannot be keyed: a key space of its own.
    assert make()[1]._core._key((1,), {}, 0) != make()[1]._core._key((1,), {}, 0)


async def test_closure_with_key_template_is_keyed_verbatim(manager: CacheManager) -> None:
    def make(tenant: str) -> Any:
        @cached("x", manager=manager, key="user:{uid}")
        async def load(uid: int) -> str:
            return tenant

        return load

    assert await make("a")(1) == "a"
    assert await make("b")(1) == "a"  # the template owns its key space (documented)


async def test_long_arguments_are_digested(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def f(text: str) -> int:
        return count()

    big = "x" * 20_000
    assert await f(big) == await f(big) == 1
    assert await f(big + "y") == 2


async def test_lone_surrogates_do_not_break_calls(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def f(text: str) -> int:
        return count()

    @cached("n", manager=manager, key="t:{text}")
    async def g(text: str) -> int:
        return count()

    assert await f("\ud800") == await f("\ud800") == 1
    assert await f("\udc00") == 2
    assert await g("\ud800") == await g("\ud800") == 3
    assert await g("x" * 5000) == await g("x" * 5000) == 4


async def test_key_template(manager: CacheManager) -> None:
    @cached("users", manager=manager, key="user:{user_id}")
    async def load(user_id: int, verbose: bool = False) -> dict[str, int]:
        return {"id": user_id}

    await load(42)
    assert await manager.namespace("users").get("user:42") == {"id": 42}
    assert await load.invalidate(user_id=42) is True
    assert await manager.namespace("users").get("user:42", MISSING) is MISSING

    with pytest.raises(ConfigurationError, match="'uid'"):

        @cached("users", manager=manager, key="user:{uid}")
        async def bad(user_id: int) -> None: ...

    with pytest.raises(ConfigurationError):

        @cached("users", manager=manager, key="user:{}")
        async def positional(user_id: int) -> None: ...


async def test_key_callable(manager: CacheManager) -> None:
    @cached("n", manager=manager, key=lambda a, b=0: f"sum:{a + b}")
    async def add(a: int, b: int = 0) -> int:
        return a + b

    assert await add(1, 2) == 3
    assert await manager.namespace("n").get("sum:3") == 3

    @cached("n", manager=manager, key=lambda a: a)
    async def not_str(a: int) -> int:
        return a

    with pytest.raises(TypeError, match="must return a str"):
        await not_str(1)


# -- methods ------------------------------------------------------------------------------------


async def test_methods(manager: CacheManager) -> None:
    count = Counter()

    class Repo:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @cached("m", manager=manager)
        async def scaled(self, x: int) -> int:
            count("instance")
            return x * self.factor

        @cached("m", manager=manager)
        @classmethod
        async def named(cls, x: int) -> str:
            count("class")
            return f"{cls.__name__}{x}"

        @classmethod
        @cached("m", manager=manager)
        async def named_inner(cls, x: int) -> str:
            count("class-inner")
            return f"{cls.__name__}{x}"

        @cached("m", manager=manager)
        @staticmethod
        async def static(x: int) -> int:
            count("static")
            return x + 1

        @staticmethod
        @cached("m", manager=manager)
        async def static_inner(x: int) -> int:
            count("static-inner")
            return x + 2

    a, b = Repo(2), Repo(3)
    # self is not part of the key: instances share entries (use key= to include state).
    assert await a.scaled(5) == 10
    assert await b.scaled(5) == 10
    assert await Repo.scaled(b, 5) == 10
    assert await a.scaled(x=5) == 10
    assert await Repo.named(1) == await a.named(1) == "Repo1"
    assert await Repo.named_inner(1) == await b.named_inner(1) == "Repo1"
    assert await Repo.static(1) == await a.static(1) == 2
    assert await Repo.static_inner(1) == await a.static_inner(1) == 3
    assert sorted(c[0] for c in count.calls) == [
        "class",
        "class-inner",
        "instance",
        "static",
        "static-inner",
    ]
    assert await a.scaled.invalidate(5) is True
    assert await b.scaled(5) == 15
    assert await Repo.named.invalidate(1) is True
    assert a.scaled.cache is Repo.static.cache is manager.namespace("m")


async def test_signature_and_metadata_are_kept(manager: CacheManager) -> None:
    @cached("n", manager=manager)
    async def documented(user_id: int, *, full: bool = False) -> dict[str, int]:
        """Load one user."""
        return {}

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Load one user."
    assert str(inspect.signature(documented)) == (
        "(user_id: 'int', *, full: 'bool' = False) -> 'dict[str, int]'"
    )
    hints = typing.get_type_hints(documented)
    assert hints == {"user_id": int, "full": bool, "return": dict[str, int]}
    assert inspect.iscoroutinefunction(inspect.unwrap(documented))


async def test_bad_decoration(manager: CacheManager) -> None:
    with pytest.raises(TypeError, match="coroutine"):

        @cached("n", manager=manager)  # type: ignore[arg-type]
        def sync(x: int) -> int:
            return x

    with pytest.raises(TypeError, match="ttl"):
        cached("n", stale_ttl=5)
    with pytest.raises(ValueError, match="ttl"):
        cached("n", ttl=-1)
    with pytest.raises(ConfigurationError):
        cached("")
    with pytest.raises(TypeError):
        cached("n", manager="memory://")  # type: ignore[arg-type]


async def test_partials_need_a_key(manager: CacheManager) -> None:
    """Every functools.partial had the key prefix "functools:?(" and no bound argument in its
    key: partial(load, "a") served what partial(load, "b") had cached."""

    async def load(tenant: str, uid: int) -> str:
        return f"{tenant}:{uid}"

    with pytest.raises(TypeError, match="key="):
        cached("n", manager=manager)(functools.partial(load, "a"))
    keyed = cached("n", manager=manager, key="a:{uid}")(functools.partial(load, "a"))
    assert await keyed(uid=1) == "a:1"


# -- namespaces ---------------------------------------------------------------------------------


async def test_default_manager_is_resolved_at_first_call(clock: ManualClock) -> None:
    @cached("lazy", ttl=5)
    async def f() -> int:
        return 7

    async with CacheManager(clock=clock) as mgr:
        set_default_manager(mgr)
        try:
            assert await f() == 7
            assert f.cache is mgr.namespace("lazy", ttl=5)
            assert mgr.namespace("lazy", ttl=5).stats.sets == 1
        finally:
            set_default_manager(None)


async def test_existing_namespace_is_reused(manager: CacheManager) -> None:
    users = manager.namespace("user:42", private=True)

    @cached("user:42", ttl=30, manager=manager)
    async def settings() -> dict[str, str]:
        return {"theme": "dark"}

    assert await settings() == {"theme": "dark"}
    assert settings.cache is users
    assert users.stats.sets == 1


async def test_invalidate_and_refresh(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def value(x: int) -> int:
        return count()

    assert await value(1) == 1
    assert await value.refresh(1) == 2
    assert await value(1) == 2
    assert await value.invalidate(1) is True
    assert await value.invalidate(1) is False
    assert await value(1) == 3
    assert await value(2) == 4


async def test_invalidate_during_a_computation_is_not_overwritten(
    manager: CacheManager,
) -> None:
    started, release = anyio.Event(), anyio.Event()
    count = Counter()

    @cached("n", manager=manager)
    async def slow() -> int:
        started.set()
        await release.wait()
        return count()

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await started.wait()
        assert await slow.invalidate() is False
        release.set()
    assert not await slow.cache.exists(f"{__name__}:{slow.__qualname__}()")
    assert await slow() == 2
    assert await slow() == 2


# -- single flight ------------------------------------------------------------------------------


async def test_thousand_concurrent_callers_one_execution(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def slow(x: int) -> dict[str, int]:
        count()
        await anyio.sleep(0.01)
        return {"x": x}

    results: list[Any] = []

    async def call() -> None:
        results.append(await slow(7))

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(call)
    assert len(count.calls) == 1
    assert results == [{"x": 7}] * 1000


async def own_results(
    fn: Any, unblock: Callable[[], Awaitable[None]], callers: int = 5
) -> list[dict[str, Any]]:
    """What ``callers`` concurrent callers of ``fn()`` got, each having marked its result as a
    request handler would (adding its viewer); ``unblock()`` lets them finish once all wait."""
    results: list[dict[str, Any]] = []

    async def call(viewer: int) -> None:
        result = await fn()
        result["seen_by"].append(viewer)
        results.append(result)

    async with anyio.create_task_group() as tg:
        for viewer in range(callers):
            tg.start_soon(call, viewer)
        await anyio.sleep(0.01)
        await unblock()
    return results


def assert_own(results: list[dict[str, Any]], callers: int = 5) -> None:
    assert len(results) == callers
    assert len({id(r) for r in results}) == callers
    assert [len(r["seen_by"]) for r in results] == [1] * callers


@pytest.mark.parametrize(
    "path", ["stored", "stale_ttl", "condition_false", "store_down", "unserializable"]
)
async def test_callers_sharing_a_computation_get_their_own_result(
    manager: CacheManager, path: str
) -> None:
    """A flight's result reached its callers as one object: one caller's change to it (a
    viewer's e-mail added by a request handler) showed in every other caller's result."""
    if path == "store_down":
        manager.namespace("down", FailingBackend())
    count = Counter()
    release = anyio.Event()
    marker = object()
    options: dict[str, Any] = {
        "stale_ttl": {"ttl": 10, "stale_ttl": 10},
        "condition_false": {"condition": lambda result: False},
    }.get(path, {})

    @cached("down" if path == "store_down" else "n", manager=manager, **options)
    async def profile() -> dict[str, Any]:
        count()
        await release.wait()
        result: dict[str, Any] = {"plan": "pro", "seen_by": []}
        if path == "unserializable":
            result["handle"] = marker
        return result

    async def unblock() -> None:
        release.set()

    assert_own(await own_results(profile, unblock))
    # One execution, except for a result the namespace cannot store: it cannot be copied
    # faithfully either, so the callers after the first compute it themselves.
    assert len(count.calls) == (5 if path == "unserializable" else 1)
    if path in ("stored", "stale_ttl"):
        assert await profile() == {"plan": "pro", "seen_by": []}


async def test_a_shared_result_is_serialized_once(
    manager: CacheManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies are decoded from the bytes that were stored: no second serialization."""
    calls: list[str] = []
    dumps, loads = Cache._dumps, Cache._loads

    def counted_dumps(self: Cache, value: Any) -> bytes:
        calls.append("dumps")
        return dumps(self, value)

    def counted_loads(self: Cache, data: bytes) -> Any:
        calls.append("loads")
        return loads(self, data)

    monkeypatch.setattr(Cache, "_dumps", counted_dumps)
    monkeypatch.setattr(Cache, "_loads", counted_loads)
    release = anyio.Event()

    @cached("n", manager=manager)
    async def profile() -> dict[str, Any]:
        await release.wait()
        return {"seen_by": []}

    async def unblock() -> None:
        calls.clear()
        release.set()

    assert_own(await own_results(profile, unblock))
    assert calls == ["dumps"] + ["loads"] * 4


async def test_callers_sharing_a_value_found_in_the_cache_get_their_own(
    manager: CacheManager,
) -> None:
    """The shared computation found the entry another process stored while it waited for the
    lease: that one decoded value went to every caller."""
    store = LeasingBackend()
    ns = manager.namespace("leased", store, encrypt=True)

    @cached("leased", manager=manager, lock=True, key="profile")
    async def profile() -> dict[str, Any]:
        raise AssertionError("the entry was in the cache")

    async def other_process_stores_and_releases() -> None:
        await ns.set("profile", {"plan": "pro", "seen_by": []})
        store.held.release()

    await store.held.acquire()
    assert_own(await own_results(profile, other_process_stores_and_releases))


async def test_callers_joining_a_background_refresh_get_their_own(
    manager: CacheManager, clock: ManualClock
) -> None:
    count = Counter()
    release = anyio.Event()

    @cached("swr", ttl=10, stale_ttl=50, manager=manager, key="profile")
    async def profile() -> dict[str, Any]:
        if count() > 1:
            await release.wait()
        return {"seen_by": []}

    assert await profile() == {"seen_by": []}
    clock.advance(11)
    assert await profile() == {"seen_by": []}  # stale: one background refresh starts
    await profile.cache.delete("profile")  # gone: later callers join the refresh

    async def unblock() -> None:
        release.set()

    assert_own(await own_results(profile, unblock))
    assert len(count.calls) == 2


async def test_immutable_results_are_shared(manager: CacheManager) -> None:
    release = anyio.Event()

    @cached("n", manager=manager)
    async def pair() -> tuple[str, tuple[int, bytes]]:
        await release.wait()
        return ("a", (1, b"b"))

    results: list[Any] = []

    async def call() -> None:
        results.append(await pair())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
        await anyio.sleep(0.01)
        release.set()
    assert results[0] == ("a", (1, b"b")) and all(r is results[0] for r in results)


async def test_writes_are_metered_as_sets(manager: CacheManager) -> None:
    rows: list[str] = []

    class Hook:
        def record(self, operation: str, namespace: str, outcome: str, duration: float) -> None:
            rows.append(f"{operation}:{outcome}")

    manager.namespace("metered", metrics=Hook())

    @cached("metered", manager=manager)
    async def value() -> list[int]:
        return [1]

    assert await value() == await value() == await value.refresh() == [1]
    assert rows == ["get:miss", "get:miss", "set:ok", "get:hit", "set:ok"]


async def test_refresh_result_is_the_callers_own(manager: CacheManager) -> None:
    @cached("n", manager=manager)
    async def profile() -> dict[str, Any]:
        return {"seen_by": []}

    (await profile.refresh())["seen_by"].append(1)
    mine = await profile()
    mine["seen_by"].append(2)
    assert await profile() == {"seen_by": []}


async def test_concurrent_callers_share_the_exception(manager: CacheManager) -> None:
    count = Counter()

    @cached("n", manager=manager)
    async def broken() -> int:
        count()
        await anyio.sleep(0.01)
        raise KeyError("boom")

    errors: list[BaseException] = []

    async def call() -> None:
        try:
            await broken()
        except KeyError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(call)
    assert len(count.calls) == 1
    assert len(errors) == 50


async def test_cancelling_one_waiter_does_not_cancel_the_others(manager: CacheManager) -> None:
    count = Counter()
    release = anyio.Event()

    @cached("n", manager=manager)
    async def slow() -> str:
        count()
        await release.wait()
        return "done"

    got: list[str] = []
    impatient = anyio.CancelScope()

    async def first() -> None:
        with impatient:
            got.append(await slow())

    async def patient() -> None:
        got.append(await slow())

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.sleep(0.01)
        tg.start_soon(patient)
        await anyio.sleep(0.01)
        impatient.cancel()
        await anyio.sleep(0.01)
        assert impatient.cancelled_caught
        release.set()
    assert got == ["done"]
    assert len(count.calls) == 1
    assert await slow() == "done"
    assert len(count.calls) == 1


async def test_cancelling_the_only_waiter_still_stores(manager: CacheManager) -> None:
    count = Counter()
    release = anyio.Event()

    @cached("n", manager=manager)
    async def slow() -> str:
        count()
        await release.wait()
        return "done"

    with anyio.move_on_after(0.01):
        await slow()
    release.set()
    for _ in range(1000):
        if await slow.cache.exists(slow._core._key((), {}, 0)):
            break
        await anyio.sleep(0.001)
    assert await slow() == "done"
    assert len(count.calls) == 1


# -- stale while revalidate ---------------------------------------------------------------------


async def test_stale_value_served_while_one_refresh_runs(
    manager: CacheManager, clock: ManualClock
) -> None:
    count = Counter()
    release = anyio.Event()

    @cached("swr", ttl=10, stale_ttl=50, manager=manager)
    async def value() -> int:
        n = count()
        if n > 1:
            await release.wait()
        return n

    assert await value() == 1
    clock.advance(10 * (1 - EARLY_REFRESH) - 0.01)
    assert await value() == 1
    assert len(count.calls) == 1
    clock.advance(0.02 + 10 * EARLY_REFRESH)  # past ttl: stale
    assert [await value() for _ in range(20)] == [1] * 20
    await anyio.sleep(0.01)
    assert len(count.calls) == 2  # exactly one background refresh
    release.set()
    for _ in range(1000):
        if await value() == 2:
            break
        await anyio.sleep(0.001)
    assert await value() == 2
    assert len(count.calls) == 2


async def test_stale_entry_past_its_hard_expiry_is_a_miss(
    manager: CacheManager, clock: ManualClock
) -> None:
    count = Counter()

    @cached("swr", ttl=10, stale_ttl=5, manager=manager)
    async def value() -> int:
        return count()

    assert await value() == 1
    clock.advance(16)
    assert await value() == 2
    assert await value() == 2


async def test_early_refresh_is_jittered(manager: CacheManager, clock: ManualClock) -> None:
    manager.namespace("swr", encrypt=True)  # exportable, so the test can read the raw entries

    @cached("swr", ttl=100, stale_ttl=10, manager=manager)
    async def value(x: int) -> int:
        return x

    for x in range(30):
        await value(x)
    entries = [v async for _, v in value.cache.items()]
    fresh_until = {entry[0] - clock() for entry in entries}
    assert len(fresh_until) > 20
    assert all(100 * (1 - EARLY_REFRESH) <= f <= 100 for f in fresh_until)


# -- failures -----------------------------------------------------------------------------------


async def test_backend_failure_falls_back_to_the_function(
    manager: CacheManager, caplog: pytest.LogCaptureFixture
) -> None:
    manager.namespace("down", FailingBackend())
    count = Counter()

    @cached("down", manager=manager)
    async def value(x: int) -> int:
        count()
        return x * 3

    caplog.set_level(logging.WARNING, logger="aiocache_secure")
    assert [await value(2) for _ in range(25)] == [6] * 25
    assert len(count.calls) == 25
    ours = [r for r in caplog.records if r.name == "aiocache_secure" and "@cached" in r.message]
    assert len(ours) == 1
    assert "BackendUnavailable" in ours[0].message
    with pytest.raises(BackendUnavailable):
        await value.invalidate(2)


async def test_unserializable_result_is_returned_not_cached(
    manager: CacheManager, caplog: pytest.LogCaptureFixture
) -> None:
    count = Counter()
    marker = object()

    @cached("n", manager=manager)
    async def value() -> object:
        count()
        return marker

    caplog.set_level(logging.WARNING, logger="aiocache_secure")
    assert await value() is marker
    assert await value() is marker
    assert len(count.calls) == 2
    ours = [r for r in caplog.records if "@cached" in r.message]
    assert len(ours) == 1 and "SerializationError" in ours[0].message


async def test_closed_manager_falls_back(clock: ManualClock) -> None:
    mgr = CacheManager(clock=clock)

    @cached("n", manager=mgr)
    async def value() -> int:
        return 5

    assert await value() == 5
    await mgr.aclose()
    assert await value() == 5

    @cached("never-opened", manager=mgr)
    async def late() -> int:
        return 6

    assert await late() == 6


# -- distributed lease ----------------------------------------------------------------------------


class LeasingBackend(MemoryBackend):
    """A memory store offering the Redis backend's duck-typed ``lease`` (a local lock here)."""

    def __init__(self, *, busy: bool = False) -> None:
        super().__init__()
        self.leases: list[tuple[bytes, float, float]] = []
        self.busy = busy
        self.held = anyio.Lock()

    @asynccontextmanager
    async def lease(self, key: bytes, ttl: float, wait: float = 0.0) -> AsyncIterator[bool]:
        self.leases.append((key, ttl, wait))
        if self.busy:
            yield False
            return
        async with self.held:
            yield True


async def test_lock_uses_the_store_lease(manager: CacheManager) -> None:
    store = LeasingBackend()
    manager.namespace("leased", store, encrypt=True)
    count = Counter()

    @cached("leased", manager=manager, lock=True)
    async def value(user: str) -> int:
        return count()

    assert await value("alice") == await value("alice") == 1
    assert len(store.leases) == 1
    name, ttl, wait = store.leases[0]
    assert name.startswith(b"acs-lease:") and b"alice" not in name and b"leased" not in name
    assert ttl > 0 and wait > 0
    await value("bob")
    assert store.leases[1][0] != name


async def test_lease_not_obtained_still_computes(manager: CacheManager) -> None:
    manager.namespace("busy", LeasingBackend(busy=True), encrypt=True)

    @cached("busy", manager=manager, lock=True)
    async def value() -> str:
        return "computed"

    assert await value() == "computed"
    assert await value.cache.get(f"{__name__}:{value.__qualname__}()") == "computed"


async def test_lock_without_a_lease_falls_back_to_local(manager: CacheManager) -> None:
    @cached("plain", manager=manager, lock=True)
    async def value() -> int:
        return 1

    assert await value() == await value() == 1


async def test_failed_background_refresh_keeps_the_stale_value(
    manager: CacheManager, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    count = Counter()

    @cached("swr", ttl=10, stale_ttl=50, manager=manager)
    async def value() -> int:
        if count() > 1:
            raise ConnectionError("origin down")
        return 1

    caplog.set_level(logging.WARNING, logger="aiocache_secure")
    assert await value() == 1
    clock.advance(11)
    assert await value() == 1
    await anyio.sleep(0.01)
    assert await value() == 1
    await anyio.sleep(0.01)
    assert len(count.calls) == 3  # one refresh per stale read that found none running
    ours = [r for r in caplog.records if "background refresh" in r.message]
    assert len(ours) == 1 and "ConnectionError" in ours[0].message


async def test_shared_exception_traceback_does_not_grow(manager: CacheManager) -> None:
    @cached("n", manager=manager)
    async def broken() -> None:
        await anyio.sleep(0.01)
        raise ValueError("no")

    depths: list[int] = []

    async def call() -> None:
        try:
            await broken()
        except ValueError as exc:
            tb, depth = exc.__traceback__, 0
            while tb is not None:
                tb, depth = tb.tb_next, depth + 1
            depths.append(depth)

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(call)
    assert len(depths) == 100 and max(depths) == min(depths)
