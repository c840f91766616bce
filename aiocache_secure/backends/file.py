"""``file:///abs/dir``: one file per entry in a private directory, shareable between processes.

Layout (every name below is derived from the storage key by a fixed encoding, never taken from it)::

    <root>/                       0700, owned by this user, parents safe (checked at start)
      <tag>.<sep>/                one directory per namespace prefix: "acs1" + 32-hex tag + 1 byte
        <shard>/                  2 hex digits of BLAKE2b(key): 256 shards keep directories small
          k<hex(rest of key)>     an entry, when the rest of the key is at most 100 bytes
          h<hex(BLAKE2b(key))>    an entry with a longer key (the full key is in its header)
          .t<host>-<pid>-<rand>   a write in progress (or left over by a crashed writer)
      _/                          keys that do not start with a namespace prefix, sharded alike

Entry file (0600)::

    "ACF1" | expires_ms u64 (0 = never) | key_len u32 | value_len u64 | crc32 u32 | key | value

Guarantees:

* Nobody else can swap the root: missing directories on its path are created 0700, and every
  parent must belong to root or this user and be writable by nobody else unless sticky (like
  ``/tmp``). The root is then held as a descriptor, used for every operation once an ``lstat`` of
  the path confirms it still names that directory; a root replaced by a symlink or by anything
  that fails these checks is ``BackendUnavailable``, never followed (see :mod:`._file_dir`).
* Keys cannot escape the root: names are hex, so ``../x``, ``/abs``, NUL or ``..\\`` in a key are
  just more hex digits. Every directory below the root is opened relative to its parent's
  descriptor with ``O_NOFOLLOW``, and entries with ``O_NOFOLLOW | O_NONBLOCK``, so a symlink (or
  a FIFO) planted inside the cache is never followed: reads miss, writes replace the link itself.
* Writes are atomic: a temporary file created with ``O_EXCL | O_NOFOLLOW`` and mode 0600 in the
  entry's own directory is written (and fsynced with ``fsync=True``) and renamed over the entry
  (``durable=True`` also fsyncs both). Readers see the old or the new entry, never a mix;
  concurrent writers of one key leave one whole value. No lock files exist.
* A truncated or corrupted entry (bad magic, length, key or CRC) is a miss and is deleted. Only
  real I/O failures raise, as :class:`~aiocache_secure.errors.BackendUnavailable`.
* Clearing a namespace (and deleting its last entries) removes the directories it emptied, so
  an erased namespace leaves no directory named after it; writers recreate pruned directories.
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

Small operations run on the event loop while a guard measures them quick, other operations in
batched worker-thread hops (:mod:`._file_hops`). Names and the entry format live in
:mod:`._file_format`, directory traversal and the shared per-directory state (leftover cleanup,
sweep) in :mod:`._file_dir`; docs/backends/file.md has
the whole picture.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final, TypeVar
from urllib.parse import unquote, urlsplit

from ..clock import Clock, system_clock
from ..errors import BackendUnavailable, ClosedError, ConfigurationError
from ..keyspace import PREFIX_LEN
from ._file_dir import Dirs, open_directory, remove_if_same
from ._file_format import (
    HEAD,
    NOT_THERE,
    O_READ,
    OTHER,
    encode_head,
    expired,
    group_of,
    group_prefix,
    is_entry,
    key_from_name,
    locate,
    parse,
    peek_key,
    read_any,
    write_all,
)
from ._file_hops import Hops, HopStats
from ._file_quota import Quotas
from ._file_shard import FILE_MODE, create_temp, shard_lock

__all__ = ["FileBackend", "from_url"]

_T = TypeVar("_T")

_SCAN_BATCH: Final = 64
_SCAN_BYTES: Final = 4 << 20
# Inline (no thread hop) at most this many keys, and this many value bytes, per operation.
_INLINE_KEYS: Final = 32
_INLINE_BYTES: Final = 256 << 10


# -- the backend ----------------------------------------------------------------------------------


class FileBackend:
    """Entries as files under ``directory`` (absolute; created 0700 when missing).

    ``max_entries`` / ``max_bytes``: per-namespace quotas (see the module docstring).
    ``durable``: also fsync the directory after each write, so a completed write survives a power
    loss. ``fsync``: fsync each entry before it replaces the old one (off by default, as a cache
    can recompute what it loses: a power loss may lose recent writes, but never leaves a torn or
    wrong entry readable, as the length and CRC checks, and the AEAD above, turn it into a miss;
    with it on, every write waits for the disk and runs in a worker thread).
    ``sweep_interval``: seconds between expiry sweeps (and quota rescans).
    ``repair_permissions``: chmod a group/other-accessible cache directory to 0700 with an
    ``insecure_config`` audit event instead of refusing it. ``temp_max_age``: age
    after which a temporary file not provably owned by a dead local process is left-over.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_dir",
        "_durable",
        "_fsync",
        "_hops",
        "_on_evict",
        "_quotas",
        "_sweep_interval",
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
        fsync: bool = False,
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
        self._dir = open_directory(path, repair=repair_permissions, temp_max_age=temp_max_age)
        self._quotas = Quotas(
            self._dir,
            max_entries=max_entries,
            max_bytes=max_bytes,
            sweep_interval=float(sweep_interval),
        )
        self._clock = clock
        self._on_evict = on_evict
        self._durable = durable
        self._fsync = fsync or durable
        self._sweep_interval = float(sweep_interval)
        self._hops = Hops()
        self._closed = False
        self.evictions = 0

    def __repr__(self) -> str:
        return f"FileBackend(durable={self._durable}, closed={self._closed})"

    @property
    def evicts(self) -> bool:
        """True when ``max_entries``/``max_bytes`` may drop live entries to make room."""
        return self._quotas.on

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def hop_stats(self) -> HopStats:
        """How many operations ran inline and in worker threads, in how many hops."""
        return self._hops.stats

    def _inline_reads(self, count: int) -> bool:
        return count <= _INLINE_KEYS and self._dir.cleaned

    def _inline_writes(self, count: int, size: int) -> bool:
        """Writes run inline only without fsync and quotas (an eviction rescan is long) and when
        no sweep is due; the guard in :mod:`._file_hops` decides the rest."""
        return (
            not self._fsync
            and not self._quotas.on
            and count <= _INLINE_KEYS
            and size <= _INLINE_BYTES
            and self._dir.cleaned
            and not self._dir.sweep_due(self._clock())
        )

    async def _run(self, func: Callable[..., _T], *args: object, inline: bool = False) -> _T:
        if self._closed:
            raise ClosedError("the file backend is closed")
        try:
            result: _T = await self._hops.run(inline, func, *args)
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "unknown error")
            raise BackendUnavailable(f"file backend: I/O failed ({code})") from exc
        finally:
            self._report_evictions()
        return result

    def _report_evictions(self) -> None:
        # Never wait on the loop for a worker thread's eviction rescan: report next time.
        count = self._quotas.take_evictions()
        if count:
            self.evictions += count
            if self._on_evict is not None:
                self._on_evict(count)

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def _after_write(self, groups: dict[str, tuple[int, int]]) -> None:
        """Quota upkeep and the sweep, run in the worker thread after a write."""
        quotas = self._quotas
        if quotas.on:
            for group, (entries, size) in groups.items():
                quotas.charge(group, entries, size)
        now = self._clock()
        self._dir.sweep_step(now, self._sweep_interval)

    # -- reading ----------------------------------------------------------------------------------

    def _read(self, dirs: Dirs, key: bytes, now_ms: int) -> bytes | None:
        group, shard, name = locate(key)
        fd = dirs.shard(group, shard, create=False)
        if fd is None:
            return None
        try:
            entry = os.open(name, O_READ, dir_fd=fd)
        except OSError as exc:
            if exc.errno in NOT_THERE:
                return None
            raise
        try:
            info = os.fstat(entry)
            if not stat.S_ISREG(info.st_mode):
                return None
            parsed = parse(entry, info.st_size, key)
            if parsed is not None and not expired(parsed[2], now_ms):
                if self._quotas.on:
                    stamp = time.time_ns()
                    with contextlib.suppress(PermissionError):  # LRU order is best effort
                        os.utime(entry, ns=(stamp, stamp))
                return parsed[1]
        finally:
            os.close(entry)
        remove_if_same(fd, name, info)
        return None

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._dir.clean_temps_once()
        now_ms = self._now_ms()
        with Dirs(self._dir, durable=False) as dirs:
            return [self._read(dirs, key, now_ms) for key in keys]

    async def get(self, key: bytes) -> bytes | None:
        return (await self._run(self._get_many, (key,), inline=self._inline_reads(1)))[0]

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        return await self._run(self._get_many, list(keys), inline=self._inline_reads(len(keys)))

    # -- writing ----------------------------------------------------------------------------------

    def _write(self, dirs: Dirs, key: bytes, value: bytes, expires_ms: int) -> int:
        group, shard, name = locate(key)
        temp = self._dir.temp_name()
        fd, entry = create_temp(dirs, group, shard, temp)
        try:
            try:
                os.fchmod(entry, FILE_MODE)
                head = encode_head(key, value, expires_ms)
                if not self._fsync:
                    # Allocated blocks spare the writeback that ext4 starts when a file with
                    # delayed allocation is renamed over another; an fsync does that anyway.
                    with contextlib.suppress(OSError):
                        os.posix_fallocate(entry, 0, len(head) + len(key) + len(value))
                write_all(entry, [head, key, value])
                if self._quotas.on:
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

    def _unlink(self, dirs: Dirs, key: bytes) -> bool:
        group, shard, name = locate(key)
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
        with Dirs(self._dir, durable=self._durable) as dirs:
            for key, value in items:
                if ttl is not None and ttl <= 0:
                    self._unlink(dirs, key)
                    continue
                if not self._quotas.fits(HEAD.size + len(key) + len(value)):
                    # An entry that can never fit is dropped rather than flushing the namespace.
                    self._unlink(dirs, key)
                    dropped += 1
                    continue
                with shard_lock(dirs, key):
                    size = self._write(dirs, key, value, expires_ms)
                group = group_of(key)[0]
                entries, total = charged.get(group, (0, 0))
                charged[group] = (entries + 1, total + size)
        if dropped:
            self._quotas.evicted(dropped)
        self._after_write(charged)

    async def set(self, key: bytes, value: bytes, *, ttl: float | None) -> None:
        inline = self._inline_writes(1, len(key) + len(value))
        await self._run(self._set_many, ((key, value),), ttl, inline=inline)

    # -- atomic updates (AtomicBackend) ------------------------------------------------------------
    #
    # Writers of one shard directory serialize on an exclusive flock of that directory's own
    # descriptor (plain writes included), so "read, compare, write" is atomic across processes
    # sharing the cache directory, and no lock file is ever created or left behind.

    def _swap(
        self, key: bytes, value: bytes, ttl: float | None, expect: bytes | None, absent: bool
    ) -> bool:
        self._dir.clean_temps_once()
        now = self._clock()
        now_ms = math.floor(now * 1000)
        expires_ms = 0 if ttl is None else max(1, math.ceil((now + ttl) * 1000))
        with Dirs(self._dir, durable=self._durable) as dirs, shard_lock(dirs, key):
            current = self._read(dirs, key, now_ms)
            if absent and current is not None:
                return False
            if not absent and (current is None or current != expect):
                return False
            size = self._write(dirs, key, value, expires_ms)
        self._after_write({group_of(key)[0]: (1, size)})
        return True

    async def add(self, key: bytes, value: bytes, *, ttl: float | None) -> bool:
        inline = self._inline_writes(1, len(key) + len(value))
        return await self._run(self._swap, key, value, ttl, None, True, inline=inline)

    async def get_versioned(self, key: bytes) -> tuple[bytes, bytes] | None:
        value = await self.get(key)
        return None if value is None else (value, value)

    async def compare_and_set(
        self, key: bytes, token: bytes, value: bytes, *, ttl: float | None
    ) -> bool:
        inline = self._inline_writes(1, len(key) + len(value))
        return await self._run(self._swap, key, value, ttl, token, False, inline=inline)

    async def set_many(self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None) -> None:
        if items:
            size = sum(len(key) + len(value) for key, value in items)
            inline = self._inline_writes(len(items), size)
            await self._run(self._set_many, list(items), ttl, inline=inline)

    def _delete(self, key: bytes) -> bool:
        self._dir.clean_temps_once()
        with Dirs(self._dir, durable=self._durable) as dirs:
            deleted = self._unlink(dirs, key)
            if deleted:
                group, shard, _ = locate(key)
                dirs.prune(group, [shard])
        if deleted and self._quotas.on:
            self._quotas.deleted(group_of(key)[0])
        self._after_write({})
        return deleted

    async def delete(self, key: bytes) -> bool:
        inline = not self._durable and self._inline_writes(1, 0)
        return await self._run(self._delete, key, inline=inline)

    # -- namespaces -------------------------------------------------------------------------------

    def _groups_for(self, prefix: bytes) -> list[str]:
        if len(prefix) >= PREFIX_LEN:
            return [group_of(prefix)[0]]
        with Dirs(self._dir, durable=False) as dirs:
            return [g for g in dirs.groups() if g == OTHER or group_prefix(g).startswith(prefix)]

    def _list(self, group: str, shard: str | None) -> list[str]:
        with Dirs(self._dir, durable=False) as dirs:
            return dirs.shards(group) if shard is None else dirs.names(group, shard)

    def _delete_names(self, group: str, shard: str, names: list[str], prefix: bytes) -> int:
        whole = group != OTHER and group_prefix(group).startswith(prefix)
        removed = 0
        with Dirs(self._dir, durable=False) as dirs:
            fd = dirs.shard(group, shard, create=False)
            if fd is None:
                return 0
            for name in names:
                if not is_entry(name):
                    continue
                if not whole:
                    key = key_from_name(group, name)
                    if key is None:
                        key = peek_key(fd, name)
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

    def _prune(self, group: str) -> None:
        with Dirs(self._dir, durable=self._durable) as dirs:
            dirs.prune(group, dirs.shards(group))

    async def delete_prefix(self, prefix: bytes) -> int:
        removed = 0
        for group in await self._run(self._groups_for, prefix):
            for shard in await self._run(self._list, group, None):
                names = await self._run(self._list, group, shard)
                removed += await self._run(self._delete_names, group, shard, names, prefix)
            if group != OTHER and group_prefix(group).startswith(prefix):
                await self._run(self._prune, group)
            self._quotas.forget(group)
        return removed

    def _read_names(
        self, group: str, shard: str, names: list[str], start: int, prefix: bytes
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        found: list[tuple[bytes, bytes]] = []
        size = 0
        now_ms = self._now_ms()
        with Dirs(self._dir, durable=False) as dirs:
            fd = dirs.shard(group, shard, create=False)
            if fd is None:
                return found, len(names)
            index = start
            while index < len(names) and len(found) < _SCAN_BATCH and size < _SCAN_BYTES:
                name = names[index]
                index += 1
                if not is_entry(name):
                    continue
                item = read_any(fd, name)
                if item is None or expired(item[2], now_ms):
                    continue
                key, value, _ = item
                if key.startswith(prefix) and locate(key) == (group, shard, name):
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
