"""MongoDB for the test suite: a private ``nx-27017`` server, or ``AIOCACHE_SECURE_MONGO_URL``.

No real ``mongod`` can be installed here, so the suite runs against nx-27017 (a MongoDB
wire-protocol server on SQLite), started in the foreground on a free loopback port with an
in-memory database, and stopped with SIGTERM. Set ``AIOCACHE_SECURE_MONGO_URL`` (a URL without a
database path, e.g. ``mongodb://user:pw@host:27017/?authSource=admin&tls=true``) to run the same
suite against a real server instead. Every test gets a fresh collection, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from aiocache_secure.backends.mongo import MongoBackend
from tests import servers

ENV_URL = "AIOCACHE_SECURE_MONGO_URL"
TEST_DATABASE = "aiocache_secure_test"


# Motor is deprecated in favour of PyMongo's AsyncMongoClient; a Motor release that says so must
# not fail the Motor runs of the contract suite (which exist to prove a user's Motor client works).
MOTOR_DEPRECATION = pytest.mark.filterwarnings(r"ignore:.*[Mm]otor.*:DeprecationWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend_name") == "mongo-motor":
            item.add_marker(MOTOR_DEPRECATION)


def nx_binary() -> str:
    beside = Path(sys.executable).with_name("nx-27017")
    if beside.exists():
        return str(beside)
    found = shutil.which("nx-27017")
    if found is None:
        raise RuntimeError("nx-27017 is not installed (it is in the dev extra)")
    return found


def ping(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


@contextlib.contextmanager
def nx_server(tmp: Path, port: int | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """nx-27017 on a free loopback port, in the foreground, with an in-memory database."""
    port = port or servers.free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            nx_binary(),
            "--db",
            "memory",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
            "--pid-file",
            str(tmp / f"nx-{port}.pid"),
            "--log-file",
            str(tmp / f"nx-{port}.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        servers.wait_for_port(port, proc=proc)
        ping(f"mongodb://127.0.0.1:{port}/")
        yield port, proc
    finally:
        servers.stop(proc)


def with_path(base: str, path: str) -> str:
    """``base`` (a URL that may carry a path and options) pointing at ``path`` instead."""
    scheme, _, rest = base.partition("://")
    rest, _, query = rest.partition("?")
    hosts = rest.partition("/")[0]
    return f"{scheme}://{hosts}/{path}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's URL, without a database."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    with nx_server(tmp_path_factory.mktemp("mongo")) as (port, _proc):
        yield f"mongodb://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def mongo_admin(mongo_server: str) -> Iterator[MongoClient[dict[str, Any]]]:
    """A synchronous client for setup, inspection and clean-up."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        with_path(mongo_server, ""), serverSelectionTimeoutMS=3000
    )
    yield client
    client.close()


@pytest.fixture
def mongo_collection(mongo_admin: MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A fresh collection name in the test database, dropped after the test."""
    name = f"c_{uuid.uuid4().hex}"
    yield name
    with contextlib.suppress(Exception):
        mongo_admin[TEST_DATABASE].drop_collection(name)


@pytest.fixture
def mongo_url(mongo_server: str, mongo_collection: str) -> str:
    return with_path(mongo_server, f"{TEST_DATABASE}.{mongo_collection}")


@pytest.fixture
def mongo_motor_url(mongo_server: str, mongo_collection: str) -> Iterator[Callable[[], Any]]:
    """A factory of MongoBackends on a Motor client (which the backend does not close)."""
    from motor.motor_asyncio import AsyncIOMotorClient

    clients: list[Any] = []

    def make() -> MongoBackend:
        client = AsyncIOMotorClient(with_path(mongo_server, ""), serverSelectionTimeoutMS=3000)
        clients.append(client)
        return MongoBackend(client=client, database=TEST_DATABASE, collection=mongo_collection)

    yield make
    for client in clients:
        client.close()
