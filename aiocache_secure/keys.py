"""Where keys come from: key providers for the keyring, and key wrappers for the vault.

Key providers build a :class:`~aiocache_secure.keyring.Keyring`:

* :class:`EnvKeyProvider` — comma-separated base64 keys in an environment variable. Convenient,
  and leaky: environment variables are inherited by child processes and land in crash dumps and
  ``/proc/<pid>/environ``; a warning says so once per process.
* :class:`FileKeyProvider` — the same text in a file that must be a regular file (no symlink),
  mode 0600 (nothing for group or others) and owned by the process's user; anything else is
  refused with :class:`~aiocache_secure.errors.ConfigurationError`.

Key wrappers protect private namespaces' data keys in the vault:

* the default wraps with an HKDF sub-key of the keyring's primary key (AES-256-GCM);
* :class:`KmsKeyWrapper` hands wrapping to your KMS through two async callables, so the master
  key never has to be in the process. The *encryption context* passed to both calls binds the
  wrapped key to its namespace and vault record; a KMS that supports contexts should enforce it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from .errors import ConfigurationError
from .keyring import Keyring

__all__ = [
    "EnvKeyProvider",
    "FileKeyProvider",
    "KeyProvider",
    "KeyWrapper",
    "KmsKeyWrapper",
    "read_key_file",
]

_log: Final = logging.getLogger("aiocache_secure")
_warned_env = False


@runtime_checkable
class KeyProvider(Protocol):
    """Where a keyring comes from: anything with a ``load()`` returning a :class:`Keyring`."""

    def load(self) -> Keyring:
        """Read the keys now; ConfigurationError when they cannot be had."""
        ...


class EnvKeyProvider:
    """Keys from environment variable ``name`` (comma-separated base64, primary first)."""

    __slots__ = ("name",)

    def __init__(self, name: str = "AIOCACHE_SECURE_KEYS") -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("the environment variable name must be a non-empty str")
        self.name = name

    def __repr__(self) -> str:
        return f"EnvKeyProvider({self.name!r})"

    def load(self) -> Keyring:
        """Read the variable (warns once per process: environment variables leak)."""
        global _warned_env
        keyring = Keyring.from_env(self.name)
        if not _warned_env:
            _warned_env = True
            _log.warning(
                "keys loaded from an environment variable: it is inherited by child processes "
                "and visible in crash dumps; prefer a key file or a KMS"
            )
        return keyring


def read_key_file(path: str | os.PathLike[str]) -> str:
    """A key file's text; refused unless a regular file, mode 0600 (or stricter) and ours."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ConfigurationError("the key file cannot be opened (missing, or a symlink)") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError("the key file is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigurationError("the key file is readable by group or others (chmod 600)")
        if info.st_uid != os.geteuid():
            raise ConfigurationError("the key file is owned by another user")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "r", encoding="ascii") as handle:
        try:
            return handle.read()
        except UnicodeDecodeError:
            raise ConfigurationError("the key file is not base64 text") from None


class FileKeyProvider:
    """Keys from a key file: a regular file, mode 0600 or stricter, owned by this user."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileKeyProvider({str(self.path)!r})"

    def load(self) -> Keyring:
        """Read the file, refusing it unless it is a private regular file of ours."""
        return Keyring.from_text(read_key_file(self.path))


@runtime_checkable
class KeyWrapper(Protocol):
    """Wraps and unwraps 32-byte data keys; ``context`` must be bound to the result."""

    async def wrap(self, data_key: bytes, *, context: bytes) -> bytes:
        """Encrypt ``data_key``, binding ``context`` (the namespace) to the result."""
        ...

    async def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The data key of ``wrapped``; raises if it fails or ``context`` differs."""
        ...


class KmsKeyWrapper:
    """Adapts your KMS: ``wrap(data_key, context) -> bytes``, ``unwrap(blob, context) -> bytes``.

    Either callable may raise anything on failure; an unwrap failure becomes an opaque
    :class:`~aiocache_secure.errors.IntegrityError` for the namespace.
    """

    __slots__ = ("_unwrap", "_wrap")

    def __init__(
        self,
        *,
        wrap: Callable[[bytes, bytes], Awaitable[bytes]],
        unwrap: Callable[[bytes, bytes], Awaitable[bytes]],
    ) -> None:
        if not callable(wrap) or not callable(unwrap):
            raise TypeError("wrap and unwrap must be async callables")
        self._wrap = wrap
        self._unwrap = unwrap

    def __repr__(self) -> str:
        return "KmsKeyWrapper()"

    async def wrap(self, data_key: bytes, *, context: bytes) -> bytes:
        """Call your KMS's wrap; a non-bytes or empty result is refused."""
        wrapped = await self._wrap(data_key, context)
        if not isinstance(wrapped, bytes) or not wrapped:
            raise ConfigurationError("the KMS wrap hook must return non-empty bytes")
        return wrapped

    async def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """Call your KMS's unwrap."""
        return await self._unwrap(wrapped, context)
