"""Redis servers for the suite: standalone, a 3-primary Cluster, TLS with ACL users, and a
Sentinel group (a primary, a replica and three sentinels, passwords on both).

All are private to the session, on free loopback ports, in temporary directories. The backend
fixtures (``redis_url``, ``redis_cluster_url``, ``redis_tls_url``) remove every key the test wrote
afterwards (SCAN + UNLINK, never FLUSHDB), so tests stay independent on the shared servers even
if a namespace name and keyring were ever reused.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiocache_secure.backends.redis import RedisBackend
from tests import servers

TLS_USER = "app"
TLS_PASSWORD = "tls-app-secret-Zq8"  # throwaway, private to this test server
TLS_ADMIN_PASSWORD = "tls-admin-secret-Wk3"
TLS_KEY_PATTERN = "acs1*"


def _port_pair_free(port: int) -> bool:
    for candidate in (port, port + 10000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


def cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free as well."""
    for _ in range(200):
        port = servers.free_port()
        if port < 55536 and _port_pair_free(port):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _wipe(client: redis.Redis, pattern: str = "acs1*") -> None:
    """Remove the keys tests wrote, one UNLINK per key (cluster nodes refuse cross-slot ones)."""
    with client.pipeline(transaction=False) as pipe:
        for key in client.scan_iter(match=pattern, count=1000):
            pipe.unlink(key)
        pipe.execute()


# -- standalone ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port (never the machine's 6379)."""
    with servers.redis_server(tmp_path_factory.mktemp("redis")) as (port, _proc):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    yield redis_server
    with redis.Redis.from_url(redis_server) as client:
        _wipe(client)


# -- cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Three cluster-enabled redis-servers joined into one cluster (no replicas)."""
    base = tmp_path_factory.mktemp("redis-cluster")
    with _cluster(base, primaries=3, replicas=0, node_timeout_ms=2000) as procs:
        yield list(procs)


def _raw(info: object) -> bytes:
    if isinstance(info, bytes):
        return info
    if isinstance(info, dict):
        return "\n".join(f"{k}:{v}" for k, v in info.items()).encode()
    return str(info).encode()


@pytest.fixture
def redis_cluster_url(redis_cluster: list[int]) -> Iterator[str]:
    yield f"redis+cluster://127.0.0.1:{redis_cluster[0]}"
    for port in redis_cluster:
        with redis.Redis(port=port) as node:
            _wipe(node)


@contextlib.contextmanager
def cluster_with_replicas(
    base: Path, primaries: int = 3
) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """A cluster of ``primaries`` primaries, each with one replica, for tests that fail a primary
    over: its processes by port."""
    with _cluster(
        base,
        primaries=primaries,
        replicas=1,
        node_timeout_ms=1000,
        extra=("--cluster-replica-validity-factor", "0"),
    ) as procs:
        yield procs


@contextlib.contextmanager
def _cluster(
    base: Path,
    *,
    primaries: int,
    replicas: int,
    node_timeout_ms: int,
    extra: tuple[str, ...] = (),
) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """``primaries`` primaries with ``replicas`` replicas each, joined by ``redis-cli --cluster
    create``, returned once every node reports the whole cluster up (replicas in sync): the
    processes by port, stopped on exit."""
    with contextlib.ExitStack() as stack:
        procs: dict[int, subprocess.Popen[bytes]] = {}
        for index in range(primaries * (1 + replicas)):
            port = cluster_port()
            node = base / f"node{index}"
            _, procs[port] = stack.enter_context(
                servers.redis_server(
                    node,
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    *extra,
                    port=port,
                )
            )  # fmt: skip
        ports = list(procs)
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas", str(replicas), "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            ready = 0
            for port in ports:
                with redis.Redis(port=port) as node:
                    info = _raw(node.execute_command("CLUSTER INFO"))
                    known = f"cluster_known_nodes:{len(ports)}".encode()
                    replication = _raw(node.info("replication"))
                    synced = b"role:master" in replication or b"master_link_status:up" in (
                        replication
                    )
                    ready += b"cluster_state:ok" in info and known in info and synced
            if ready == len(ports):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield procs


# -- Sentinel --------------------------------------------------------------------------------

SENTINEL_DATA_PASSWORD = "sentinel-data-secret-Hv4"  # throwaway, private to these test servers
SENTINEL_PASSWORD = "sentinel-own-secret-Pm7"


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.SentinelGroup]:
    """A Sentinel group shared by the session: tests must not fail it over (see
    ``tests/test_redis_failover.py`` for groups of their own)."""
    with servers.redis_sentinel_group(
        tmp_path_factory.mktemp("redis-sentinel"),
        password=SENTINEL_DATA_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
    ) as group:
        yield group


@pytest.fixture
def redis_sentinel_url(
    redis_sentinel: servers.SentinelGroup,
) -> Iterator[Callable[[], RedisBackend]]:
    """A factory of backends on the group's primary, found through its sentinels."""
    user = f"default:{SENTINEL_DATA_PASSWORD}@"
    url = redis_sentinel.url.replace("://", f"://{user}", 1)
    yield lambda: RedisBackend(url, sentinel_password=SENTINEL_PASSWORD)
    with redis.Redis(port=redis_sentinel.primary[0], password=SENTINEL_DATA_PASSWORD) as client:
        _wipe(client)


# -- TLS with ACL users ----------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the server presents


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH if server else
                 x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )  # fmt: skip
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_tls_files(directory: Path) -> TlsFiles:
    ca, ca_key = _ca("aiocache_secure test CA")
    other, _ = _ca("unrelated CA")
    server, server_key = _leaf(ca, ca_key, "redis test server", server=True)
    client, client_key = _leaf(ca, ca_key, "redis test client", server=False)
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    return files


@dataclass(frozen=True)
class TlsServer:
    port: int
    files: TlsFiles

    def url(self, user: str = TLS_USER, password: str = TLS_PASSWORD) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0"

    def backend(self, **options: object) -> RedisBackend:
        return RedisBackend(
            self.url(),
            ca_file=self.files.ca,
            cert_file=self.files.client_cert,
            key_file=self.files.client_key,
            **options,  # type: ignore[arg-type]
        )

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username="admin",
            password=TLS_ADMIN_PASSWORD,
            ssl=True,
            ssl_ca_certs=str(self.files.ca),
            ssl_certfile=str(self.files.client_cert),
            ssl_keyfile=str(self.files.client_key),
        )


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """redis-server on a TLS-only port, client certificates required, the default user off,
    and an ACL user ``app`` that may only touch keys matching ``acs1*``."""
    base = tmp_path_factory.mktemp("redis-tls")
    files = make_tls_files(base)
    (base / "users.acl").write_text(
        "user default off\n"
        f"user admin on >{TLS_ADMIN_PASSWORD} ~* &* +@all\n"
        f"user {TLS_USER} on >{TLS_PASSWORD} ~{TLS_KEY_PATTERN} resetchannels +@all -@dangerous\n"
    )
    port = servers.free_port()
    with servers.redis_server(
        base,
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key),
        "--tls-ca-cert-file", str(files.ca),
        "--tls-auth-clients", "yes",
        "--aclfile", str(base / "users.acl"),
        port=port,
    ) as _:  # fmt: skip
        yield TlsServer(port, files)


@pytest.fixture
def redis_tls_url(redis_tls_server: TlsServer) -> Iterator[Callable[[], RedisBackend]]:
    yield redis_tls_server.backend
    with redis_tls_server.admin() as admin:
        _wipe(admin)
