"""Value serializers: Python value ⇄ bytes.

``json`` (default): dict with str keys, list, tuple (read back as a list), str, int, float (finite),
bool and None. Anything else, a non-str dict key or NaN/infinity raises
:class:`~aiocache_secure.errors.SerializationError` instead of silently coming back different.

``msgpack``: the same types plus bytes, faster and smaller; needs the ``msgpack`` extra.

``pickle``: any picklable object, and therefore arbitrary code execution for whoever can write the
store. Only by explicit opt-in (``serializer="pickle"``), and only together with encryption on a
store shared beyond the process, so that entries are authenticated before they are unpickled.
This module is the only place in the package that imports :mod:`pickle`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, Protocol

import orjson

from .errors import ConfigurationError, SerializationError

__all__ = ["SERIALIZERS", "Serializer", "get_serializer"]


class Serializer(Protocol):
    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...

    def loads_fast(self, data: bytes) -> Any:
        """Equal to :meth:`loads` wherever that succeeds; may raise anything else where it does
        not (a batch read then calls :meth:`loads`, which classifies the failure)."""
        ...


_SCALARS: Final = (str, int, float, bool, type(None))
# A payload that orjson cannot represent exactly (integers beyond 64 bits, lone surrogates) is
# written by the standard library encoder behind this marker byte, which no JSON text starts with.
_STDLIB: Final = b"\x00"


def _check_json(value: Any) -> None:
    # Containers seen once are not walked again, so shared and circular structures terminate
    # here; the encoder itself then rejects cycles.
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise SerializationError("json values need str dict keys")
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise SerializationError("json cannot store NaN or infinity")
        elif not isinstance(item, _SCALARS):
            raise SerializationError(f"json cannot store a {type(item).__name__}")


class JsonSerializer:
    """JSON through orjson (about ten times faster than the standard library both ways)."""

    name = "json"
    _encode = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True
    ).encode
    _decode = json.JSONDecoder().decode

    def dumps(self, value: Any) -> bytes:
        _check_json(value)
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass
        try:
            return _STDLIB + self._encode(value).encode("utf-8", "surrogatepass")
        except (ValueError, TypeError, RecursionError) as exc:
            raise SerializationError("value is not json-serializable") from exc

    # orjson rejects the _STDLIB marker byte, so it decodes exactly what loads() decodes directly.
    loads_fast = staticmethod(orjson.loads)

    def loads(self, data: bytes) -> Any:
        try:
            if data[:1] == _STDLIB:
                return self._decode(data[1:].decode("utf-8", "surrogatepass"))
            return orjson.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SerializationError("stored bytes are not valid json") from exc


class MsgpackSerializer:
    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError:
            raise ConfigurationError("serializer='msgpack' needs the 'msgpack' extra") from None
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb
        self._errors: tuple[type[BaseException], ...] = (
            ValueError,
            TypeError,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
        )

    def dumps(self, value: Any) -> bytes:
        try:
            return bytes(self._packb(value, use_bin_type=True, strict_types=False))
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError("value is not msgpack-serializable") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._unpackb(data, raw=False, strict_map_key=True)
        except self._errors as exc:
            raise SerializationError("stored bytes are not valid msgpack") from exc

    loads_fast = loads


class PickleSerializer:
    """Opt-in only; see the module docstring for why it demands authenticated entries."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        import pickle

        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError("value cannot be pickled") from exc

    def loads(self, data: bytes) -> Any:
        import pickle

        try:
            return pickle.loads(data)  # noqa: S301 - entries are authenticated first (see above)
        except Exception as exc:
            raise SerializationError("stored bytes cannot be unpickled") from exc

    loads_fast = loads


SERIALIZERS: Final = ("json", "msgpack", "pickle")


def get_serializer(name: str) -> Serializer:
    if name == "json":
        return JsonSerializer()
    if name == "msgpack":
        return MsgpackSerializer()
    if name == "pickle":
        return PickleSerializer()
    raise ConfigurationError(f"unknown serializer (choose one of {', '.join(SERIALIZERS)})")
