"""The file backend's shard directories: the writer's lock on one, and its temporary files.

A write takes an exclusive ``flock`` of the key's shard directory (atomic updates and
replacements of one key exclude each other across processes), then writes a temporary file in
it and renames it over the entry. A concurrent ``clear`` may prune an emptied shard directory
under a writer at any moment: both steps recreate it and retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import Final

from ._file_dir import Dirs
from ._file_format import O_TEMP, locate
from ._file_hops import WouldBlock, inline_now

__all__ = ["CREATE_ATTEMPTS", "FILE_MODE", "create_temp", "shard_lock"]

FILE_MODE: Final = 0o600
CREATE_ATTEMPTS: Final = 16


@contextlib.contextmanager
def shard_lock(dirs: Dirs, key: bytes) -> Iterator[None]:
    """Exclusive flock of the key's shard directory, on a descriptor of our own: the cached one
    may be closed under us when a concurrent clear prunes the directory and we reopen it."""
    group, shard, _ = locate(key)
    for attempt in range(CREATE_ATTEMPTS):
        try:
            fd = dirs.shard(group, shard, create=True)
            break
        except FileNotFoundError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            dirs.forget(group)
    assert fd is not None  # noqa: S101 - create=True opens or raises
    # A fresh open file description (not a dup): the lock belongs to it alone, so closing it
    # releases the lock whatever happens to the cached descriptor meanwhile.
    lock = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if inline_now():  # another writer holds it: wait in a worker thread, not here
                raise WouldBlock from None
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def create_temp(dirs: Dirs, group: str, shard: str, temp: str) -> tuple[int, int]:
    """``(shard directory fd, temporary file fd)``, recreating directories that a concurrent
    clear pruned under us (each retry means another process emptied and removed them)."""
    for _ in range(CREATE_ATTEMPTS - 1):
        try:
            return _open_temp(dirs, group, shard, temp)
        except FileNotFoundError:
            dirs.forget(group)
    return _open_temp(dirs, group, shard, temp)


def _open_temp(dirs: Dirs, group: str, shard: str, temp: str) -> tuple[int, int]:
    fd = dirs.shard(group, shard, create=True)
    assert fd is not None  # noqa: S101 - create=True opens or raises
    return fd, os.open(temp, O_TEMP, FILE_MODE, dir_fd=fd)
