"""Value serializers: Python value ⇄ bytes.

``json`` (default): dict with str keys, list, str, int, float (finite), bool and None as plain
JSON, and the types of :mod:`aiocache_secure.values` (bytes, datetime, date, time, UUID, Decimal,
tuple, set, frozenset), nested anywhere, with their types. Anything else, a non-str dict key or
NaN/infinity raises :class:`~aiocache_secure.errors.SerializationError` instead of silently coming
back different. Subclasses of these types come back as the base type.

Payload formats, told apart by the first byte (no JSON text starts with a control character):

* JSON text: a value of plain JSON types only, written and read exactly as before the tagged
  scheme existed, and decoded by orjson alone (the hot path).
* ``\x00`` + JSON text by the standard library: plain JSON orjson cannot represent exactly
  (integers beyond 64 bits, lone surrogates).
* ``\x01`` + JSON text: tagged scheme, version 1, for values holding any type beyond JSON. A JSON
  object with exactly one key that starts with ``$`` is a tag: ``{"$b": base64}``,
  ``{"$tu": [...]}`` (tuple), ``{"$set": [...]}``, ``{"$fs": [...]}`` (members sorted by their
  encoded form, so equal sets give equal bytes), ``{"$esc": {...}}`` (a user's own one-key dict
  whose key starts with ``$``, stored as that dict), and the scalar tags of
  :mod:`aiocache_secure.values`. Any other ``$`` key is refused, never looked up. At most
  :data:`MAX_DEPTH` containers deep.

``msgpack``: the same types plus NaN/infinity, with dict keys str or bytes; integers within 64
bits. tuple, set and frozenset are ext types whose data is a msgpack array (set members sorted by
their packed bytes), nesting at most :data:`MAX_EXT_DEPTH` deep (each level is a nested decoder
call); the scalars are ext types whose data is their packed form. Needs the ``msgpack`` extra.

``pickle``: any picklable object, and therefore arbitrary code execution for whoever can write the
store. Only by explicit opt-in (``serializer="pickle"``), and only together with encryption on a
store shared beyond the process, so that entries are authenticated before they are unpickled.
This module is the only place in the package that imports :mod:`pickle`.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any, Final, Protocol

import orjson

from . import values
from .errors import ConfigurationError, SerializationError

__all__ = [
    "MAX_DEPTH",
    "MAX_EXT_DEPTH",
    "SERIALIZERS",
    "Serializer",
    "export_form",
    "get_serializer",
]

MAX_DEPTH: Final = 100  # a tuple level costs four Python frames to decode
MAX_EXT_DEPTH: Final = 32


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
_TAGGED: Final = b"\x01"
_DEEP: Final = "value is nested too deeply"


def _is_plain_json(value: Any) -> bool:
    """True for plain JSON; False if the value needs the tagged scheme (which validates it)."""
    # Containers seen once are not walked again, so shared and circular structures terminate
    # here; the encoder itself then rejects cycles.
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise SerializationError("json values need str dict keys")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise SerializationError("json cannot store NaN or infinity")
        elif not isinstance(item, _SCALARS):
            return False
    return True


_std_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True
).encode
_std_decode = json.JSONDecoder().decode


def _json_text(tree: Any) -> bytes:
    try:
        return orjson.dumps(tree)
    except orjson.JSONEncodeError:
        pass
    try:
        return _std_encode(tree).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError, RecursionError) as exc:
        raise SerializationError("value is not json-serializable") from exc


def export_form(value: Any) -> Any:
    """``value`` as plain JSON, for exports: itself when it is plain JSON, else the tagged
    scheme's tree (``{"$dt": ...}``, ``{"$tu": [...]}``, ...; docs/values.md), so nothing is
    lost or silently changed. Models, dataclasses and enums appear as their plain values."""
    if _is_plain_json(value):
        return value
    try:
        return _to_tree(value, 0)
    except SerializationError:
        dumped = _models_dumped(value)
        if dumped is value:
            raise
        return export_form(dumped)


def _to_tree(item: Any, depth: int) -> Any:
    """``item`` in the tagged scheme's JSON tree."""
    if depth > MAX_DEPTH:
        raise SerializationError(_DEEP)
    if isinstance(item, str | int | type(None)):  # bool is an int
        return item
    if isinstance(item, float):
        if not math.isfinite(item):
            raise SerializationError("json cannot store NaN or infinity")
        return item
    depth += 1
    if isinstance(item, dict):
        tree = {}
        for key, inner in item.items():
            if not isinstance(key, str):
                raise SerializationError("json values need str dict keys")
            tree[key] = _to_tree(inner, depth)
        if len(tree) == 1 and key[:1] == "$":
            return {"$esc": tree}
        return tree
    if isinstance(item, list):
        return [_to_tree(inner, depth) for inner in item]
    if isinstance(item, tuple):
        return {"$tu": [_to_tree(inner, depth) for inner in item]}
    if isinstance(item, set | frozenset):
        members = sorted((_to_tree(inner, depth) for inner in item), key=_json_text)
        return {"$set" if isinstance(item, set) else "$fs": members}
    if isinstance(item, bytes):
        return {"$b": values.bytes_form(item)}
    scalar = values.scalar_for(item)
    if scalar is None:
        raise SerializationError(f"json cannot store a {type(item).__name__}")
    return {scalar.tag: scalar.form(item)}


def _from_tree(node: Any, depth: int) -> Any:
    """The value a tagged scheme's JSON tree stands for."""
    if depth > MAX_DEPTH:
        raise SerializationError(_DEEP)
    kind = type(node)
    if kind is list:
        return [_from_tree(inner, depth + 1) for inner in node]
    if kind is not dict:
        return node
    if len(node) == 1:
        tag = next(iter(node))
        if tag[:1] == "$":
            return _untag(tag, node[tag], depth + 1)
    return {key: _from_tree(inner, depth + 1) for key, inner in node.items()}


