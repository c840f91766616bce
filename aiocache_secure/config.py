"""TOML configuration for the command line (and for applications that want one file).

::

    [keys]
    env = "AIOCACHE_SECURE_KEYS"     # comma-separated base64 keys, primary first
    # file = "/etc/app/cache.keys"   # or a key file: mode 0600, owned by this user

    [manager]
    default_backend = "memory://"
    strict = false
    # key_vault = "file:///var/lib/app/vault"

    [namespaces.users]
    backend = "redis://127.0.0.1:6379/0"
    ttl = 300
    max_ttl = 3600
    max_value_bytes = 1_000_000

Key material never lives in this file: only where to find it. Namespace tables take the keyword
options of :meth:`CacheManager.namespace`, validated eagerly.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .backends import backend_kind, mask_url
from .errors import ConfigurationError
from .keyring import Keyring
from .keys import EnvKeyProvider, FileKeyProvider
from .manager import CacheManager
from .policy import Policy, validate_namespace_name

__all__ = ["Config", "NamespaceConfig", "load_config"]

NAMESPACE_OPTIONS: Final = frozenset(
    {
        "backend",
        "ttl",
        "max_ttl",
        "ttl_jitter",
        "encrypt",
        "hash_keys",
        "max_value_bytes",
        "max_entries",
        "max_bytes",
        "pad_timing",
        "fail_open",
        "private",
        "serializer",
        "strict",
        "near_cache",
    }
)
MANAGER_OPTIONS: Final = frozenset({"default_backend", "strict", "key_vault"})
KEY_OPTIONS: Final = frozenset({"env", "file"})


@dataclass(frozen=True, slots=True)
class NamespaceConfig:
    name: str
    options: Mapping[str, Any]

    def __repr__(self) -> str:
        shown = {k: mask_url(v) if k == "backend" else v for k, v in self.options.items()}
        return f"NamespaceConfig(name={self.name!r}, options={shown!r})"


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    keys_env: str | None = None
    keys_file: Path | None = None
    default_backend: str = "memory://"
    strict: bool = False
    key_vault: str | None = None
    namespaces: tuple[NamespaceConfig, ...] = field(default_factory=tuple)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        # Backend URLs may carry passwords: shown masked, like everything that can hold a URL.
        vault = None if self.key_vault is None else mask_url(self.key_vault)
        return (
            f"Config(path={self.path!r}, keys_env={self.keys_env!r}, "
            f"keys_file={self.keys_file!r}, default_backend={mask_url(self.default_backend)!r}, "
            f"strict={self.strict!r}, key_vault={vault!r}, namespaces={self.namespaces!r})"
        )

    def keyring(self) -> Keyring | None:
        """The keyring from ``[keys]`` (key file first, then environment), or ``None``."""
        if self.keys_file is not None:
            return FileKeyProvider(self.keys_file).load()
        if self.keys_env is not None:
            return EnvKeyProvider(self.keys_env).load()
        return None

    def manager(self) -> CacheManager:
        """A new :class:`CacheManager` with this file's keys and ``[manager]`` options."""
        return CacheManager(
            keyring=self.keyring(),
            default_backend=self.default_backend,
            strict=self.strict,
            key_vault=self.key_vault,
        )

    def namespace_config(self, name: str) -> NamespaceConfig:
        """The ``[namespaces.NAME]`` table of ``name``; ConfigurationError if there is none."""
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        raise ConfigurationError("no namespace of that name in the configuration")


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigurationError(f"[{name}] must be a table")
    return value


def _unknown(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigurationError(f"{where}: unknown option(s) {', '.join(extra)}")


def parse_config(raw: Mapping[str, Any], path: Path) -> Config:
    _unknown(raw, frozenset({"keys", "manager", "namespaces"}), "top level")
    keys, manager, namespaces = (
        _table(raw, "keys"),
        _table(raw, "manager"),
        _table(raw, "namespaces"),
    )
    _unknown(keys, KEY_OPTIONS, "[keys]")
    _unknown(manager, MANAGER_OPTIONS, "[manager]")
    for option in ("env", "file"):
        if option in keys and not isinstance(keys[option], str):
            raise ConfigurationError(f"[keys] {option} must be a string")
    for option in ("default_backend", "key_vault"):
        if option in manager and not isinstance(manager[option], str):
            raise ConfigurationError(f"[manager] {option} must be a URL string")
    if not isinstance(manager.get("strict", False), bool):
        raise ConfigurationError("[manager] strict must be true or false")
    for option in ("default_backend", "key_vault"):
        if option in manager:
            backend_kind(manager[option])
    parsed: list[NamespaceConfig] = []
    for name, options in namespaces.items():
        validate_namespace_name(name)
        where = f"[namespaces.{name}]" if name.isidentifier() else "[namespaces.<name>]"
        if not isinstance(options, dict):
            raise ConfigurationError(f"{where} must be a table")
        _unknown(options, NAMESPACE_OPTIONS, where)
        if "backend" in options:
            if not isinstance(options["backend"], str):
                raise ConfigurationError(f"{where} backend must be a URL string")
            backend_kind(options["backend"])
        policy = {k: v for k, v in options.items() if k not in ("backend", "encrypt")}
        try:
            Policy(**policy)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        parsed.append(NamespaceConfig(name, dict(options)))
    return Config(
        path=path,
        keys_env=keys.get("env"),
        keys_file=Path(keys["file"]) if "file" in keys else None,
        default_backend=manager.get("default_backend", "memory://"),
        strict=manager.get("strict", False),
        key_vault=manager.get("key_vault"),
        namespaces=tuple(parsed),
        raw=raw,
    )


def load_raw(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"configuration file is not valid TOML: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the TOML configuration at ``path`` (format: docs/configuration.md).

    Every error is a :class:`ConfigurationError` that names the file, the table and the option
    (never a value, which could be a credential).
    """
    target = Path(path)
    raw = load_raw(target)
    try:
        return parse_config(raw, target)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{target}: {exc}") from None
