"""``check-config``: schema validation and a security lint of a TOML configuration.

Each finding has a severity (``error``, ``warning``, ``info``), a location and a message. Messages
never repeat a URL, a password or a value from the file: only where the problem is.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from .backends._transport import host_of, plaintext_to_remote
from .config import parse_config
from .errors import ConfigurationError

__all__ = ["Finding", "check_config"]

SHARED_SCHEMES: Final = frozenset(
    {
        "file",
        "redis",
        "rediss",
        "redis+cluster",
        "rediss+cluster",
        "redis+sentinel",
        "rediss+sentinel",
        "mongodb",
        "mongodb+srv",
    }
)
PLAIN_REMOTE: Final = frozenset({"redis", "redis+cluster", "redis+sentinel", "mongodb"})
INSECURE_QUERY: Final = {
    "tlsinsecure": {"true", "1"},
    "tlsallowinvalidcertificates": {"true", "1"},
    "tlsallowinvalidhostnames": {"true", "1"},
    "ssl_cert_reqs": {"none", "cert_none"},
    "ssl": {"false"},
    "tls": {"false"},
}
_B64: Final = re.compile(r"^[A-Za-z0-9+/_-]{42,44}={0,2}$")


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    where: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity.upper():7} {self.where}: {self.message}"


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def _looks_like_key(text: str) -> bool:
    for part in text.split(","):
        part = part.strip()
        if _B64.match(part):
            try:
                raw = base64.b64decode(part.replace("-", "+").replace("_", "/") + "==")
            except (binascii.Error, ValueError):
                continue
            if len(raw) == 32:
                return True
    return False


def _check_url(url: str, where: str) -> Iterator[Finding]:
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    try:
        parts = urlsplit(url)
        hosts = [host_of(h) for h in parts.netloc.rpartition("@")[2].split(",")]
    except ValueError:
        yield Finding("error", where, "the backend URL cannot be parsed")
        return
    if parts.password:
        yield Finding(
            "warning", where, "a password inside the URL: keep credentials out of config files"
        )
    if scheme == "mongodb":
        hosts = [unquote(h) for h in hosts]  # the driver's spelling of unix socket paths
    if scheme in PLAIN_REMOTE and plaintext_to_remote(hosts, tls=False):
        query = {k.lower(): v for k, v in parse_qs(parts.query).items()}
        if not any(
            v and v[-1].lower() in ("true", "1") for k, v in query.items() if k in ("tls", "ssl")
        ):
            yield Finding("error", where, f"plain {scheme}:// to a non-loopback host: use TLS")
    for key, values in parse_qs(parts.query).items():
        bad = INSECURE_QUERY.get(key.lower())
        if bad and any(v.lower() in bad for v in values):
            yield Finding("error", where, f"TLS certificate verification is off ({key})")
    if scheme == "file":
        path = Path(parts.path)
        if not parts.path.startswith("/"):
            yield Finding("error", where, "file:// needs an absolute path")
        elif path.exists():
            mode = path.stat().st_mode
            if mode & 0o077:
                yield Finding(
                    "error", where, "the cache directory is accessible to group or others"
                )


def check_config(path: str | os.PathLike[str]) -> list[Finding]:
    from .config import load_raw

    target = Path(path)
    findings: list[Finding] = []
    try:
        raw = load_raw(target)
    except ConfigurationError as exc:
        return [Finding("error", str(target.name), str(exc))]
    try:
        config = parse_config(raw, target)
    except (ConfigurationError, TypeError, ValueError) as exc:
        return [Finding("error", "schema", str(exc))]

    for where, text in _strings(raw, ""):
        if _looks_like_key(text):
            findings.append(
                Finding(
                    "error",
                    where,
                    "key material inside the configuration file: use [keys] env or [keys] file",
                )
            )
    if config.keys_file is None and config.keys_env is None:
        if any(
            _scheme(ns.options.get("backend", config.default_backend)) in SHARED_SCHEMES
            for ns in config.namespaces
        ):
            findings.append(
                Finding(
                    "error",
                    "[keys]",
                    "no key source, but shared backends are "
                    "configured: encrypted namespaces will refuse to start",
                )
            )
    if config.keys_env is not None:
        findings.append(
            Finding(
                "info",
                "[keys] env",
                "environment variables leak into child processes and "
                "crash dumps; prefer a key file or a KMS hook in production",
            )
        )
    if config.keys_file is not None:
        findings.extend(_check_key_file(config.keys_file))
    findings.extend(_check_url(config.default_backend, "[manager] default_backend"))
    if config.key_vault is not None:
        findings.extend(_check_url(config.key_vault, "[manager] key_vault"))

    for ns in config.namespaces:
        where = f"[namespaces.{ns.name}]"
        url = ns.options.get("backend", config.default_backend)
        if "backend" in ns.options:
            findings.extend(_check_url(url, f"{where} backend"))
        shared = _scheme(url) in SHARED_SCHEMES
        if ns.options.get("encrypt") is False and shared:
            severity = "error" if ns.options.get("serializer") == "pickle" else "warning"
            findings.append(
                Finding(
                    severity,
                    where,
                    "encrypt = false on a store shared beyond "
                    "this process: values readable and forgeable there",
                )
            )
        if ns.options.get("hash_keys") is False and shared:
            findings.append(
                Finding("warning", where, "hash_keys = false: keys readable in the store")
            )
        if "max_value_bytes" not in ns.options:
            findings.append(
                Finding(
                    "warning",
                    where,
                    "no max_value_bytes: the 16 MiB default "
                    "applies; set a bound that fits this namespace",
                )
            )
    return findings


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def _check_key_file(path: Path) -> Iterator[Finding]:
    where = "[keys] file"
    try:
        info = path.lstat()
    except OSError:
        yield Finding("error", where, "the key file does not exist or cannot be read")
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        yield Finding("error", where, "the key file is not a regular file")
    elif info.st_mode & 0o077:
        yield Finding("error", where, "the key file is readable by group or others (chmod 600)")
    elif info.st_uid != os.geteuid():
        yield Finding("error", where, "the key file is owned by another user")


def findings_as_json(findings: list[Finding]) -> list[Mapping[str, str]]:
    return [f.as_dict() for f in findings]
