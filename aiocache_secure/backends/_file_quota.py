"""The file backend's per-namespace quotas: usage accounting and least-recently-used eviction.

Each namespace prefix (a group of entries) has its usage, entries and bytes, counted by this
process's writes and deletes. Other processes write to the same directory, so the count is only
an estimate: when it passes the high-water mark (the limit plus an eighth) or a sweep interval
has passed since the last rescan, the group's directory is rescanned and its least recently used
files (oldest modification time: reads and writes stamp it) are removed down to the limit.
Rescans run in worker threads; the evictions they make are counted there and taken by the event
loop later (:meth:`Quotas.take_evictions` never waits for a rescan in progress).
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
from dataclasses import dataclass

from ._file_dir import Directory, Dirs
from ._file_format import is_entry

__all__ = ["Quotas"]


@dataclass(slots=True)
class _Usage:
    entries: int = 0
    bytes: int = 0
    checked: float = -math.inf


class Quotas:
    """``max_entries`` / ``max_bytes`` per namespace prefix of one cache directory."""

    __slots__ = (
        "_dir",
        "_high",
        "_lock",
        "_pending",
        "_sweep_interval",
        "_usage",
        "max_bytes",
        "max_entries",
        "on",
    )

    def __init__(
        self,
        directory: Directory,
        *,
        max_entries: int | None,
        max_bytes: int | None,
        sweep_interval: float,
    ) -> None:
        self._dir = directory
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.on = max_entries is not None or max_bytes is not None
        self._high = (
            None if max_entries is None else max_entries + max_entries // 8,
            None if max_bytes is None else max_bytes + max_bytes // 8,
        )
        self._sweep_interval = sweep_interval
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()
        self._pending = 0

    def fits(self, size: int) -> bool:
        """Whether an entry of ``size`` bytes can ever fit (one that cannot is dropped rather
        than flushing the namespace to make room)."""
        return self.max_bytes is None or size <= self.max_bytes

    def charge(self, group: str, entries: int, size: int) -> None:
        """Count a write; rescan and evict when the estimate passes the high-water mark."""
        with self._lock:
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

    def deleted(self, group: str) -> None:
        with self._lock:
            usage = self._usage.get(group)
            if usage is not None:
                usage.entries -= 1

    def evicted(self, count: int) -> None:
        """Count entries dropped without a rescan (too large to ever fit)."""
        with self._lock:
            self._pending += count

    def forget(self, group: str) -> None:
        """The group was cleared: its next write starts a fresh count."""
        with self._lock:
            self._usage.pop(group, None)

    def take_evictions(self) -> int:
        """Evictions counted since the last call; 0 while a rescan holds the lock."""
        if not self._pending or not self._lock.acquire(blocking=False):
            return 0
        try:
            count, self._pending = self._pending, 0
        finally:
            self._lock.release()
        return count

    def _enforce(self, group: str, usage: _Usage) -> int:
        """Rescan ``group`` and evict its least recently used entries down to the limits."""
        max_entries, max_bytes = self.max_entries, self.max_bytes
        files: list[tuple[int, int, str, str]] = []
        with Dirs(self._dir, durable=False) as dirs:
            for shard in dirs.shards(group):
                fd = dirs.shard(group, shard, create=False)
                if fd is None:
                    continue
                with os.scandir(fd) as entries:
                    for item in entries:
                        if not is_entry(item.name):
                            continue
                        try:
                            info = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.S_ISREG(info.st_mode):
                            files.append((info.st_mtime_ns, info.st_size, shard, item.name))
            count, total = len(files), sum(f[1] for f in files)
            evicted = 0
            if (max_entries is not None and count > max_entries) or (
                max_bytes is not None and total > max_bytes
            ):
                files.sort()
                for _, size, shard, name in files:
                    if (max_entries is None or count <= max_entries) and (
                        max_bytes is None or total <= max_bytes
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
