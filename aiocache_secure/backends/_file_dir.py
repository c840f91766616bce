"""The file backend's directories: the checked root, descriptor-relative traversal that never
follows a symlink, and the process-wide state shared by every instance on one directory
(leftover cleanup, the expiry sweep). See :mod:`aiocache_secure.backends.file`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import secrets
import socket
import stat
import threading
import time
import weakref
from typing import Final

from .. import audit
from ..errors import BackendUnavailable, ConfigurationError
from ._file_format import (
    GROUP_NAME,
    HEAD,
    MAGIC,
    NOT_THERE,
    O_DIR,
    O_READ,
    OTHER,
    SHARD_NAME,
    TEMP,
    expired,
    is_entry,
    read_exact,
)

_log: Final = logging.getLogger("aiocache_secure")

DIR_MODE: Final = 0o700
SWEEP_BUDGET: Final = 256


def host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# -- directories ----------------------------------------------------------------------------------


def remove_if_same(dir_fd: int, name: str, seen: os.stat_result) -> bool:
    """Unlink ``name`` if it is still the file we looked at (not a newer write of the key)."""
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev):
            return False
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def subdir(parent: int, name: str, *, create: bool, durable: bool) -> int | None:
    """A descriptor of directory ``name`` in ``parent``, never through a symlink."""
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        if not create:
            return None
        # A symlink or a file where our directory belongs: remove it, never follow it.
        _log.warning("file backend: replaced a non-directory planted in the cache directory")
        os.unlink(name, dir_fd=parent)
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent)
    except FileExistsError:
        pass
    fd = os.open(name, O_DIR, dir_fd=parent)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != DIR_MODE:
            os.fchmod(fd, DIR_MODE)
        if durable:
            os.fsync(parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Dirs:
    """Directory descriptors opened for one call, closed together."""

    __slots__ = ("_durable", "_fds", "_root", "directory")

    def __init__(self, directory: Directory, *, durable: bool) -> None:
        self.directory = directory
        self._durable = durable
        self._root: int | None = None
        self._fds: dict[tuple[str, str], int] = {}

    def __enter__(self) -> Dirs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)

    def root(self, *, create: bool) -> int | None:
        """The root's descriptor, held by the :class:`Directory` (never closed here)."""
        if self._root is None:
            self._root = self.directory.root(create=create)
        return self._root

    def group(self, group: str, *, create: bool) -> int | None:
        fd = self._fds.get((group, ""))
        if fd is None:
            root = self.root(create=create)
            if root is None:
                return None
            fd = subdir(root, group, create=create, durable=self._durable)
            if fd is None:
                return None
            self._fds[(group, "")] = fd
        return fd

    def shard(self, group: str, shard: str, *, create: bool) -> int | None:
        fd = self._fds.get((group, shard))
        if fd is None:
            parent = self.group(group, create=create)
            if parent is None:
                return None
            fd = subdir(parent, shard, create=create, durable=self._durable)
            if fd is None:
                return None
            self._fds[(group, shard)] = fd
        return fd

    def forget(self, group: str) -> None:
        """Close the descriptors held for ``group`` (its directories were removed)."""
        for held in [k for k in self._fds if k[0] == group]:
            os.close(self._fds.pop(held))

    def prune(self, group: str, shards: list[str]) -> None:
        """Remove ``shards`` of ``group``, then ``group``, where they are empty, so that a
        cleared or erased namespace leaves no trace. A directory that is not empty (a write is
        landing) stays; a writer whose directory vanishes under it recreates it."""
        parent = self.group(group, create=False)
        root = self.root(create=False)
        if parent is None or root is None:
            return
        emptied = False
        for shard in shards:
            try:
                os.rmdir(shard, dir_fd=parent)
                emptied = True
            except OSError:
                continue
        if emptied or not shards:
            self.forget(group)
            with contextlib.suppress(OSError):
                os.rmdir(group, dir_fd=root)

    def groups(self) -> list[str]:
        root = self.root(create=False)
        if root is None:
            return []
        with os.scandir(root) as entries:
            return sorted(
                e.name for e in entries if e.name == OTHER or GROUP_NAME.fullmatch(e.name)
            )

    def shards(self, group: str) -> list[str]:
        fd = self.group(group, create=False)
        if fd is None:
            return []
        with os.scandir(fd) as entries:
            return sorted(e.name for e in entries if SHARD_NAME.fullmatch(e.name))

    def names(self, group: str, shard: str) -> list[str]:
        fd = self.shard(group, shard, create=False)
        if fd is None:
            return []
        with os.scandir(fd) as entries:
            return [e.name for e in entries]


