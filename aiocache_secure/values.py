"""The value types beyond JSON that both serializers store with their types, in one fixed table.

``bytes``, ``datetime`` (naive, fixed-offset or a :mod:`zoneinfo` zone by key; ``fold`` kept),
``date``, ``time`` (naive or fixed-offset), ``UUID``, ``Decimal`` (exact: digits and exponent
kept; ``NaN`` and ``±Infinity`` too, signalling NaN never), ``tuple``, ``set`` and ``frozenset``.

Each scalar type has a *form*: a small JSON-compatible value (a string, or a list of strings and
ints) that the json serializer stores under a fixed tag and msgpack inside an ext type with a fixed
code. Decoding looks the tag or code up in this module's tables, each entry naming a class written
in this file, and validates the form before building anything; a tag or code outside the tables is
a :class:`~aiocache_secure.errors.SerializationError`, which the cache treats as a tampered entry.
Stored data never names a class.

Bounds, enforced on write and on read alike (so everything written can be read back):

* ``Decimal``: at most :data:`MAX_DECIMAL_DIGITS` digits and an exponent within
  ±:data:`MAX_DECIMAL_EXPONENT`; ``Decimal("1e999999999")`` is refused rather than stored, since
  arithmetic on it (``int()``, ``quantize``) would take hours.
* sets: whatever their size, at most :data:`MAX_SAME_HASH` members may share one hash value, so a
  planted set of colliding members cannot make building it quadratic. Members whose hashes are not
  randomized per process (ints, tuples, dates, decimals) can otherwise be chosen to collide.
"""

from __future__ import annotations

import base64
import binascii
import decimal
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from typing import Any, Final
from uuid import UUID
from zoneinfo import ZoneInfo, available_timezones

from .errors import SerializationError

__all__ = [
    "MAX_DECIMAL_DIGITS",
    "MAX_DECIMAL_EXPONENT",
    "MAX_SAME_HASH",
    "Scalar",
    "bytes_from",
    "bytes_form",
    "make_set",
    "scalar_by_code",
    "scalar_by_tag",
    "scalar_for",
]

MAX_DECIMAL_DIGITS: Final = 4300  # as many as int() parses from a string by default
MAX_DECIMAL_EXPONENT: Final = 6144  # the largest exponent of IEEE 754 decimal128
MAX_SAME_HASH: Final = 8
_MAX_TEXT: Final = 64  # longest ISO text, zone key or UUID form accepted
# Decimal(text) turns a malformed string into NaN unless the context traps InvalidOperation.
_STRICT: Final = decimal.Context(traps=[decimal.InvalidOperation])


def _bad(what: str) -> SerializationError:
    return SerializationError(f"stored {what} is malformed")


def _text(form: object, what: str, limit: int = _MAX_TEXT) -> str:
    if type(form) is not str or len(form) > limit:
        raise _bad(what)
    return form


def _fold(form: object) -> int:
    if type(form) is not int or form not in (0, 1):
        raise _bad("fold")
    return form


