"""Tags: turn every entry carrying a tag into a miss at once, in O(1) store operations.

Each (namespace, tag) has a *version record*: an ordinary entry of the namespace, stored through
the namespace's layers like any other (so its key is hashed and its value sealed and bound to the
namespace where the namespace does that), under a reserved key that no cache key can spell —
``0xFF "t"`` + the tag id. Cache keys are valid UTF-8, where the byte 0xFF never occurs. The
record holds a random 64-bit version and never expires.

A tagged entry's frame (:mod:`aiocache_secure.frame`) carries, inside the sealed value, one
``(tag id, version)`` reference per tag: the versions current when it was written.

* **Write** (``set``/``set_many``/``add`` with ``tags=``): one batch read of the records; a
  missing one is created with set-if-absent (``add``) holding a random version, so processes that
  race to create it agree on the one that won.
* **Read**: a tagged entry is a hit only if every reference equals its record's current version.
  A record that is missing (cleared, evicted), unreadable or tampered with makes the entry a miss,
  and so does a record that cannot be read under ``fail_open``: never a stale hit.
* **Invalidate**: one batch write of fresh random versions, one record per tag, however many
  entries carry the tag. The entries themselves stay where they are until their expiry (or the
  next read, which deletes them): no index of entries per tag is kept or scanned.

Tag ids are 16 bytes of BLAKE2b over the storage key the namespace's key layer gives to
``0xFF "i"`` + the tag name: keyed by the namespace's key-hashing secret where keys are hashed;
where they are not (``hash_keys=False``), a plain hash of the namespace prefix and the name. Tag
names are never written to the store, to a log or into an exception message.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, cast

from . import frame
from .backend import AtomicBackend, Backend
from .errors import BackendError, IntegrityError, UnsupportedOperation

__all__ = ["MAX_TAG_BYTES", "MAX_TAGS", "Pending", "TagIndex", "check_tags", "is_record"]

MAX_TAGS: Final = 16
"""Tags per entry (and per ``invalidate_tags`` call)."""
MAX_TAG_BYTES: Final = 256
"""UTF-8 bytes per tag name."""

RECORD: Final = b"\xfft"
_ID: Final = b"\xffi"
_VERSION: Final = struct.Struct(">Q")
_MAX_IDS: Final = 4096  # tag ids kept per namespace, so a hot tag is not hashed on every call
STALE: Final = "stale"
"""Reason of a miss whose entry a tag invalidated (or whose record is gone): discard it."""
UNREAD: Final = "unread"
"""Reason of a miss whose records could not be read (``fail_open``): keep the entry."""


def check_tags(tags: object) -> tuple[str, ...]:
    """The distinct tag names of ``tags`` (a list, tuple or set of non-empty str), in order.

    TypeError or ValueError otherwise; the message never repeats a tag.
    """
    if type(tags) is list and len(tags) <= MAX_TAGS:  # the common case, at a fraction of the cost
        for tag in tags:
            if type(tag) is not str or not tag.isascii() or not 0 < len(tag) <= MAX_TAG_BYTES:
                break
        else:
            return (tags[0],) if len(tags) == 1 else tuple(dict.fromkeys(tags))
    if isinstance(tags, str | bytes | bytearray) or not isinstance(
        tags, list | tuple | set | frozenset
    ):
        raise TypeError("tags must be a list of str")
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be str, not {type(tag).__name__}")
        if not tag:
            raise ValueError("a tag must not be empty")
        try:
            size = len(tag.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("tags must be valid unicode (no lone surrogates)") from None
        if size > MAX_TAG_BYTES:
            raise ValueError(f"tags are limited to {MAX_TAG_BYTES} bytes of UTF-8")
    unique = tuple(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per entry")
    return unique


def is_record(raw: bytes) -> bool:
    """Whether ``raw`` (a key as the facade hands it to the layers) is a version record's."""
    return raw[:1] == b"\xff"


class Pending:
    """A tagged entry opened up to its tag check: its value and its packed references."""

    __slots__ = ("refs", "value")

    def __init__(self, value: Any, refs: bytes) -> None:
        self.value = value
        self.refs = refs

    def __repr__(self) -> str:
        return "Pending(...)"


def _unpack_refs(refs: bytes) -> list[tuple[bytes, int]]:
    # ``refs`` is exactly the count byte and count references (frame.unpack_tagged cuts it so).
    return cast(list[tuple[bytes, int]], list(frame.REF.iter_unpack(memoryview(refs)[1:])))


