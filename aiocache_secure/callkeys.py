"""Call keys: one decorated call's arguments → one canonical, type-tagged string.

The key of ``f(*args, **kwargs)`` is ``"<module>:<qualname>(<encoded arguments>)"``
(``"<module>:<qualname>|<closure tag>(...)"`` for a closure, see below). Arguments are
bound to the signature first (``f(1)``, ``f(x=1)`` and ``f()`` with ``x=1`` as default are the same
call) and encoded in parameter order, each value with a type tag, so ``1``, ``"1"``, ``1.0`` and
``True`` give different keys.

Every encoded value is self-delimiting (strings carry their length, numbers end with ``;``,
containers with a closing mark), which makes the encoding injective: two different argument tuples
never share a key. Dicts and sets are sorted by their members' encodings, so their iteration order
does not matter. Supported: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``,
``tuple``, ``dict``, ``set`` and ``frozenset`` (a set and a frozenset with the same members are the
same argument), nested up to :data:`MAX_DEPTH` levels. Types are matched exactly: anything else,
subclasses included, raises :class:`TypeError` naming the parameter rather than falling back to
``str()``/``repr()``, whose collisions would hand one caller another caller's result.

A closure (a function defined in a function) has the qualified name of every other closure its
factory makes, so its prefix also holds a digest of what its free variables held when it was
decorated (:func:`closure_tag`), when those are immutable values or module-level functions and
classes; a free variable holding anything else gives the function object a random key space of
its own, since nothing says two such objects give the same results.

Keys longer than :data:`MAX_PLAIN_CHARS`, or holding a lone surrogate (valid in a Python ``str``
and in JSON, not in UTF-8), are replaced by a BLAKE2b digest of themselves: deterministic, under
the namespace's key size limit, and never a reason for a call to fail.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from .errors import ConfigurationError

__all__ = ["MAX_DEPTH", "MAX_PLAIN_CHARS", "CallKey", "closure_tag", "encode", "immutable"]

MAX_DEPTH: Final = 32
MAX_PLAIN_CHARS: Final = 1024
_EMPTY: Final = inspect.Parameter.empty
_SIMPLE_KINDS: Final = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_FIELD_ROOT: Final = re.compile(r"[^.\[]*")
METHOD_FIRST_PARAMS: Final = ("self", "cls")


class _Unsupported(Exception):
    def __init__(self, kind: type) -> None:
        self.kind = kind


def _encode(value: object, out: list[str], depth: int) -> None:
    kind = type(value)
    if kind is str:
        out.append(f"s{len(value)}:")  # type: ignore[arg-type]
        out.append(value)  # type: ignore[arg-type]
    elif kind is int:
        out.append(f"i{value};")
    elif value is None:
        out.append("N")
    elif value is True:
        out.append("T")
    elif value is False:
        out.append("F")
    elif kind is float:
        out.append(f"f{value!r};")
    elif kind is bytes:
        out.append(f"b{value.hex()};")  # type: ignore[attr-defined]
    elif depth >= MAX_DEPTH:
        raise _Unsupported(kind)
    elif kind is list or kind is tuple:
        out.append("l" if kind is list else "t")
        for item in value:  # type: ignore[attr-defined]
            _encode(item, out, depth + 1)
        out.append("]")
    elif kind is dict:
        pairs = sorted(
            (encode_one(k, depth + 1), encode_one(v, depth + 1))
            for k, v in value.items()  # type: ignore[attr-defined]
        )
        out.append("d")
        for k_enc, v_enc in pairs:
            out.append(k_enc)
            out.append(v_enc)
        out.append("}")
    elif kind is set or kind is frozenset:
        out.append("S")
        out.extend(sorted(encode_one(item, depth + 1) for item in value))  # type: ignore[attr-defined]
        out.append("}")
    else:
        raise _Unsupported(kind)


def encode_one(value: object, depth: int = 0) -> str:
    out: list[str] = []
    _encode(value, out, depth)
    return "".join(out)


_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None), bytes})


def immutable(value: object, depth: int = 0) -> bool:
    """Whether ``value`` can never change: None, bool, int, float, str, bytes, and tuples and
    frozensets of them (exact types only: a subclass instance can carry mutable attributes)."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return True
    if (kind is tuple or kind is frozenset) and depth < MAX_DEPTH:
        return all(immutable(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def closure_tag(fn: Callable[..., Any]) -> str:
    """What sets ``fn`` apart from other functions of the same qualified name (see the module
    docstring): ``""`` for a function with no free variables, else ``"|"`` and a digest of the
    values its free variables held when it was decorated, or of a random token when one of them
    holds a value that cannot be keyed (then this function object has a key space of its own).
    """
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None)
    if code is None or not cells:
        return ""
    parts: list[str] = []
    for name, cell in zip(code.co_freevars, cells, strict=True):
        if name == "__class__":  # super()'s: the class fn's qualified name names (still unset)
            continue
        try:
            value = cell.cell_contents
        except ValueError:  # not assigned yet
            return f"|#{secrets.token_hex(16)}"
        if isinstance(value, type) or inspect.isfunction(value):
            qualname = value.__qualname__
            if "<locals>" in qualname:  # defined in a function: one of possibly many
                return f"|#{secrets.token_hex(16)}"
            parts.append(encode_one((name, "def", value.__module__, qualname)))
        elif immutable(value):
            parts.append(encode_one((name, value)))
        else:
            return f"|#{secrets.token_hex(16)}"
    if not parts:
        return ""
    digest = hashlib.blake2b("".join(parts).encode("utf-8", "surrogatepass"), digest_size=16)
    return f"|{digest.hexdigest()}"


def encode(values: Sequence[object], names: Sequence[str], owner: str) -> str:
    """The canonical encoding of ``values`` (the arguments named ``names`` of ``owner``)."""
    out: list[str] = []
    for value, name in zip(values, names, strict=True):
        try:
            _encode(value, out, 0)
        except _Unsupported as exc:
            raise TypeError(
                f"argument {name!r} of {owner} holds a {exc.kind.__name__}, which has no "
                "canonical cache key (supported: None, bool, int, float, str, bytes, and "
                f"list/tuple/dict/set/frozenset of them, {MAX_DEPTH} levels deep); "
                "pass key= to @cached to build keys yourself"
            ) from None
    return "".join(out)


class CallKey:
    """Builds the cache key of a call to ``fn`` (see the module docstring).

    ``key`` is ``None`` (type-tagged arguments), a template string formatted with the bound
    arguments (``"user:{user_id}"``; used verbatim), or a callable taking the call's arguments and
    returning a ``str`` (used verbatim). ``skip_first`` leaves the first parameter (``self`` or
    ``cls``) out of default keys.
    """

    __slots__ = (
        "_all_positional",
        "_custom",
        "_defaults",
        "_names",
        "_npositional",
        "_owner",
        "_prefix",
        "_signature",
        "_simple",
        "_template",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        key: str | Callable[..., str] | None = None,
    ) -> None:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        module = getattr(fn, "__module__", None) or "?"
        qualname = getattr(fn, "__qualname__", None)
        if key is None and not isinstance(qualname, str):
            # A functools.partial has none, and its bound arguments are in no key: two partials
            # of one function (one per tenant) would share entries.
            raise TypeError(
                "default @cached keys name the function by its qualified name, which this "
                "callable (a functools.partial?) lacks; pass key= to @cached"
            )
        qualname = qualname or getattr(fn, "__name__", "?")
        self._owner = f"{module}.{qualname}"
        tag = closure_tag(inspect.unwrap(fn)) if key is None else ""
        self._prefix = f"{module}:{qualname}{tag}("
        self._signature = signature
        self._names = tuple(p.name for p in params)
        self._defaults = tuple(p.default for p in params)
        self._simple = all(p.kind in _SIMPLE_KINDS for p in params)
        self._npositional = sum(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self._all_positional = self._simple and self._npositional == len(params)
        self._template: str | None = None
        self._custom: Callable[..., str] | None = None
        if isinstance(key, str):
            self._template = _check_template(key, self._names)
        elif key is not None:
            if not callable(key):
                raise TypeError("key= must be None, a template string or a callable")
            self._custom = key

    @property
    def first_param(self) -> str | None:
        return self._names[0] if self._names else None

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Sequence[Any]:
        """The argument values in parameter order, defaults applied (TypeError on a bad call)."""
        if not kwargs and self._all_positional and len(args) == len(self._names):
            return args
        if self._simple and len(args) <= self._npositional:
            values = list(args)
            used = 0
            for index in range(len(args), len(self._names)):
                name = self._names[index]
                if name in kwargs:
                    values.append(kwargs[name])
                    used += 1
                else:
                    default = self._defaults[index]
                    if default is _EMPTY:
                        break
                    values.append(default)
            else:
                if used == len(kwargs):
                    return values
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return list(bound.arguments.values())

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], skip: int) -> str:
        if self._custom is not None:
            self.bind(args, kwargs)
            made = self._custom(*args, **kwargs)
            if not isinstance(made, str):
                raise TypeError(f"the key= function of {self._owner} must return a str")
            return _storable(made, "")
        values = self.bind(args, kwargs)
        if self._template is not None:
            made = self._template.format_map(dict(zip(self._names, values, strict=True)))
            return _storable(made, "")
        encoded = encode(values[skip:], self._names[skip:], self._owner)
        return _storable(f"{self._prefix}{encoded})", self._prefix)


def _storable(key: str, prefix: str) -> str:
    """``key`` itself, or a digest of it when it is too long or not valid Unicode (a lone
    surrogate, which JSON request bodies can carry): an argument must never make a call fail."""
    if len(key) <= MAX_PLAIN_CHARS:
        if key.isascii():
            return key
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return key
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=32)
    return f"{prefix}#{digest.hexdigest()}"


def _check_template(template: str, names: Sequence[str]) -> str:
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(template) if field is not None
        ]
    except ValueError as exc:
        raise ConfigurationError("key template is not a valid format string") from exc
    for field in fields:
        root = _FIELD_ROOT.match(field)
        name = root.group() if root else ""
        if not name or name.isdigit():
            raise ConfigurationError("key templates name their fields: use {param}, not {}")
        if name not in names:
            raise ConfigurationError(f"key template refers to {name!r}, which is not a parameter")
    return template