def bytes_form(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def bytes_from(form: object) -> bytes:
    if type(form) is not str:
        raise _bad("bytes")
    try:
        return base64.b64decode(form, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("bytes") from None


@cache
def _zone_keys() -> frozenset[str]:
    # Only keys of the installed tz database: a key from the store never becomes a file path probe.
    return frozenset(available_timezones())


def _offset_us(tz: timezone) -> int:
    # isoformat() and fromisoformat() lose an offset's microseconds: it travels apart, exactly.
    return tz.utcoffset(None) // timedelta(microseconds=1)


def _zone(form: object) -> timezone | ZoneInfo:
    """The tzinfo of a form's third item: a fixed offset in µs, or a tz database key."""
    if type(form) is int:
        try:
            return timezone(timedelta(microseconds=form))
        except (ValueError, OverflowError):
            raise _bad("offset") from None
    key = _text(form, "zone")
    if key not in _zone_keys():
        raise _bad("zone")
    try:
        return ZoneInfo(key)
    except (KeyError, ValueError, OSError):  # listed at startup, unreadable now
        raise _bad("zone") from None


def _datetime_form(value: datetime) -> list[object]:
    """``[naive ISO text, fold]``, plus a fixed offset in µs or a zone key if aware."""
    tz = value.tzinfo
    # The base type's own fields: a subclass's isoformat() may print what fromisoformat() refuses.
    day, clock = (value.year, value.month, value.day), (value.hour, value.minute, value.second)
    wall = datetime(*day, *clock, value.microsecond)
    form: list[object] = [wall.isoformat(), value.fold]
    if tz is None:
        return form
    if type(tz) is timezone:
        return [*form, _offset_us(tz)]
    if isinstance(tz, ZoneInfo) and tz.key in _zone_keys():
        return [*form, tz.key]
    raise SerializationError(
        "a datetime's tzinfo must be None, a fixed offset or a zone of the tz database"
    )


def _datetime_from(form: object) -> datetime:
    if type(form) is not list or len(form) not in (2, 3):
        raise _bad("datetime")
    try:
        value = datetime.fromisoformat(_text(form[0], "datetime"))
    except ValueError:
        raise _bad("datetime") from None
    if value.tzinfo is not None:
        raise _bad("datetime")
    fold = _fold(form[1])
    if len(form) == 2:
        return value.replace(fold=fold)
    return value.replace(tzinfo=_zone(form[2]), fold=fold)


def _date_form(value: date) -> str:
    return date(value.year, value.month, value.day).isoformat()


def _date_from(form: object) -> date:
    try:
        return date.fromisoformat(_text(form, "date"))
    except ValueError:
        raise _bad("date") from None


def _time_form(value: time) -> list[object]:
    """``[naive ISO text, fold]``, plus a fixed offset in µs if aware."""
    tz = value.tzinfo
    wall = time(value.hour, value.minute, value.second, value.microsecond)
    form: list[object] = [wall.isoformat(), value.fold]
    if tz is None:
        return form
    if type(tz) is timezone:
        return [*form, _offset_us(tz)]
    raise SerializationError("a time's tzinfo must be None or a fixed offset")


def _time_from(form: object) -> time:
    if (
        type(form) is not list
        or len(form) not in (2, 3)
        or len(form) == 3
        and type(form[2]) is not int
    ):
        raise _bad("time")
    try:
        value = time.fromisoformat(_text(form[0], "time"))
    except ValueError:
        raise _bad("time") from None
    if value.tzinfo is not None:
        raise _bad("time")
    fold = _fold(form[1])
    if len(form) == 2:
        return value.replace(fold=fold)
    return value.replace(tzinfo=_zone(form[2]), fold=fold)


def _uuid_form(value: UUID) -> str:
    return str(UUID(int=value.int))


def _uuid_from(form: object) -> UUID:
    try:
        return UUID(_text(form, "uuid"))
    except ValueError:
        raise _bad("uuid") from None


def _check_decimal(value: decimal.Decimal) -> bool:
    if value.is_snan():
        return False
    sign, digits, exponent = value.as_tuple()
    if len(digits) > MAX_DECIMAL_DIGITS:
        return False
    return not isinstance(exponent, int) or abs(exponent) <= MAX_DECIMAL_EXPONENT


def _decimal_form(value: decimal.Decimal) -> str:
    if not _check_decimal(value):
        raise SerializationError(
            "a Decimal must not be a signalling NaN, and needs at most "
            f"{MAX_DECIMAL_DIGITS} digits and an exponent within ±{MAX_DECIMAL_EXPONENT}"
        )
    return decimal.Decimal.__str__(value)


def _decimal_from(form: object) -> decimal.Decimal:
    text = _text(form, "decimal", MAX_DECIMAL_DIGITS + 32)
    try:
        value = decimal.Decimal(text, _STRICT)
    except (decimal.InvalidOperation, ValueError):
        raise _bad("decimal") from None
    if not _check_decimal(value):
        raise _bad("decimal")
    return value


class Scalar:
    """One stored scalar type: its class, json tag, msgpack ext code and form codecs."""

    __slots__ = ("cls", "code", "form", "parse", "tag")

    def __init__(
        self,
        cls: type,
        tag: str,
        code: int,
        form: Callable[[Any], object],
        parse: Callable[[object], object],
    ) -> None:
        self.cls, self.tag, self.code, self.form, self.parse = cls, tag, code, form, parse


# datetime before date: it is a subclass. Tags and codes are format version 1; never reuse one.
_SCALARS: Final = (
    Scalar(datetime, "$dt", 4, _datetime_form, _datetime_from),
    Scalar(date, "$d", 5, _date_form, _date_from),
    Scalar(time, "$tm", 6, _time_form, _time_from),
    Scalar(UUID, "$u", 7, _uuid_form, _uuid_from),
    Scalar(decimal.Decimal, "$dec", 8, _decimal_form, _decimal_from),
)
_BY_TYPE: Final = {scalar.cls: scalar for scalar in _SCALARS}
_BY_TAG: Final = {scalar.tag: scalar for scalar in _SCALARS}
_BY_CODE: Final = {scalar.code: scalar for scalar in _SCALARS}


def scalar_for(value: object) -> Scalar | None:
    """The table entry that stores ``value`` (subclasses come back as the table's class)."""
    found = _BY_TYPE.get(type(value))
    if found is None:
        for scalar in _SCALARS:
            if isinstance(value, scalar.cls):
                return scalar
    return found


def scalar_by_tag(tag: str) -> Scalar | None:
    return _BY_TAG.get(tag)


def scalar_by_code(code: int) -> Scalar | None:
    return _BY_CODE.get(code)


def make_set(members: Iterable[Any], kind: type[set[Any]] | type[frozenset[Any]]) -> Any:
    """A set or frozenset of decoded members; refuses unhashable or hash-flooding members.

    The hashes are counted in a dict keyed by the hash values themselves: an int's hash is the int,
    so distinct hash values never collide in full there, whatever the members are.
    """
    items = members if isinstance(members, list) else list(members)
    try:
        counts = Counter(map(hash, items))
    except TypeError:
        raise _bad("set") from None
    if counts and max(counts.values()) > MAX_SAME_HASH:
        raise _bad("set")
    return kind(items)
