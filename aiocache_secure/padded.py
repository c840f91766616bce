"""``PaddedCache``: the facade of a ``pad_timing=True`` namespace.

A subclass, as :class:`~aiocache_secure.metrics.MeteredCache` is, so that the unpadded hot paths
ask nothing about padding. Its reads do the work of a hit whether or not they find an entry and
end on a deadline (:mod:`aiocache_secure.layers.padding` explains the scheme); its writes keep the
namespace's largest entry as the reference whose work a miss replays. Padding runs in the facade,
not in a Backend layer, because deserialization, which differs the most between a hit and a
miss, happens here. Padded namespaces never use the verified-read memo (``compose()`` leaves it
out: a memo hit is faster than a first read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import frame
from .cache import Cache
from .errors import BackendError
from .frame import HEAD as _FRAME_HEAD
from .layers.padding import TimingPadding

__all__ = ["PaddedCache"]


class PaddedCache(Cache):
    """A namespace whose reads take the same time for a hit and a miss."""

    # No __slots__ of its own: MeteredPaddedCache combines it with MeteredCache's.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._padding = TimingPadding()
        self._padding_many = TimingPadding()
        # The reference entry (key, frame): the largest this namespace has written or read,
        # whose work a miss replays; and its size when the floor was last measured.
        self._pad_ref: tuple[bytes, bytes] | None = None
        self._pad_calibrated = 0
        self._dummy = self._make_dummy()

    async def get(self, key: str, default: Any = None, *, type: Any = None) -> Any:
        if type is not None:
            return await self._get_typed(key, default, type)
        raw = self._key(key)
        if self._pending() and not await self._ready():
            return default
        return await self._padded_get(raw, default)

    async def _get_tagged(self, key: str, tags: tuple[str, ...], default: Any) -> Any:
        # A padded read does the work of a hit either way; the tag check is part of it.
        return await self.get(key, default)

    async def ttl(self, key: str) -> float | None:
        raw = self._key(key)
        if self._pending() and not await self._ready():
            return None
        return await self._padded_ttl(raw)

    async def _set_frame(self, raw: bytes, data: bytes, seconds: float | None) -> bool:
        stored = await super()._set_frame(raw, data, seconds)
        if stored:
            self._keep_reference(raw, data)
        return stored

    async def _set_frames(self, frames: tuple[list[tuple[bytes, bytes]], float | None]) -> bool:
        stored = await super()._set_frames(frames)
        if stored:
            self._keep_reference(*max(frames[0], key=lambda item: len(item[1])))
        return stored

    def _make_dummy(self) -> Callable[[], object]:
        encryption = self._encryption
        dummy_key = b"\x00" * 8
        dummy_frame = frame.pack(0, b"", self._serializer.dumps({"": ""}))
        if encryption is None:
            return lambda: self._open_frame(dummy_key, dummy_frame)
        rehearse = encryption.rehearsal(dummy_key, dummy_frame)

        def work() -> object:
            opened, _ = rehearse()
            return self._open_frame(dummy_key, opened or dummy_frame)

        return work

    async def _padded_read(
        self, raw: bytes, padding: TimingPadding
    ) -> tuple[int, bytes | None, bool, Any]:
        """One key's padded read up to its deadline: when it started, the frame read, and
        what :meth:`_padded_open` made of it (a tampered frame already discarded)."""
        started = padding.timer()
        try:
            data = await self._stack.get(raw)
        except BackendError as exc:
            self._backend_failed(exc)
            data = None
        ok, value = await self._checked(*self._padded_open(raw, data))
        if not ok and data is not None:
            await self._discard(raw, value)
        return started, data, ok, value

    async def _padded_get(self, raw: bytes, default: Any) -> Any:
        padding = self._padding
        started, data, ok, value = await self._padded_read(raw, padding)
        if ok:
            self.stats.hits += 1
        else:
            self.stats.misses += 1
        result = value if ok else default
        # Nothing that depends on the outcome runs after the deadline: not even freeing the
        # frame a hit read (tens of nanoseconds for a large one, in this frame's teardown).
        del data, value
        padding.wait(started)
        return result

    def _padded_open(self, raw: bytes, data: bytes | None) -> tuple[bool, Any]:
        """:meth:`_open_frame` with the work of a hit either way: a miss (``data`` None)
        replays the reference entry (see :meth:`_replay`)."""
        now_ms = self._clock() * 1000
        if data is None:
            self._replay()
            return False, None
        ok, value = self._open_frame(raw, data, now_ms)
        if ok:
            ref = self._pad_ref
            if ref is None or len(data) > len(ref[1]):
                self._keep_reference(raw, data)
        return ok, value

    def _replay(self) -> None:
        """A miss's share of timing padding: the work of a hit on the reference entry (decrypt
        its envelope, parse its frame, whether or not it has expired since); before any entry,
        on a same-shaped dummy. It depends on neither the key probed now nor the one before."""
        ref = self._pad_ref
        if ref is None:
            self._dummy()
            return
        if self._encryption is not None:
            self._encryption.replay()
        self._open_frame(ref[0], ref[1], 0.0)

    def _keep_reference(self, raw: bytes, data: bytes) -> None:
        """Make ``data`` the reference entry if it is the largest so far; when the reference has
        grown by more than a quarter since it was last measured, measure its replay again and
        raise both paddings' floors to cover it (once per growth: a value the namespace has
        written is covered before it is first read)."""
        ref = self._pad_ref
        if ref is not None and len(data) <= len(ref[1]):
            return
        self._pad_ref = (raw, data)
        if len(data) * 4 > self._pad_calibrated * 5:
            self._pad_calibrated = len(data)
            self._padding_many.cover(self._padding.calibrate(self._replay))

    async def _get_many(self, raws: list[bytes], default: Any) -> list[Any]:
        """``get_many`` with the work of a hit for every key (a miss replays the reference
        entry), padded to ``len(raws)`` budgets of batch reads."""
        padding = self._padding_many
        started = padding.timer()
        found = await self._read_frames(raws)
        out: list[Any] = []
        hits = 0
        try:
            for raw, data in zip(raws, found, strict=True):
                ok, value = await self._checked(*self._padded_open(raw, data))
                if ok:
                    out.append(value)
                    hits += 1
                    continue
                if data is not None:
                    await self._discard(raw, value)
                out.append(default)
        finally:  # counted once per batch; a strict-mode IntegrityError counts what was read
            self.stats.hits += hits
            self.stats.misses += len(out) - hits
        del found, data, value  # frames are freed before the deadline (see _padded_get)
        padding.wait(started, len(raws))
        return out

    async def _padded_ttl(self, raw: bytes) -> float | None:
        """``ttl`` as a padded read: the work of a ``get`` (the value is parsed and dropped)."""
        padding = self._padding
        started, data, ok, value = await self._padded_read(raw, padding)
        left: float | None = None
        if ok:
            assert data is not None  # noqa: S101 - a hit has a frame
            expires_ms = _FRAME_HEAD.unpack_from(data)[0]
            left = math.inf if not expires_ms else max(expires_ms / 1000 - self._clock(), 1e-9)
        del data, value  # the frame and the parsed value are freed before the deadline
        padding.wait(started)
        return left

    def forget_padding_sample(self) -> None:
        """Drop the reference entry kept for timing padding (after a clear or an erase)."""
        self._pad_ref = None
        self._pad_calibrated = 0
        self._padding.reset()
        self._padding_many.reset()
        if self._encryption is not None:
            self._encryption.forget_replay()
