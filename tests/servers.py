"""Real servers for the test suite, started on free loopback ports in temporary directories.

Nothing here talks to services on standard ports (this machine kind runs its own Redis on 6379):
every server is private to the test session and stopped when it ends.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks._redis import standalone_command


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start in {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed; scripts/test.sh installs it")
    return path


@contextlib.contextmanager
def redis_server(
    tmp: Path, *extra: str, port: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A standalone redis-server on a free loopback port, persisting nothing."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            *standalone_command(redis_binary(), port, str(tmp), logfile=str(tmp / "redis.log")),
            "--protected-mode",
            "yes",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port, proc
    finally:
        stop(proc)


@dataclass(frozen=True)
class SentinelGroup:
    """A primary, its replica and three sentinels watching them as ``service``."""

    service: str
    primary: tuple[int, subprocess.Popen[bytes]]
    replica: tuple[int, subprocess.Popen[bytes]]
    sentinels: tuple[int, ...]
    sentinel_pids: tuple[int, ...] = ()

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"


@dataclass(frozen=True)
class TlsPaths:
    """The server certificate, its key and the CA for TLS-only servers (client certificates
    are not required)."""

    cert: Path
    key: Path
    ca: Path

    def server_args(self, port: int) -> tuple[str, ...]:
        return (
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no", "--tls-replication", "yes",
        )  # fmt: skip

    def config(self, port: int) -> str:
        args = self.server_args(port)
        return "".join(f"{k[2:]} {v}\n" for k, v in zip(args[::2], args[1::2], strict=True))

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _sentinel(
    tmp: Path,
    port: int,
    primary: int,
    service: str,
    password: str | None,
    own: str | None,
    tls: TlsPaths | None,
) -> subprocess.Popen[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "sentinel.conf"  # a sentinel rewrites its configuration as it learns
    auth = f"sentinel auth-pass {service} {password}\n" if password else ""
    auth += f"requirepass {own}\n" if own else ""
    auth += tls.config(port) if tls else ""
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {tmp}\n"
        f"logfile {tmp / 'sentinel.log'}\n"
        f"sentinel monitor {service} 127.0.0.1 {primary} 2\n"
        f"sentinel down-after-milliseconds {service} 1000\n"
        f"sentinel failover-timeout {service} 3000\n"
        f"sentinel parallel-syncs {service} 1\n" + auth
    )
    return subprocess.Popen(
        [redis_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ping_until(
    port: int,
    check: Callable[[bytes], bool],
    *,
    timeout: float,
    password: str | None,
    tls: TlsPaths | None,
) -> None:
    """Poll a server with ``INFO`` until ``check(reply)`` holds."""
    deadline = time.monotonic() + timeout
    auth = f"AUTH {password}\r\n".encode() if password else b""
    while True:
        with contextlib.ExitStack() as opened:
            opened.enter_context(contextlib.suppress(OSError))
            s = opened.enter_context(socket.create_connection(("127.0.0.1", port), 1))
            if tls:
                s = opened.enter_context(tls.context().wrap_socket(s, server_hostname="127.0.0.1"))
            s.sendall(auth + b"INFO\r\n")
            reply = b""
            s.settimeout(1)
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in reply[-8:] and len(reply) < 1 << 20:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            if check(reply):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not reach the expected state")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_sentinel_group(
    tmp: Path,
    service: str = "mymaster",
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
    tls: TlsPaths | None = None,
) -> Iterator[SentinelGroup]:
    """Real ``redis-server --sentinel`` processes on free loopback ports, failover in seconds
    (down after 1 s, failover timeout 3 s, quorum 2 of 3). ``password``: the data nodes'
    ``requirepass``; ``sentinel_password``: the sentinels' own; ``tls``: every server, data
    nodes and sentinels, on a TLS-only port (replication and sentinel links over TLS too)."""
    auth = ("--requirepass", password, "--masterauth", password) if password else ()

    def data_node(name: str, *extra: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        args = (*auth, *(tls.server_args(port) if tls else ()), *extra)
        return stack.enter_context(redis_server(tmp / name, *args, port=port))

    with contextlib.ExitStack() as stack:
        primary = data_node("primary")
        replica = data_node("replica", "--replicaof", "127.0.0.1", str(primary[0]))
        _ping_until(
            replica[0],
            lambda info: b"master_link_status:up" in info,
            timeout=15,
            password=password,
            tls=tls,
        )
        ports, pids = [], []
        for index in range(3):
            port = free_port()
            proc = _sentinel(
                tmp / f"sentinel{index}",
                port,
                primary[0],
                service,
                password,
                sentinel_password,
                tls,
            )
            stack.callback(stop, proc)
            wait_for_port(port, proc=proc)
            ports.append(port)
            pids.append(proc.pid)
        for port in ports:  # every sentinel knows the replica and its peers
            _ping_until(
                port,
                lambda info: b"slaves=1,sentinels=3" in info,
                timeout=30,
                password=sentinel_password,
                tls=tls,
            )
        yield SentinelGroup(service, primary, replica, tuple(ports), tuple(pids))