def _check_parent(fd: int, where: str) -> None:
    """Refuse a parent of the root that somebody else could use to swap the root for another
    directory: one owned by another user (root excepted), or writable by group or others
    without the sticky bit. Under a sticky directory such as /tmp only an entry's owner may
    rename or remove it, and every entry on the way down is checked to be ours (or root's)."""
    info = os.fstat(fd)
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigurationError(
            f"file backend: {where} is owned by another user, who could swap the cache "
            f"directory: choose a cache directory whose parents belong to root or to this user"
        )
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise ConfigurationError(
            f"file backend: {where} is writable by other users and has no sticky bit, so they "
            f"could swap the cache directory: remove their write access (chmod go-w) or choose "
            f"a cache directory under a private parent"
        )


def _open_or_make(parent: int, name: str) -> int:
    """Directory ``name`` in ``parent``, created 0700 when missing; never through a symlink."""
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, DIR_MODE, dir_fd=parent)
    fd = os.open(name, O_DIR, dir_fd=parent)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != DIR_MODE:  # the umask took bits away
            os.fchmod(fd, DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_root(path: str, *, repair: bool) -> int:
    """A descriptor of the cache directory ``path`` (absolute, symlink-free): every component
    opened relative to its parent with ``O_NOFOLLOW``, missing ones created 0700, every parent
    checked by :func:`_check_parent`, the root itself checked to be ours and 0700.

    ``ConfigurationError`` for a policy violation; ``OSError`` when a component cannot be
    opened (``ELOOP``: a symlink, ``ENOTDIR``: not a directory) or created."""
    fd = os.open("/", O_DIR)
    try:
        where = "/"
        for name in [part for part in path.split("/") if part]:
            _check_parent(fd, where)
            child = _open_or_make(fd, name)
            os.close(fd)
            fd = child
            where = os.path.join(where, name)
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise ConfigurationError("file backend: the cache directory is owned by another user")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and not repair:
            raise ConfigurationError(
                f"file backend: the cache directory is accessible to other users "
                f"(mode {mode:04o}); make it 0700 or pass repair_permissions=True"
            )
        if mode != DIR_MODE:
            try:
                os.fchmod(fd, DIR_MODE)
            except OSError as exc:
                raise ConfigurationError(
                    "file backend: cannot set the cache directory to 0700"
                ) from exc
            if mode & 0o077:
                audit.emit("insecure_config", backend="file", reason="cache_dir_mode_repaired")
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare_root(path: str, *, repair: bool) -> tuple[str, int]:
    """Create or check the cache directory at construction: its real path and a descriptor."""
    real = os.path.realpath(path)
    try:
        return real, open_root(real, repair=repair)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise ConfigurationError("file backend: the cache path is not a directory") from exc
        raise ConfigurationError("file backend: cannot create the cache directory") from exc


class Directory:
    """Process-wide state of one cache directory, shared by every instance opened on it."""

    __slots__ = (
        "__weakref__",
        "_cursor",
        "_fds",
        "_identity",
        "_lock",
        "_root_lock",
        "_sweep_lock",
        "cleaned",
        "host",
        "next_sweep",
        "path",
        "repair",
        "swept",
        "temp_max_age",
    )

    def __init__(self, path: str, fd: int, *, repair: bool, temp_max_age: float) -> None:
        self.path = path
        # The root is used through this descriptor, never reopened by path: a directory
        # renamed away and replaced (by another directory or a symlink, here or in a parent)
        # is seen by root() and never written through. Replaced descriptors stay open until
        # this object dies: a worker thread may still be using one.
        self._fds = [fd]
        self._identity = _identity(os.fstat(fd))
        weakref.finalize(self, _close_all, self._fds)
        self.repair = repair
        self.temp_max_age = temp_max_age
        self.host = host_tag()
        self.cleaned = False
        self.next_sweep: float | None = None
        self.swept = 0
        self._lock = threading.Lock()
        self._root_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._cursor: tuple[list[str], int, list[str] | None, int] | None = None

    def root(self, *, create: bool) -> int | None:
        """The root's descriptor while ``path`` still names that directory. When it does not
        (removed, renamed away, replaced) the path is walked again as at construction: a
        missing root is recreated (``create``) or None, anything unsafe refused."""
        if self._names_root():
            return self._fds[-1]
        with self._root_lock:
            if self._names_root():
                return self._fds[-1]
            if not create and not _exists(self.path):
                return None
            try:
                fd = open_root(self.path, repair=self.repair)
            except ConfigurationError as exc:
                raise BackendUnavailable(
                    "file backend: the cache directory was replaced by one that is not safe"
                ) from exc
            self._fds.append(fd)
            self._identity = _identity(os.fstat(fd))
            return fd

    def _names_root(self) -> bool:
        try:
            return _identity(os.stat(self.path, follow_symlinks=False)) == self._identity
        except FileNotFoundError:
            return False

    def temp_name(self) -> str:
        return f"{TEMP}{self.host}-{os.getpid()}-{secrets.token_hex(6)}"

    def temp_is_stale(self, name: str, mtime: float) -> bool:
        if time.time() - mtime > self.temp_max_age:
            return True
        host, _, rest = name[len(TEMP) :].partition("-")
        pid_text = rest.partition("-")[0]
        if host != self.host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        return pid > 0 and pid != os.getpid() and not pid_alive(pid)

    def clean_temps_once(self) -> None:
        """Remove temporary files left by crashed writers: once per directory per process."""
        if self.cleaned:
            return
        with self._lock:
            if self.cleaned:
                return
            with Dirs(self, durable=False) as dirs:
                for group in dirs.groups():
                    for shard in dirs.shards(group):
                        fd = dirs.shard(group, shard, create=False)
                        if fd is not None:
                            self._clean_shard(
                                fd, dirs.names(group, shard), temps_only=True, now_ms=0
                            )
            self.cleaned = True

    def _clean_shard(self, fd: int, names: list[str], *, temps_only: bool, now_ms: int) -> int:
        removed = 0
        for name in names:
            try:
                if name.startswith(TEMP):
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if self.temp_is_stale(name, info.st_mtime):
                        os.unlink(name, dir_fd=fd)
                elif not temps_only and is_entry(name):
                    removed += sweep_entry(fd, name, now_ms)
            except FileNotFoundError:
                continue
        return removed

    def sweep_due(self, now: float) -> bool:
        return self.next_sweep is not None and now >= self.next_sweep

    def sweep_step(self, now: float, interval: float) -> None:
        """Advance the expiry sweep by about ``SWEEP_BUDGET`` files, when one is due."""
        if self.next_sweep is None:
            self.next_sweep = now + interval
        if now < self.next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            if self._advance(now, SWEEP_BUDGET):
                self.next_sweep = now + interval
        finally:
            self._sweep_lock.release()

    def full_sweep(self, now: float, interval: float) -> int:
        with self._sweep_lock:
            before = self.swept
            self._cursor = None
            self._advance(now, math.inf)
            self.next_sweep = now + interval
            return self.swept - before

    def _advance(self, now: float, budget: float) -> bool:
        """Sweep on from the cursor; True when a pass just ended."""
        now_ms = math.floor(now * 1000)
        with Dirs(self, durable=False) as dirs:
            groups, gi, shards, si = self._cursor or (dirs.groups(), 0, None, 0)
            while budget > 0 and gi < len(groups):
                if shards is None:
                    shards, si = dirs.shards(groups[gi]), 0
                if si >= len(shards):
                    gi, shards = gi + 1, None
                    continue
                fd = dirs.shard(groups[gi], shards[si], create=False)
                if fd is not None:
                    names = dirs.names(groups[gi], shards[si])
                    self.swept += self._clean_shard(fd, names, temps_only=False, now_ms=now_ms)
                    budget -= len(names) + 1
                si += 1
        if gi < len(groups):
            self._cursor = (groups, gi, shards, si)
            return False
        self._cursor = None
        return True


def sweep_entry(fd: int, name: str, now_ms: int) -> int:
    """Delete entry ``name`` if it is expired or malformed (header and length only)."""
    try:
        entry = os.open(name, O_READ, dir_fd=fd)
    except OSError as exc:
        if exc.errno in NOT_THERE:
            return 0
        raise
    try:
        info = os.fstat(entry)
        if not stat.S_ISREG(info.st_mode):
            return 0
        head = read_exact(entry, HEAD.size)
    finally:
        os.close(entry)
    if len(head) == HEAD.size:
        magic, expires_ms, key_len, value_len, _ = HEAD.unpack(head)
        whole = magic == MAGIC and info.st_size == HEAD.size + key_len + value_len
        if whole and not expired(expires_ms, now_ms):
            return 0
    return int(remove_if_same(fd, name, info))


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _exists(path: str) -> bool:
    try:
        os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


registry: weakref.WeakValueDictionary[str, Directory] = weakref.WeakValueDictionary()
registry_lock = threading.Lock()


def open_directory(path: str, *, repair: bool, temp_max_age: float) -> Directory:
    spelled = os.path.normpath(path)
    with registry_lock:
        found = registry.get(spelled)
        if found is not None:
            return found
        real, fd = prepare_root(spelled, repair=repair)
        found = registry.get(real)
        if found is None:
            found = Directory(real, fd, repair=repair, temp_max_age=temp_max_age)
            registry[real] = found
        else:
            os.close(fd)
        registry[spelled] = found
        return found