def _members(form: Any, depth: int) -> list[Any]:
    if type(form) is not list:
        raise SerializationError("stored container is malformed")
    return [_from_tree(inner, depth) for inner in form]


def _untag(tag: str, form: Any, depth: int) -> Any:
    if tag == "$tu":
        return tuple(_members(form, depth))
    if tag == "$set":
        return values.make_set(_members(form, depth), set)
    if tag == "$fs":
        return values.make_set(_members(form, depth), frozenset)
    if tag == "$esc":
        if type(form) is not dict or len(form) != 1 or next(iter(form))[:1] != "$":
            raise SerializationError("stored escape is malformed")
        return {key: _from_tree(inner, depth) for key, inner in form.items()}
    if tag == "$b":
        return values.bytes_from(form)
    scalar = values.scalar_by_tag(tag)
    if scalar is None:
        raise SerializationError("stored value has an unknown type tag")
    return scalar.parse(form)


def _models_dumped(value: Any) -> Any:
    """``value`` with models, dataclass instances and enum members as plain values (the very
    same object when it holds none): what a serializer stores in their place. Only reached when
    the value would otherwise be refused, so plain values never pay for the walk."""
    from .typed import dump  # typed imports this module

    return dump(value)


class JsonSerializer:
    """JSON through orjson (about ten times faster than the standard library both ways)."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        if not _is_plain_json(value):
            try:
                return _TAGGED + _json_text(_to_tree(value, 0))
            except SerializationError:
                dumped = _models_dumped(value)
                if dumped is value:
                    raise
                return self.dumps(dumped)
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass
        try:
            return _STDLIB + _std_encode(value).encode("utf-8", "surrogatepass")
        except (ValueError, TypeError, RecursionError) as exc:
            raise SerializationError("value is not json-serializable") from exc

    # orjson rejects the marker bytes, so it decodes exactly what loads() decodes directly.
    loads_fast = staticmethod(orjson.loads)

    def loads(self, data: bytes) -> Any:
        try:
            head = data[:1]
            if head == _STDLIB:
                return _std_decode(data[1:].decode("utf-8", "surrogatepass"))
            if head == _TAGGED:
                return _from_tree(_tagged_tree(data[1:]), 0)
            return orjson.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SerializationError("stored bytes are not valid json") from exc


def _tagged_tree(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # written by the standard library encoder
        return _std_decode(text.decode("utf-8", "surrogatepass"))


_TUPLE, _SET, _FROZENSET = 1, 2, 3  # msgpack ext codes; the scalars' are in values.py


class MsgpackSerializer:
    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError:
            raise ConfigurationError("serializer='msgpack' needs the 'msgpack' extra") from None
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb
        self._ext = msgpack.ExtType
        self._array_header = msgpack.Packer().pack_array_header
        self._errors: tuple[type[BaseException], ...] = (
            ValueError,
            TypeError,
            msgpack.ExtraData,
            msgpack.FormatError,
            msgpack.StackError,
            RecursionError,
        )
        # Ext nesting depth of the call in progress, per thread: each level is a nested C call.
        self._depth = threading.local()

    def _pack(self, value: Any) -> bytes:
        return bytes(
            self._packb(value, use_bin_type=True, strict_types=True, default=self._default)
        )

    def _unpack(self, data: bytes) -> Any:
        return self._unpackb(data, raw=False, strict_map_key=True, ext_hook=self._ext_hook)

    def _nested(self, work: Any, *args: Any) -> Any:
        depth = getattr(self._depth, "n", 0)
        if depth >= MAX_EXT_DEPTH:
            raise SerializationError(_DEEP)
        self._depth.n = depth + 1
        try:
            return work(*args)
        finally:
            self._depth.n = depth

    def _default(self, item: Any) -> Any:
        # strict_types sends tuples and subclasses of the native types here, as well as the rest.
        if isinstance(item, tuple):
            return self._ext(_TUPLE, self._nested(self._pack, list(item)))
        if isinstance(item, set | frozenset):
            parts = sorted(self._nested(lambda: [self._pack(inner) for inner in item]))
            code = _SET if isinstance(item, set) else _FROZENSET
            return self._ext(code, self._array_header(len(parts)) + b"".join(parts))
        if isinstance(item, str):  # the base type's own data, whatever the subclass overrides
            return str.__str__(item)
        if isinstance(item, int):
            return int.__int__(item)
        if isinstance(item, float):
            return float.__float__(item)
        if isinstance(item, bytes):
            return bytes(memoryview(item))
        if isinstance(item, dict):
            return dict(item)
        if isinstance(item, list):
            return list(item)
        scalar = values.scalar_for(item)
        if scalar is None:
            raise SerializationError(f"msgpack cannot store a {type(item).__name__}")
        return self._ext(scalar.code, self._packb(scalar.form(item), use_bin_type=True))

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code in (_TUPLE, _SET, _FROZENSET):
            members = self._nested(self._unpack, data)
            if type(members) is not list:
                raise SerializationError("stored container is malformed")
            if code == _TUPLE:
                return tuple(members)
            return values.make_set(members, set if code == _SET else frozenset)
        scalar = values.scalar_by_code(code)
        if scalar is None:
            raise SerializationError("stored value has an unknown ext type")
        return scalar.parse(self._unpackb(data, raw=False, strict_map_key=True))

    def dumps(self, value: Any) -> bytes:
        try:
            return self._pack(value)
        except SerializationError:
            dumped = _models_dumped(value)
            if dumped is value:
                raise
            return self.dumps(dumped)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError("value is not msgpack-serializable") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._unpack(data)
        except SerializationError:
            raise
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