class TagIndex:
    """One namespace's tag records, read and written through its layer stack ``stack``.

    ``storage_key`` is the key layer's mapping (keys tag ids); ``embed`` whether frames of the
    namespace embed their key; ``failed`` the facade's handler of a store failure, which raises
    unless the namespace fails open.
    """

    __slots__ = (
        "_confirmed",
        "_current",
        "_embed",
        "_failed",
        "_ids",
        "_keys",
        "_ref_keys",
        "_stack",
        "_storage_key",
    )

    def __init__(
        self,
        stack: Backend,
        *,
        storage_key: Callable[[bytes], bytes],
        embed: bool,
        failed: Callable[[BackendError], None],
    ) -> None:
        self._stack = stack
        self._storage_key = storage_key
        self._embed = embed
        self._failed = failed
        self._ids: dict[str, bytes] = {}
        self._keys: dict[tuple[str, ...], list[bytes]] = {}
        # Per tag list: the record frames last read and the references they make (versions are
        # random numbers, no cached data): a hit whose records did not change skips parsing them.
        self._current: dict[tuple[str, ...], tuple[list[bytes | None], bytes]] = {}
        # Per reference list: its records' keys, and the record frames that last confirmed it.
        self._ref_keys: dict[bytes, list[bytes]] = {}
        self._confirmed: dict[bytes, list[bytes | None]] = {}

    def __repr__(self) -> str:
        return "TagIndex(...)"

    # -- ids and records ------------------------------------------------------------------------

    def ids(self, names: Iterable[str]) -> list[bytes]:
        known = self._ids
        out = []
        for name in names:
            tag_id = known.get(name)
            if tag_id is None:
                source = self._storage_key(_ID + name.encode("utf-8"))
                tag_id = hashlib.blake2b(source, digest_size=16, person=b"acs1-tag-id").digest()
                if len(known) >= _MAX_IDS:
                    known.clear()
                known[name] = tag_id
            out.append(tag_id)
        return out

    def _record(self, key: bytes, version: int) -> bytes:
        return frame.pack(0, key if self._embed else b"", _VERSION.pack(version))

    def _version(self, key: bytes, data: bytes | None) -> int | None:
        if data is None:
            return None
        try:
            expires_ms, embedded, payload = frame.unpack(data)
        except IntegrityError:
            return None
        if expires_ms or len(payload) != _VERSION.size or (self._embed and embedded != key):
            return None
        return int(_VERSION.unpack(payload)[0])

    async def versions(self, ids: Sequence[bytes]) -> dict[bytes, int | None]:
        """The current version of each tag id (None: no readable record); one batch read."""
        keys = [RECORD + tag_id for tag_id in ids]
        found = await self._stack.get_many(keys)
        version = self._version
        return {key[2:]: version(key, data) for key, data in zip(keys, found, strict=True)}

    def record_keys(self, names: tuple[str, ...]) -> list[bytes]:
        keys = self._keys.get(names)
        if keys is None:
            if len(self._keys) >= _MAX_IDS:
                self._keys.clear()
                self._current.clear()
            keys = self._keys[names] = [RECORD + tag_id for tag_id in self.ids(names)]
        return keys

    async def read_with(self, raw: bytes, names: tuple[str, ...]) -> list[bytes | None]:
        """The frame under ``raw`` and the frames of ``names``' records, in one batch read."""
        return await self._stack.get_many([raw, *self.record_keys(names)])

    def current_refs(self, names: tuple[str, ...], records: list[bytes | None]) -> bytes:
        """The references an entry tagged ``names`` (in that order) carries if none of the tags
        was invalidated since it was written, given the records :meth:`read_with` read (b""
        if a record is missing or unreadable: no entry carries that)."""
        last = self._current.get(names)
        if last is not None and last[0] == records:
            return last[1]
        keys = self.record_keys(names)
        parts = [bytes([len(keys)])]
        for key, data in zip(keys, records, strict=True):
            version = self._version(key, data)
            if version is None:
                return b""
            parts.append(frame.REF.pack(key[2:], version))
        refs = b"".join(parts)
        self._current[names] = (records, refs)
        return refs

    async def confirm(self, refs: bytes) -> tuple[bool, str]:
        """Whether an entry that carries ``refs`` is still current: ``(True, "")``, else
        ``(False, reason)`` (:data:`STALE` or :data:`UNREAD`). One batch read of its records;
        when they are the very frames that confirmed ``refs`` last time, nothing is parsed."""
        keys = self._ref_keys.get(refs)
        if keys is None:
            if len(self._ref_keys) >= _MAX_IDS:
                self._ref_keys.clear()
                self._confirmed.clear()
            keys = self._ref_keys[refs] = [RECORD + tag_id for tag_id, _ in _unpack_refs(refs)]
        try:
            records = await self._stack.get_many(keys)
        except BackendError as exc:
            self._failed(exc)
            return False, UNREAD
        if self._confirmed.get(refs) == records:
            return True, ""
        stale = 0
        version = self._version
        for key, data, (_, wanted) in zip(keys, records, _unpack_refs(refs), strict=True):
            stale |= version(key, data) != wanted
        if stale:
            return False, STALE
        self._confirmed[refs] = records
        return True, ""

    def known(self, names: tuple[str, ...], records: list[bytes | None]) -> dict[bytes, int | None]:
        """The versions of ``names``' records from the frames :meth:`read_with` read."""
        version = self._version
        keys = self.record_keys(names)
        return {key[2:]: version(key, data) for key, data in zip(keys, records, strict=True)}

    # -- writes ---------------------------------------------------------------------------------

    async def refs(self, names: Sequence[str]) -> bytes:
        """The packed references of a new entry tagged ``names`` (records created as needed)."""
        ids = self.ids(names)
        current = await self.versions(ids)
        parts = [bytes([len(ids)])]
        for tag_id in ids:
            version = current[tag_id]
            if version is None:
                version = await self._create(tag_id)
            parts.append(frame.REF.pack(tag_id, version))
        return b"".join(parts)

    async def _create(self, tag_id: bytes) -> int:
        """Create a tag's record, or adopt the one another writer created first."""
        key = RECORD + tag_id
        version = secrets.randbits(64)
        record = self._record(key, version)
        try:
            if await cast(AtomicBackend, self._stack).add(key, record, ttl=None):
                return version
        except UnsupportedOperation:
            # A store without set-if-absent (a test double, a custom Backend): a plain write.
            # Two processes racing here may each keep their own version; the loser's entries
            # are then misses, never stale hits.
            await self._stack.set(key, record, ttl=None)
            return version
        found = self._version(key, await self._stack.get(key))
        if found is not None:
            return found
        # Something unreadable (or already gone) holds the key: a fresh record replaces it,
        # which can only turn entries that referred to it into misses.
        await self._stack.set(key, record, ttl=None)
        return version

    async def invalidate(self, names: Sequence[str]) -> None:
        """A fresh random version for each tag: one batch write."""
        keys = [RECORD + tag_id for tag_id in self.ids(names)]
        items = [(key, self._record(key, secrets.randbits(64))) for key in keys]
        await self._stack.set_many(items, ttl=None)

    # -- the check ------------------------------------------------------------------------------

    async def check(
        self, pending: Pending, known: dict[bytes, int | None] | None = None
    ) -> tuple[bool, Any]:
        """``(True, value)`` if every tag of the entry is at the version it was written under,
        else ``(False, reason)`` (:data:`STALE` or :data:`UNREAD`). ``known``: versions already
        read (and filled in with those read here). A stale entry costs what a fresh one does:
        the same reads, every reference compared."""
        refs = _unpack_refs(pending.refs)
        known = {} if known is None else known
        wanted = [tag_id for tag_id, _ in refs if tag_id not in known]
        if wanted:
            try:
                known.update(await self.versions(wanted))
            except BackendError as exc:
                self._failed(exc)
                return False, UNREAD
        stale = 0
        for tag_id, version in refs:
            stale |= known[tag_id] != version
        return (False, STALE) if stale else (True, pending.value)

    async def check_all(self, pendings: Sequence[Pending]) -> list[tuple[bool, Any]]:
        """:meth:`check` of a batch: every record read once, in one batch read."""
        ids = list(dict.fromkeys(tag_id for p in pendings for tag_id, _ in _unpack_refs(p.refs)))
        try:
            known = await self.versions(ids)
        except BackendError as exc:
            self._failed(exc)
            return [(False, UNREAD)] * len(pendings)
        return [await self.check(pending, known) for pending in pendings]
