"""Shared fixtures: the backend matrix of the contract suite, and the servers behind it.

``BACKENDS`` lists every backend the contract suite runs against. A backend joins the suite by
adding its name here and a fixture ``<name>_url`` (a URL or Backend factory) in a plugin module.
Backends whose drivers need asyncio are deselected (not skipped) for the trio runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest_plugins: list[str] = [
    "tests.plugins.file",
    "tests.plugins.redis",
    "tests.plugins.mongo",
    "tests.plugins.processes",
]

BACKENDS = [
    "memory", "file", "redis", "redis-cluster", "redis-tls", "redis-sentinel", "mongo",
    "mongo-motor",
]  # fmt: skip
ASYNCIO_ONLY: set[str] = {
    "redis", "redis-cluster", "redis-tls", "redis-sentinel", "mongo", "mongo-motor",
}  # fmt: skip


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def deselect(
    config: pytest.Config,
    items: list[pytest.Item],
    drop_if: Callable[[pytest.Item, dict[str, Any]], bool],
) -> None:
    """Deselect (not skip) the items whose parametrization ``drop_if`` rejects."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (drop if drop_if(item, params) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _not_applicable(item: pytest.Item, params: dict[str, Any]) -> bool:
    """``@pytest.mark.not_for(reason, name=(values...))``: the parametrizations a test does not
    apply to are not run at all (a skip would look like a backend that was not tested)."""
    marker = item.get_closest_marker("not_for")
    return marker is not None and any(
        params.get(name) in values for name, values in marker.kwargs.items()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect(
        config,
        items,
        lambda item, params: (
            (params.get("anyio_backend") == "trio" and params.get("backend_name") in ASYNCIO_ONLY)
            or _not_applicable(item, params)
        ),
    )


@pytest.fixture(scope="session")
def memory_url() -> str:
    return "memory://"


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_url(backend_name: str, request: pytest.FixtureRequest) -> Any:
    """The URL (or a zero-argument Backend factory) of the backend under test."""
    return request.getfixturevalue(f"{backend_name.replace('-', '_')}_url")


@pytest.fixture
def audit_records(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.DEBUG, logger="aiocache_secure")

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aiocache_secure.audit"]

    return records


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
