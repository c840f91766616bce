"""The file backend's names and entry format (see :mod:`aiocache_secure.backends.file`).

Pure functions over bytes and open file descriptors: how a storage key becomes a namespace
directory, a shard and a file name, and how an entry file is written and checked.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import struct
import zlib
from typing import Final

from ..keyspace import FORMAT, NAMESPACED, PREFIX_LEN, TAG_LEN

MAGIC: Final = b"ACF1"
FIELDS: Final = struct.Struct(">4sQIQ")
HEAD: Final = struct.Struct(">4sQIQI")
GROUP_NAME: Final = re.compile(r"[0-9a-f]{32}\.[0-9a-f]{2}")
SHARD_NAME: Final = re.compile(r"[0-9a-f]{2}")
OTHER: Final = "_"
MAX_PLAIN: Final = 100
TEMP: Final = ".t"
# Entries up to this size are read in one call (header, key and value together).
WHOLE_READ: Final = 64 << 10
O_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
O_TEMP: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NOT_THERE: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


# -- names ----------------------------------------------------------------------------------------


def group_of(key: bytes) -> tuple[str, int]:
    """``(group directory, length of the key prefix it stands for)``."""
    if len(key) >= PREFIX_LEN and NAMESPACED.match(key):
        tag = key[len(FORMAT) : PREFIX_LEN - 1].decode("ascii")
        return f"{tag}.{key[PREFIX_LEN - 1]:02x}", PREFIX_LEN
    return OTHER, 0


def group_prefix(group: str) -> bytes:
    return FORMAT + group[:TAG_LEN].encode("ascii") + bytes.fromhex(group[TAG_LEN + 1 :])


def locate(key: bytes) -> tuple[str, str, str]:
    group, cut = group_of(key)
    digest = hashlib.blake2b(key, digest_size=32).digest()
    rest = key[cut:]
    name = "k" + rest.hex() if len(rest) <= MAX_PLAIN else "h" + digest.hex()
    return group, f"{digest[0]:02x}", name


def is_entry(name: str) -> bool:
    return name[:1] in ("k", "h")


def key_from_name(group: str, name: str) -> bytes | None:
    """The key a ``k`` name spells out, without opening the file."""
    if name[:1] != "k":
        return None
    try:
        rest = bytes.fromhex(name[1:])
    except ValueError:
        return None
    return rest if group == OTHER else group_prefix(group) + rest


# -- entry format ---------------------------------------------------------------------------------


def encode_head(key: bytes, value: bytes, expires_ms: int) -> bytes:
    fields = FIELDS.pack(MAGIC, expires_ms, len(key), len(value))
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(fields)))
    return fields + crc.to_bytes(4, "big")


def read_exact(fd: int, size: int) -> bytes:
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


def write_all(fd: int, parts: list[bytes]) -> None:
    total = sum(len(p) for p in parts)
    written = os.writev(fd, parts)
    if written == total:
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


def parse(fd: int, size: int, key: bytes | None) -> tuple[bytes, bytes, int] | None:
    """``(key, value, expires_ms)`` of an open entry file, or None when it is not a whole entry.

    With ``key`` given, the header is read together with exactly that key and compared to it.
    """
    if key is not None and size <= WHOLE_READ:
        return _parse_whole(read_exact(fd, size), size, key)
    want = HEAD.size + (len(key) if key is not None else 0)
    head = read_exact(fd, want if key is not None else min(size, HEAD.size))
    if len(head) < HEAD.size:
        return None
    magic, expires_ms, key_len, value_len, crc = HEAD.unpack_from(head)
    if magic != MAGIC or size != HEAD.size + key_len + value_len:
        return None
    if key is not None:
        if key_len != len(key) or head[HEAD.size :] != key:
            return None
        found = key
    else:
        found = read_exact(fd, key_len)
        if len(found) != key_len:
            return None
    value = read_exact(fd, value_len)
    if len(value) != value_len:
        return None
    if zlib.crc32(value, zlib.crc32(found, zlib.crc32(head[: FIELDS.size]))) != crc:
        return None
    return found, value, expires_ms


def _parse_whole(data: bytes, size: int, key: bytes) -> tuple[bytes, bytes, int] | None:
    """:func:`parse` of a small entry read in one call."""
    if len(data) != size or size < HEAD.size:
        return None
    magic, expires_ms, key_len, value_len, crc = HEAD.unpack_from(data)
    end = HEAD.size + key_len
    if (
        magic != MAGIC
        or size != end + value_len
        or key_len != len(key)
        or data[HEAD.size : end] != key
    ):
        return None
    value = data[end:]
    if zlib.crc32(value, zlib.crc32(key, zlib.crc32(data[: FIELDS.size]))) != crc:
        return None
    return key, value, expires_ms


def expired(expires_ms: int, now_ms: int) -> bool:
    return expires_ms != 0 and expires_ms <= now_ms


def read_any(fd: int, name: str) -> tuple[bytes, bytes, int] | None:
    try:
        entry = os.open(name, O_READ, dir_fd=fd)
    except OSError as exc:
        if exc.errno in NOT_THERE:
            return None
        raise
    try:
        info = os.fstat(entry)
        return parse(entry, info.st_size, None) if stat.S_ISREG(info.st_mode) else None
    finally:
        os.close(entry)


def peek_key(fd: int, name: str) -> bytes | None:
    item = read_any(fd, name)
    return None if item is None else item[0]
