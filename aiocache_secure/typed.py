"""Typed values: models out to storable values, and decoded values back into declared types.

The serializers store a fixed set of types (:mod:`aiocache_secure.serializers`). Richer types
travel through them in two steps, both pure and synchronous:

* :func:`dump` (on write) turns models into storable values: a Pydantic v2 ``BaseModel`` by
  ``model_dump(mode="python", round_trip=True)`` (so its dates, UUIDs and decimals keep their
  types in the tagged scheme, and computed fields are left for ``model_validate`` to recompute),
  a dataclass instance into a dict of its ``init`` fields, an enum member into its value,
  recursively through lists, tuples, sets and dicts.
* :func:`coerce` (on read) turns a decoded value into an instance of the type the *caller*
  declared, e.g. a function's return annotation: ``Model.model_validate`` for Pydantic models,
  field by field (from the resolved field annotations) for dataclasses, ``NamedTuple`` and
  ``TypedDict``; ``list[X]``, ``dict[str, X]``, ``tuple[...]``, ``set[X]``, ``frozenset[X]``,
  ``X | None`` and other unions (arms tried in order), ``Literal``, ``Annotated``, ``NewType``,
  enums; any other class is checked with ``isinstance`` and passed through (an ``int`` is accepted
  where ``float`` is declared, as in PEP 484). A value that does not fit raises
  :class:`~aiocache_secure.errors.SerializationError` (say, an entry written before the declared
  type changed), whose message names the type, never the value.

No class is ever chosen by data read from the store: the class always comes from the annotation.

:func:`check_storable` (raises ``TypeError`` naming why) and :func:`storable` tell, at decoration
time, whether values of a declared type can be stored and come back as that type.

Pydantic is optional and never imported here: a class can only be a ``BaseModel`` subclass if
whoever defined it imported pydantic, so the module is looked up in :data:`sys.modules`.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import enum
import sys
import types
import typing
import weakref
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from .errors import SerializationError
from .serializers import MAX_DEPTH

__all__ = ["check_storable", "coerce", "dump", "needs_coercion", "storable"]

_SCALARS: Final = frozenset(
    {str, int, float, bool, bytes, type(None), datetime, date, time, UUID, Decimal}
)
# What a subclass of a stored type comes back as (datetime before date: it is a subclass).
_BASES: Final = (bool, int, float, str, bytes, datetime, date, time, UUID, Decimal) + (
    list,
    dict,
    tuple,
    set,
    frozenset,
)
_LISTS: Final = frozenset({list, abc.Sequence, abc.MutableSequence})
_DICTS: Final = frozenset({dict, abc.Mapping, abc.MutableMapping})
_SETS: Final = frozenset({set, frozenset, abc.Set, abc.MutableSet})
_UNIONS: Final = (typing.Union, types.UnionType)


def _pydantic_base() -> type | None:
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None)
    return base if isinstance(base, type) else None


def _is_model(cls: type) -> bool:
    base = _pydantic_base()
    return base is not None and issubclass(cls, base)


def _is_named_tuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


_HINTS: Final[weakref.WeakKeyDictionary[type, dict[str, Any]]] = weakref.WeakKeyDictionary()


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        try:
            hints = _HINTS[cls] = typing.get_type_hints(cls)
        except Exception as exc:  # NameError for a forward reference, TypeError, ...
            raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}") from exc
    return hints


def _name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)


# -- dump: models → storable values ------------------------------------------------------------


def dump(value: Any) -> Any:
    """``value`` with every model, dataclass instance and enum member turned into plain values;
    the very same object where nothing inside needed it. ``SerializationError`` if nested deeper
    than the serializers store (a cycle, say)."""
    return _dump(value, 0)


def _dump(value: Any, depth: int) -> Any:
    if isinstance(value, str | int | float | bytes | type(None)) and not isinstance(
        value, enum.Enum
    ):
        return value
    if depth > MAX_DEPTH:
        raise SerializationError("value is nested too deeply")
    depth += 1
    if isinstance(value, enum.Enum):
        return _dump(value.value, depth)
    if isinstance(value, dict):
        items = [(_dump(key, depth), _dump(inner, depth)) for key, inner in value.items()]
        if all(a is k and b is v for (a, b), (k, v) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple | set | frozenset):
        members = [_dump(inner, depth) for inner in value]
        if type(value) in (list, tuple, set, frozenset) and all(
            a is b for a, b in zip(members, value, strict=True)
        ):
            return value
        if isinstance(value, list):
            return members
        if isinstance(value, tuple):
            return tuple(members)
        return set(members) if isinstance(value, set) else frozenset(members)
    if _is_model(type(value)):
        # round_trip: what model_validate accepts back (no computed fields, Json[...] as text).
        return _dump(value.model_dump(mode="python", round_trip=True), depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _dump(getattr(value, field.name), depth)
            for field in dataclasses.fields(value)
            if field.init
        }
    return value


# -- coerce: decoded values → declared types -----------------------------------------------------


def _mismatch(annotation: Any) -> SerializationError:
    return SerializationError(f"stored value does not fit the declared type {_name(annotation)}")


def coerce(value: Any, annotation: Any) -> Any:
    """``value`` (as decoded from the store) as an instance of ``annotation``.

    Raises :class:`SerializationError` if it does not fit, ``TypeError`` if the annotation is not
    one :func:`check_storable` accepts.
    """
    if annotation is Any or annotation is object:
        return value
    if annotation is None or annotation is type(None):
        if value is None:
            return None
        raise _mismatch(annotation)
    if isinstance(annotation, str | typing.ForwardRef):
        raise TypeError("an unresolved forward reference cannot be coerced to")
    if isinstance(annotation, typing.TypeVar):
        return value
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:  # NewType
        return coerce(value, supertype)
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type):
            return _coerce_class(value, annotation)
        raise TypeError(f"cannot coerce to {_name(annotation)}")
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return coerce(value, args[0])
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        for arm in args:
            if arm is not type(None):
                try:
                    return coerce(value, arm)
                except SerializationError:
                    continue
        raise _mismatch(annotation)
    if origin is typing.Literal:
        if any(type(value) is type(arg) and value == arg for arg in args):
            return value
        raise _mismatch(annotation)
    if origin in _LISTS:
        if type(value) is not list and not (origin is not list and type(value) is tuple):
            raise _mismatch(annotation)
        item = args[0] if args else Any
        return [coerce(inner, item) for inner in value]
    if origin in _DICTS:
        if not isinstance(value, dict):
            raise _mismatch(annotation)
        key_type, value_type = args if args else (Any, Any)
        return {coerce(k, key_type): coerce(v, value_type) for k, v in value.items()}
    if origin is tuple:
        if type(value) not in (tuple, list):
            raise _mismatch(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(inner, args[0]) for inner in value)
        if args == ((),):  # tuple[()] on older typing
            args = ()
        if len(args) != len(value):
            raise _mismatch(annotation)
        return tuple(coerce(inner, arm) for inner, arm in zip(value, args, strict=True))
    if origin in _SETS:
        if type(value) not in (set, frozenset, list, tuple):
            raise _mismatch(annotation)
        item = args[0] if args else Any
        kind = frozenset if origin is frozenset else set
        try:
            return kind(coerce(inner, item) for inner in value)
        except TypeError:  # an unhashable member
            raise _mismatch(annotation) from None
    if isinstance(origin, type):  # a parametrized user generic, e.g. a generic dataclass
        return _coerce_class(value, origin)
    raise TypeError(f"cannot coerce to {_name(annotation)}")


def _coerce_class(value: Any, cls: type) -> Any:
    if _is_model(cls):
        errors = sys.modules["pydantic"].ValidationError
        try:
            return cls.model_validate(value)  # type: ignore[attr-defined]
        except errors:
            # The validation error quotes the input: it must not travel with ours.
            raise _mismatch(cls) from None
    if dataclasses.is_dataclass(cls):
        return _coerce_fields(value, cls)
    if issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except ValueError:
            raise _mismatch(cls) from None
    if typing.is_typeddict(cls):
        return _coerce_typeddict(value, cls)
    if _is_named_tuple(cls):
        hints = _hints(cls)
        if type(value) not in (tuple, list) or len(value) != len(cls._fields):  # type: ignore[attr-defined]
            raise _mismatch(cls)
        fields = cls._fields  # type: ignore[attr-defined]
        return cls(
            *(coerce(inner, hints.get(f, Any)) for inner, f in zip(value, fields, strict=True))
        )
    if isinstance(value, cls) or (cls is float and type(value) is int):
        return value
    raise _mismatch(cls)


def _coerce_fields(value: Any, cls: type) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise _mismatch(cls)
    hints = _hints(cls)
    fields = [field for field in dataclasses.fields(cls) if field.init]
    if not value.keys() <= {field.name for field in fields}:
        raise _mismatch(cls)
    kwargs = {}
    for field in fields:
        if field.name in value:
            kwargs[field.name] = coerce(value[field.name], hints.get(field.name, Any))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _mismatch(cls)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):  # __post_init__ checks, an init-only variable
        raise _mismatch(cls) from None


def _coerce_typeddict(value: Any, cls: type) -> Any:
    hints = _hints(cls)
    required: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
    if not isinstance(value, dict) or not (required <= value.keys() <= hints.keys()):
        raise _mismatch(cls)
    return {key: coerce(inner, hints[key]) for key, inner in value.items()}


# -- needs_coercion: whether a read must go through coerce at all ----------------------------------


def needs_coercion(annotation: Any) -> bool:
    """Whether values declared as ``annotation`` come back from the store as something other
    than the declared type (models, dataclasses, named tuples and enums are stored as plain
    values): only those reads pay for :func:`coerce`."""
    return _needs(annotation, 0)


def _needs(annotation: Any, depth: int) -> bool:
    if depth > MAX_DEPTH or isinstance(annotation, str | typing.ForwardRef):
        return True  # unknown: coerce decides (and refuses what it cannot resolve)
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:
        return _needs(supertype, depth + 1)
    origin = typing.get_origin(annotation)
    if origin is None:
        if not isinstance(annotation, type):
            return False
        return (
            _is_model(annotation)
            or dataclasses.is_dataclass(annotation)
            or issubclass(annotation, enum.Enum)
            or _is_named_tuple(annotation)
            or typing.is_typeddict(annotation)
        )
    if origin is typing.Literal:
        return False
    if origin is typing.Annotated:
        return _needs(typing.get_args(annotation)[0], depth + 1)
    if (
        origin not in _UNIONS
        and isinstance(origin, type)
        and origin not in _BASES
        and not _is_abc(origin)
    ):
        return True  # a parametrized user generic
    return any(_needs(arg, depth + 1) for arg in typing.get_args(annotation) if arg is not Ellipsis)


def _is_abc(origin: type) -> bool:
    return origin.__module__ == "collections.abc"


# -- storable: checked once, at decoration time ---------------------------------------------------


def storable(annotation: Any) -> bool:
    """Whether values declared as ``annotation`` can be stored and come back as that type."""
    try:
        check_storable(annotation)
    except TypeError:
        return False
    return True


def check_storable(annotation: Any) -> None:
    """Raise ``TypeError`` naming why values of ``annotation`` cannot be stored, if they cannot.

    ``Any``, ``object`` and unbound type variables pass: their values are checked when written.
    """
    _check(annotation, set())


def _not_storable(annotation: Any, why: str) -> TypeError:
    return TypeError(f"{_name(annotation)} is not storable: {why}")


def _check(annotation: Any, seen: set[type]) -> None:
    if annotation is Any or annotation is object or annotation is None:
        return
    if isinstance(annotation, str | typing.ForwardRef):
        raise _not_storable(annotation, "an unresolved forward reference")
    if isinstance(annotation, typing.TypeVar):
        if annotation.__bound__ is not None:
            _check(annotation.__bound__, seen)
        return
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:
        _check(supertype, seen)
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        _check(args[0], seen)
    elif origin in _UNIONS or origin is tuple:
        for arm in args:
            if arm is not Ellipsis and arm != ():
                _check(arm, seen)
    elif origin is typing.Literal:
        for arg in args:
            if type(arg) not in _SCALARS and not isinstance(arg, enum.Enum):
                raise _not_storable(annotation, "a literal of an unstorable type")
    elif origin in _LISTS or origin in _SETS:
        if args:
            _check(args[0], seen)
    elif origin in _DICTS:
        if args:
            _check_key(args[0], annotation)
            _check(args[1], seen)
    elif origin is not None:
        if not isinstance(origin, type):
            raise _not_storable(annotation, "an unsupported type form")
        _check_class(origin, seen)
    elif isinstance(annotation, type):
        _check_class(annotation, seen)
    else:
        raise _not_storable(annotation, "an unsupported type form")


def _check_key(key: Any, annotation: Any) -> None:
    if key is Any or key is str:
        return
    if isinstance(key, type) and issubclass(key, str) and issubclass(key, enum.Enum):
        return
    if typing.get_origin(key) is typing.Literal and all(
        type(a) is str for a in typing.get_args(key)
    ):
        return
    if getattr(key, "__supertype__", None) is str:
        return
    raise _not_storable(annotation, "dict keys must be str")


def _check_class(cls: type, seen: set[type]) -> None:
    if cls in _SCALARS or cls in (list, dict, tuple, set, frozenset):
        return
    if issubclass(cls, enum.Enum):
        return
    if cls in seen:  # a recursive model or dataclass
        return
    seen.add(cls)
    if _is_model(cls):
        if not hasattr(cls, "model_validate"):
            raise _not_storable(cls, "pydantic models need pydantic v2")
        for field in cls.model_fields.values():  # type: ignore[attr-defined]
            _check(field.annotation, seen)
        return
    if dataclasses.is_dataclass(cls):
        hints = _hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                _check(hints.get(field.name, Any), seen)
        return
    if typing.is_typeddict(cls) or _is_named_tuple(cls):
        for hint in _hints(cls).values():
            _check(hint, seen)
        return
    base = next((b for b in _BASES if issubclass(cls, b)), None)
    if base is not None:
        raise _not_storable(cls, f"it would come back as a {base.__name__}")
    raise _not_storable(cls, "not a type the serializers store (see docs/values.md)")
