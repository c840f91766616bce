"""The private redis-server every benchmark starts: a free loopback port, a temporary
directory, no persistence; it can be paused, killed and restarted (the fault runs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


def standalone_command(binary: str, port: int, directory: str, *, logfile: str) -> list[str]:
    """A redis-server on ``127.0.0.1:port`` that persists nothing (no RDB, no AOF); the test
    suite's servers start from it too (``tests/servers.py``): benchmarks run what tests test."""
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", directory,
        "--logfile", logfile,
    ]  # fmt: skip


class RedisProcess:
    """A private redis-server on a free loopback port that can be paused, killed and restarted."""

    def __init__(self, directory: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not installed (scripts/test.sh installs it)")
        self.command = standalone_command(binary, self.port, directory, logfile="")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def redis_server(*, pin: bool = False) -> Iterator[RedisProcess]:
    """A started server, stopped afterwards; ``pin`` puts it on the last CPU and this process
    on the first (every contender is then measured under the same placement)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisProcess(tmp)
        server.start()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if pin and len(cpus) >= 2 and server.proc is not None:
            os.sched_setaffinity(server.proc.pid, {cpus[-1]})
            os.sched_setaffinity(0, {cpus[0]})
        try:
            yield server
        finally:
            server.stop()
