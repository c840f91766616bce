"""``file:///abs/dir``: one file per entry in a private directory, shareable between processes.

Layout (every name below is derived from the storage key by a fixed encoding, never taken from it)::

    <root>/                       0700, owned by this user (checked when the backend is built)
      <tag>.<sep>/                one directory per namespace prefix: "acs1" + 32-hex tag + 1 byte
        <shard>/                  2 hex digits of BLAKE2b(key): 256 shards keep directories small
          k<hex(rest of key)>     an entry, when the rest of the key is at most 100 bytes
          h<hex(BLAKE2b(key))>    an entry with a longer key (the full key is in its header)
          .t<host>-<pid>-<rand>   a write in progress (or left over by a crashed writer)
      _/                          keys that do not start with a namespace prefix, sharded alike

Entry file (0600)::

    "ACF1" | expires_ms u64 (0 = never) | key_len u32 | value_len u64 | crc32 u32 | key | value

Guarantees:

* Keys cannot escape the root: names are hex, so ``../x``, ``/abs``, NUL or ``..\\`` in a key are
  just more hex digits. Every directory below the root is opened relative to its parent's
  descriptor with ``O_NOFOLLOW``, and entries with ``O_NOFOLLOW | O_NONBLOCK``, so a symlink (or
  a FIFO) planted inside the cache is never followed: reads miss, writes replace the link itself.
* Writes are atomic: a temporary file created with ``O_EXCL | O_NOFOLLOW`` and mode 0600 in the
  entry's own directory is written, fsynced and renamed over the entry (``durable=True`` also
  fsyncs the directory). Readers see the old or the new entry, never a mix; concurrent writers of
  one key leave one whole value. No lock files exist.
* A truncated or corrupted entry (bad magic, length, key or CRC) is a miss and is deleted. Only
  real I/O failures raise, as :class:`~aiocache_secure.errors.BackendUnavailable`.
* Expiry is an absolute time in the header: an expired entry is a miss, deleted when read, and
  removed by a sweep that writes drive forward a few hundred entries at a time once every
  ``sweep_interval`` seconds (no background task); :meth:`FileBackend.sweep` runs a full pass.
* Temporary files left by a crashed writer are removed once per directory per process, on the
  first operation: those of a dead process on this host at once, any other after
  ``temp_max_age`` seconds (a live writer's temporary file is never touched).

Quotas (``max_entries`` / ``max_bytes``, charged the entry file's size) apply to each namespace
prefix separately, so a namespace only ever evicts its own least recently used entries (by
mtime, refreshed on every hit when a quota is set). Each instance keeps an estimate of its
prefixes' usage, rescans a prefix when the estimate passes the limit by an eighth (or every
``sweep_interval``), and evicts down to the limit: a single writer process stays within 1.125x.
Instances on one directory share its process-wide state (a registry keyed by path), so opening
one per namespace costs no I/O after the first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import re
import secrets
import socket
import stat
import struct
import threading
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import unquote, urlsplit

import anyio.to_thread

from .. import audit
from ..clock import Clock, system_clock
from ..errors import BackendUnavailable, ClosedError, ConfigurationError

__all__ = ["FileBackend", "from_url"]

_log: Final = logging.getLogger("aiocache_secure")
_T = TypeVar("_T")

_MAGIC: Final = b"ACF1"
_FIELDS: Final = struct.Struct(">4sQIQ")
_HEAD: Final = struct.Struct(">4sQIQI")
_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_PREFIX_LEN: Final = 37
_PREFIXED: Final = re.compile(rb"acs1[0-9a-f]{32}")
_GROUP_NAME: Final = re.compile(r"[0-9a-f]{32}\.[0-9a-f]{2}")
_SHARD_NAME: Final = re.compile(r"[0-9a-f]{2}")
_OTHER: Final = "_"
_MAX_PLAIN: Final = 100
_TEMP: Final = ".t"
_O_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_O_TEMP: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_THERE: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_SWEEP_BUDGET: Final = 256
_SCAN_BATCH: Final = 64
_SCAN_BYTES: Final = 4 << 20


# -- names ----------------------------------------------------------------------------------------


def _group_of(key: bytes) -> tuple[str, int]:
    """``(group directory, length of the key prefix it stands for)``."""
    if len(key) >= _PREFIX_LEN and _PREFIXED.match(key):
        return f"{key[4:36].decode('ascii')}.{key[36]:02x}", _PREFIX_LEN
    return _OTHER, 0


def _group_prefix(group: str) -> bytes:
    return b"acs1" + group[:32].encode("ascii") + bytes.fromhex(group[33:])


def _locate(key: bytes) -> tuple[str, str, str]:
    group, cut = _group_of(key)
    digest = hashlib.blake2b(key, digest_size=32).digest()
    rest = key[cut:]
    name = "k" + rest.hex() if len(rest) <= _MAX_PLAIN else "h" + digest.hex()
    return group, f"{digest[0]:02x}", name


def _is_entry(name: str) -> bool:
    return name[:1] in ("k", "h")


def _key_from_name(group: str, name: str) -> bytes | None:
    """The key a ``k`` name spells out, without opening the file."""
    if name[:1] != "k":
        return None
    try:
        rest = bytes.fromhex(name[1:])
    except ValueError:
        return None
    return rest if group == _OTHER else _group_prefix(group) + rest


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# -- entry format ---------------------------------------------------------------------------------


def _encode_head(key: bytes, value: bytes, expires_ms: int) -> bytes:
    fields = _FIELDS.pack(_MAGIC, expires_ms, len(key), len(value))
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(fields)))
    return fields + crc.to_bytes(4, "big")


def _read_exact(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _write_all(fd: int, parts: list[bytes]) -> None:
    total = sum(len(p) for p in parts)
    written = os.writev(fd, parts)
    if written == total:
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


def _parse(fd: int, size: int, key: bytes | None) -> tuple[bytes, bytes, int] | None:
    """``(key, value, expires_ms)`` of an open entry file, or None when it is not a whole entry.

    With ``key`` given, the header is read together with exactly that key and compared to it.
    """
    want = _HEAD.size + (len(key) if key is not None else 0)
    head = _read_exact(fd, want if key is not None else min(size, _HEAD.size))
    if len(head) < _HEAD.size:
        return None
    magic, expires_ms, key_len, value_len, crc = _HEAD.unpack_from(head)
    if magic != _MAGIC or size != _HEAD.size + key_len + value_len:
        return None
    if key is not None:
        if key_len != len(key) or head[_HEAD.size :] != key:
            return None
        found = key
    else:
        found = _read_exact(fd, key_len)
        if len(found) != key_len:
            return None
    value = _read_exact(fd, value_len)
    if len(value) != value_len:
        return None
    if zlib.crc32(value, zlib.crc32(found, zlib.crc32(head[: _FIELDS.size]))) != crc:
        return None
    return found, value, expires_ms


def _expired(expires_ms: int, now_ms: int) -> bool:
    return expires_ms != 0 and expires_ms <= now_ms


# -- directories ----------------------------------------------------------------------------------


def _remove_if_same(dir_fd: int, name: str, seen: os.stat_result) -> bool:
    """Unlink ``name`` if it is still the file we looked at (not a newer write of the key)."""
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev):
            return False
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _subdir(parent: int, name: str, *, create: bool, durable: bool) -> int | None:
    """A descriptor of directory ``name`` in ``parent``, never through a symlink."""
    try:
        return os.open(name, _O_DIR, dir_fd=parent)
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
        os.mkdir(name, _DIR_MODE, dir_fd=parent)
    except FileExistsError:
        pass
    fd = os.open(name, _O_DIR, dir_fd=parent)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != _DIR_MODE:
            os.fchmod(fd, _DIR_MODE)
        if durable:
            os.fsync(parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Dirs:
    """Directory descriptors opened for one call, closed together."""

    __slots__ = ("_durable", "_fds", "_root", "directory")

    def __init__(self, directory: _Directory, *, durable: bool) -> None:
        self.directory = directory
        self._durable = durable
        self._root: int | None = None
        self._fds: dict[tuple[str, str], int] = {}

    def __enter__(self) -> _Dirs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        if self._root is not None:
            os.close(self._root)

    def root(self, *, create: bool) -> int | None:
        if self._root is None:
            try:
                self._root = os.open(self.directory.path, _O_DIR)
            except FileNotFoundError:
                if not create:
                    return None
                self.directory.recreate()
                self._root = os.open(self.directory.path, _O_DIR)
        return self._root

    def group(self, group: str, *, create: bool) -> int | None:
        fd = self._fds.get((group, ""))
        if fd is None:
            root = self.root(create=create)
            if root is None:
                return None
            fd = _subdir(root, group, create=create, durable=self._durable)
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
            fd = _subdir(parent, shard, create=create, durable=self._durable)
            if fd is None:
                return None
            self._fds[(group, shard)] = fd
        return fd

    def groups(self) -> list[str]:
        root = self.root(create=False)
        if root is None:
            return []
        with os.scandir(root) as entries:
            return sorted(
                e.name for e in entries if e.name == _OTHER or _GROUP_NAME.fullmatch(e.name)
            )

    def shards(self, group: str) -> list[str]:
        fd = self.group(group, create=False)
        if fd is None:
            return []
        with os.scandir(fd) as entries:
            return sorted(e.name for e in entries if _SHARD_NAME.fullmatch(e.name))

    def names(self, group: str, shard: str) -> list[str]:
        fd = self.shard(group, shard, create=False)
        if fd is None:
            return []
        with os.scandir(fd) as entries:
            return [e.name for e in entries]


def _prepare_root(path: str, *, repair: bool) -> str:
    """Create or check the cache directory: a real directory, ours, mode 0700."""
    real = os.path.realpath(path)
    try:
        os.makedirs(real, mode=_DIR_MODE, exist_ok=True)
        info = os.lstat(real)
    except OSError as exc:
        raise ConfigurationError("file backend: cannot create the cache directory") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError("file backend: the cache path is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigurationError("file backend: the cache directory is owned by another user")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077 and not repair:
        raise ConfigurationError(
            f"file backend: the cache directory is accessible to other users "
            f"(mode {mode:04o}); make it 0700 or pass repair_permissions=True"
        )
    if mode & 0o777 != _DIR_MODE:
        try:
            os.chmod(real, _DIR_MODE)
        except OSError as exc:
            raise ConfigurationError(
                "file backend: cannot set the cache directory to 0700"
            ) from exc
        if mode & 0o077:
            audit.emit("insecure_config", backend="file", reason="cache_dir_mode_repaired")
    return real


@dataclass(slots=True)
class _Usage:
    entries: int = 0
    bytes: int = 0
    checked: float = -math.inf


class _Directory:
    """Process-wide state of one cache directory, shared by every instance opened on it."""

    __slots__ = (
        "__weakref__",
        "_cursor",
        "_lock",
        "_sweep_lock",
        "cleaned",
        "host",
        "next_sweep",
        "path",
        "repair",
        "swept",
        "temp_max_age",
    )

    def __init__(self, path: str, *, repair: bool, temp_max_age: float) -> None:
        self.path = path
        self.repair = repair
        self.temp_max_age = temp_max_age
        self.host = _host_tag()
        self.cleaned = False
        self.next_sweep: float | None = None
        self.swept = 0
        self._lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._cursor: tuple[list[str], int, list[str] | None, int] | None = None

    def recreate(self) -> None:
        with self._lock:
            _prepare_root(self.path, repair=self.repair)

    def temp_name(self) -> str:
        return f"{_TEMP}{self.host}-{os.getpid()}-{secrets.token_hex(6)}"

    def temp_is_stale(self, name: str, mtime: float) -> bool:
        if time.time() - mtime > self.temp_max_age:
            return True
        host, _, rest = name[len(_TEMP) :].partition("-")
        pid_text = rest.partition("-")[0]
        if host != self.host or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        return pid > 0 and pid != os.getpid() and not _pid_alive(pid)

    def clean_temps_once(self) -> None:
        """Remove temporary files left by crashed writers: once per directory per process."""
        if self.cleaned:
            return
        with self._lock:
            if self.cleaned:
                return
            with _Dirs(self, durable=False) as dirs:
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
                if name.startswith(_TEMP):
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if self.temp_is_stale(name, info.st_mtime):
                        os.unlink(name, dir_fd=fd)
                elif not temps_only and _is_entry(name):
                    removed += _sweep_entry(fd, name, now_ms)
            except FileNotFoundError:
                continue
        return removed

    def sweep_step(self, now: float, interval: float) -> None:
        """Advance the expiry sweep by about ``_SWEEP_BUDGET`` files, when one is due."""
        if self.next_sweep is None:
            self.next_sweep = now + interval
        if now < self.next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            if self._advance(now, _SWEEP_BUDGET):
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
        with _Dirs(self, durable=False) as dirs:
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


def _sweep_entry(fd: int, name: str, now_ms: int) -> int:
    """Delete entry ``name`` if it is expired or malformed (header and length only)."""
    try:
        entry = os.open(name, _O_READ, dir_fd=fd)
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            return 0
        raise
    try:
        info = os.fstat(entry)
        if not stat.S_ISREG(info.st_mode):
            return 0
        head = _read_exact(entry, _HEAD.size)
    finally:
        os.close(entry)
    if len(head) == _HEAD.size:
        magic, expires_ms, key_len, value_len, _ = _HEAD.unpack(head)
        whole = magic == _MAGIC and info.st_size == _HEAD.size + key_len + value_len
        if whole and not _expired(expires_ms, now_ms):
            return 0
    return int(_remove_if_same(fd, name, info))


_registry: weakref.WeakValueDictionary[str, _Directory] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def _open_directory(path: str, *, repair: bool, temp_max_age: float) -> _Directory:
    spelled = os.path.normpath(path)
    with _registry_lock:
        found = _registry.get(spelled)
        if found is not None:
            return found
        real = _prepare_root(spelled, repair=repair)
        found = _registry.get(real)
        if found is None:
            found = _Directory(real, repair=repair, temp_max_age=temp_max_age)
            _registry[real] = found
        _registry[spelled] = found
        return found


# -- the backend ----------------------------------------------------------------------------------


class FileBackend:
    """Entries as files under ``directory`` (absolute; created 0700 when missing).

    ``max_entries`` / ``max_bytes``: per-namespace quotas (see the module docstring).
    ``durable``: also fsync the directory after each write, so a completed write survives a power
    loss. ``fsync``: fsync each entry before it replaces the old one (on by default; with it off
    a power loss may lose recent writes, but never leaves a torn entry readable: the length and
    CRC checks turn it into a miss). ``sweep_interval``: seconds between expiry sweeps (and
    quota rescans). ``repair_permissions``: chmod a group/other-accessible cache directory to
    0700 with an ``insecure_config`` audit event instead of refusing it. ``temp_max_age``: age
    after which a temporary file not provably owned by a dead local process is left-over.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_dir",
        "_durable",
        "_fsync",
        "_high",
        "_max_bytes",
        "_max_entries",
        "_on_evict",
        "_pending",
        "_quota_lock",
        "_sweep_interval",
        "_usage",
        "evictions",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        clock: Clock = system_clock,
        on_evict: Callable[[int], None] | None = None,
        durable: bool = False,
        fsync: bool = True,
        sweep_interval: float = 300.0,
        repair_permissions: bool = False,
        temp_max_age: float = 900.0,
    ) -> None:
        path = os.fspath(directory)
        if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path:
            raise ConfigurationError("file backend: the directory must be an absolute path")
        for name, limit in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
            ):
                raise ConfigurationError(f"{name} must be a positive int or None")
        for name, flag in (
            ("durable", durable),
            ("fsync", fsync),
            ("repair_permissions", repair_permissions),
        ):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False")
        for name, seconds in (("sweep_interval", sweep_interval), ("temp_max_age", temp_max_age)):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 < seconds < math.inf
            ):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        self._dir = _open_directory(path, repair=repair_permissions, temp_max_age=temp_max_age)
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._high = (
            None if max_entries is None else max_entries + max_entries // 8,
            None if max_bytes is None else max_bytes + max_bytes // 8,
        )
        self._clock = clock
        self._on_evict = on_evict
        self._durable = durable
        self._fsync = fsync or durable
        self._sweep_interval = float(sweep_interval)
        self._usage: dict[str, _Usage] = {}
        self._quota_lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self.evictions = 0

    def __repr__(self) -> str:
        return f"FileBackend(durable={self._durable}, closed={self._closed})"

    @property
    def _quota(self) -> bool:
        return self._max_entries is not None or self._max_bytes is not None

    # -- plumbing ---------------------------------------------------------------------------------

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise ClosedError("the file backend is closed")
        try:
            result = await anyio.to_thread.run_sync(func, *args)
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "unknown error")
            raise BackendUnavailable(f"file backend: I/O failed ({code})") from exc
        finally:
            self._report_evictions()
        return result

    def _report_evictions(self) -> None:
        with self._quota_lock:
            count, self._pending = self._pending, 0
        if count:
            self.evictions += count
            if self._on_evict is not None:
                self._on_evict(count)

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def _after_write(self, groups: dict[str, tuple[int, int]]) -> None:
        """Quota upkeep and the sweep, run in the worker thread after a write."""
        if self._quota:
            for group, (entries, size) in groups.items():
                self._charge(group, entries, size)
        now = self._clock()
        self._dir.sweep_step(now, self._sweep_interval)

    # -- reading ----------------------------------------------------------------------------------

    def _read(self, dirs: _Dirs, key: bytes, now_ms: int) -> bytes | None:
        group, shard, name = _locate(key)
        fd = dirs.shard(group, shard, create=False)
        if fd is None:
            return None
        try:
            entry = os.open(name, _O_READ, dir_fd=fd)
        except OSError as exc:
            if exc.errno in _NOT_THERE:
                return None
            raise
        try:
            info = os.fstat(entry)
            if not stat.S_ISREG(info.st_mode):
                return None
            parsed = _parse(entry, info.st_size, key)
            if parsed is not None and not _expired(parsed[2], now_ms):
                if self._quota:
                    stamp = time.time_ns()
                    with contextlib.suppress(PermissionError):  # LRU order is best effort
                        os.utime(entry, ns=(stamp, stamp))
                return parsed[1]
        finally:
            os.close(entry)
        _remove_if_same(fd, name, info)
        return None

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._dir.clean_temps_once()
        now_ms = self._now_ms()
        with _Dirs(self._dir, durable=False) as dirs:
            return [self._read(dirs, key, now_ms) for key in keys]

    async def get(self, key: bytes) -> bytes | None:
        return (await self._run(self._get_many, (key,)))[0]

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        return await self._run(self._get_many, list(keys))

    # -- writing ----------------------------------------------------------------------------------

    def _write(self, dirs: _Dirs, key: bytes, value: bytes, expires_ms: int) -> int:
        group, shard, name = _locate(key)
        fd = dirs.shard(group, shard, create=True)
        assert fd is not None  # noqa: S101 - create=True opens or raises
        temp = self._dir.temp_name()
        entry = os.open(temp, _O_TEMP, _FILE_MODE, dir_fd=fd)
        try:
            try:
                os.fchmod(entry, _FILE_MODE)
                head = _encode_head(key, value, expires_ms)
                _write_all(entry, [head, key, value])
                if self._quota:
                    # Explicit nanosecond stamps: the kernel's own are jiffy-coarse, and LRU
                    # eviction orders entries by them.
                    stamp = time.time_ns()
                    os.utime(entry, ns=(stamp, stamp))
                if self._fsync:
                    os.fsync(entry)
            finally:
                os.close(entry)
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=fd)
            except OSError:
                pass
            raise
        if self._durable:
            os.fsync(fd)
        return len(head) + len(key) + len(value)

    def _unlink(self, dirs: _Dirs, key: bytes) -> bool:
        group, shard, name = _locate(key)
        fd = dirs.shard(group, shard, create=False)
        if fd is None:
            return False
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        if self._durable:
            os.fsync(fd)
        return True

    def _set_many(self, items: Sequence[tuple[bytes, bytes]], ttl: float | None) -> None:
        self._dir.clean_temps_once()
        now = self._clock()
        expires_ms = 0 if ttl is None else max(1, math.ceil((now + ttl) * 1000))
        charged: dict[str, tuple[int, int]] = {}
        dropped = 0
        with _Dirs(self._dir, durable=self._durable) as dirs:
            for key, value in items:
                if ttl is not None and ttl <= 0:
                    self._unlink(dirs, key)
                    continue
                if self._max_bytes is not None and (
                    _HEAD.size + len(key) + len(value) > self._max_bytes
                ):
                    # An entry that can never fit is dropped rather than flushing the namespace.
                    self._unlink(dirs, key)
                    dropped += 1
                    continue
                size = self._write(dirs, key, value, expires_ms)
                group = _group_of(key)[0]
                entries, total = charged.get(group, (0, 0))
                charged[group] = (entries + 1, total + size)
        if dropped:
            with self._quota_lock:
                self._pending += dropped
        self._after_write(charged)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        await self._run(self._set_many, ((key, value),), ttl)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        if items:
            await self._run(self._set_many, list(items), ttl)

    def _delete(self, key: bytes) -> bool:
        self._dir.clean_temps_once()
        with _Dirs(self._dir, durable=self._durable) as dirs:
            deleted = self._unlink(dirs, key)
        if deleted and self._quota:
            with self._quota_lock:
                usage = self._usage.get(_group_of(key)[0])
                if usage is not None:
                    usage.entries -= 1
        self._after_write({})
        return deleted

    async def delete(self, key: bytes) -> bool:
        return await self._run(self._delete, key)

    # -- quotas -----------------------------------------------------------------------------------

    def _charge(self, group: str, entries: int, size: int) -> None:
        with self._quota_lock:
            usage = self._usage.setdefault(group, _Usage())
            usage.entries += entries
            usage.bytes += size
            high_entries, high_bytes = self._high
            if not (
                (high_entries is not None and usage.entries > high_entries)
                or (high_bytes is not None and usage.bytes > high_bytes)
                or time.monotonic() - usage.checked > self._sweep_interval
            ):
                return
            self._pending += self._enforce(group, usage)

    def _enforce(self, group: str, usage: _Usage) -> int:
        """Rescan ``group`` and evict its least recently used entries down to the limits."""
        files: list[tuple[int, int, str, str]] = []
        with _Dirs(self._dir, durable=False) as dirs:
            for shard in dirs.shards(group):
                fd = dirs.shard(group, shard, create=False)
                if fd is None:
                    continue
                with os.scandir(fd) as entries:
                    for item in entries:
                        if not _is_entry(item.name):
                            continue
                        try:
                            info = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.S_ISREG(info.st_mode):
                            files.append((info.st_mtime_ns, info.st_size, shard, item.name))
            count, total = len(files), sum(f[1] for f in files)
            evicted = 0
            if (self._max_entries is not None and count > self._max_entries) or (
                self._max_bytes is not None and total > self._max_bytes
            ):
                files.sort()
                for _, size, shard, name in files:
                    if (self._max_entries is None or count <= self._max_entries) and (
                        self._max_bytes is None or total <= self._max_bytes
                    ):
                        break
                    fd = dirs.shard(group, shard, create=False)
                    if fd is None:
                        continue
                    try:
                        os.unlink(name, dir_fd=fd)
                        evicted += 1
                    except FileNotFoundError:
                        pass
                    count -= 1
                    total -= size
        usage.entries, usage.bytes, usage.checked = count, total, time.monotonic()
        return evicted

    # -- namespaces -------------------------------------------------------------------------------

    def _groups_for(self, prefix: bytes) -> list[str]:
        if len(prefix) >= _PREFIX_LEN:
            return [_group_of(prefix)[0]]
        with _Dirs(self._dir, durable=False) as dirs:
            return [g for g in dirs.groups() if g == _OTHER or _group_prefix(g).startswith(prefix)]

    def _list(self, group: str, shard: str | None) -> list[str]:
        with _Dirs(self._dir, durable=False) as dirs:
            return dirs.shards(group) if shard is None else dirs.names(group, shard)

    def _delete_names(self, group: str, shard: str, names: list[str], prefix: bytes) -> int:
        whole = group != _OTHER and _group_prefix(group).startswith(prefix)
        removed = 0
        with _Dirs(self._dir, durable=False) as dirs:
            fd = dirs.shard(group, shard, create=False)
            if fd is None:
                return 0
            for name in names:
                if not _is_entry(name):
                    continue
                if not whole:
                    key = _key_from_name(group, name)
                    if key is None:
                        key = _peek_key(fd, name)
                    if key is None or not key.startswith(prefix):
                        continue
                try:
                    os.unlink(name, dir_fd=fd)
                    removed += 1
                except FileNotFoundError:
                    pass
            if removed and self._durable:
                os.fsync(fd)
        return removed

    async def delete_prefix(self, prefix: bytes) -> int:
        removed = 0
        for group in await self._run(self._groups_for, prefix):
            for shard in await self._run(self._list, group, None):
                names = await self._run(self._list, group, shard)
                removed += await self._run(self._delete_names, group, shard, names, prefix)
            with self._quota_lock:
                self._usage.pop(group, None)
        return removed

    def _read_names(
        self, group: str, shard: str, names: list[str], start: int, prefix: bytes
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        found: list[tuple[bytes, bytes]] = []
        size = 0
        now_ms = self._now_ms()
        with _Dirs(self._dir, durable=False) as dirs:
            fd = dirs.shard(group, shard, create=False)
            if fd is None:
                return found, len(names)
            index = start
            while index < len(names) and len(found) < _SCAN_BATCH and size < _SCAN_BYTES:
                name = names[index]
                index += 1
                if not _is_entry(name):
                    continue
                item = _read_any(fd, name)
                if item is None or _expired(item[2], now_ms):
                    continue
                key, value, _ = item
                if key.startswith(prefix) and _locate(key) == (group, shard, name):
                    found.append((key, value))
                    size += len(value)
        return found, index

    async def scan(self, prefix: bytes) -> AsyncIterator[tuple[bytes, bytes]]:
        for group in await self._run(self._groups_for, prefix):
            for shard in await self._run(self._list, group, None):
                names = await self._run(self._list, group, shard)
                index = 0
                while index < len(names):
                    batch, index = await self._run(
                        self._read_names, group, shard, names, index, prefix
                    )
                    for item in batch:
                        yield item

    # -- upkeep -----------------------------------------------------------------------------------

    def _sweep_all(self) -> int:
        self._dir.clean_temps_once()
        return self._dir.full_sweep(self._clock(), self._sweep_interval)

    async def sweep(self) -> int:
        """Run a full expiry sweep of the whole directory now; returns how many entries it removed
        (expired or malformed). Writes already drive sweeps; this is for tools and tests."""
        return await self._run(self._sweep_all)

    async def aclose(self) -> None:
        self._closed = True


def _read_any(fd: int, name: str) -> tuple[bytes, bytes, int] | None:
    try:
        entry = os.open(name, _O_READ, dir_fd=fd)
    except OSError as exc:
        if exc.errno in _NOT_THERE:
            return None
        raise
    try:
        info = os.fstat(entry)
        return _parse(entry, info.st_size, None) if stat.S_ISREG(info.st_mode) else None
    finally:
        os.close(entry)


def _peek_key(fd: int, name: str) -> bytes | None:
    item = _read_any(fd, name)
    return None if item is None else item[0]


def from_url(
    url: str,
    *,
    clock: Clock,
    strict: bool,
    max_entries: int | None,
    max_bytes: int | None,
    on_evict: Callable[[int], None] | None,
) -> FileBackend:
    """``file:///abs/dir`` (percent-encoded). No host, no query, no fragment: options are typed
    keyword arguments of :class:`FileBackend`."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or not url.lower().startswith("file://"):
        raise ConfigurationError("a file backend URL looks like file:///abs/dir")
    if parts.netloc:
        raise ConfigurationError("file:// URLs take no host: use file:///abs/dir")
    if "?" in url or "#" in url:
        raise ConfigurationError(
            "file:// URLs take no query or fragment; pass options to FileBackend(...)"
        )
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError as exc:
        raise ConfigurationError("file:// URL paths must be UTF-8") from exc
    if not path.startswith("/") or "\x00" in path:
        raise ConfigurationError("file:// URLs need an absolute path: file:///abs/dir")
    return FileBackend(
        path, max_entries=max_entries, max_bytes=max_bytes, clock=clock, on_evict=on_evict
    )
