"""Typed values: models dumped into the tagged scheme and coerced back into the declared type,
never into a class the stored data names; and the decoration-time storable() check."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
import textwrap
from collections import OrderedDict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, NewType, TypedDict
from uuid import UUID, uuid4

import pydantic
import pytest

from aiocache_secure import SerializationError
from aiocache_secure.serializers import get_serializer
from aiocache_secure.typed import check_storable, coerce, dump, storable

SERIALIZERS = pytest.mark.parametrize("name", ["json", "msgpack"])


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Address(pydantic.BaseModel):
    city: str
    since: date


class User(pydantic.BaseModel):
    id: UUID
    name: str
    created: datetime
    balance: Decimal
    plan: Plan
    tags: tuple[str, ...] = ()
    address: Address | None = None
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float = 0.0


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    by_name: dict[str, Point]
    owner: User | None = None
    created: datetime = dataclasses.field(default_factory=lambda: datetime(2026, 1, 1))
    area: float = dataclasses.field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.area = float(len(self.points))


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)


class Pair(NamedTuple):
    left: Point
    right: date


class Movie(TypedDict):
    title: str
    released: date


class Color(enum.StrEnum):
    RED = "red"


UserId = NewType("UserId", str)


def user(**changes: Any) -> User:
    fields: dict[str, Any] = {
        "id": uuid4(),
        "name": "alice",
        "created": datetime(2026, 12, 1, 21, 0, tzinfo=UTC),
        "balance": Decimal("10.50"),
        "plan": Plan.PRO,
        "tags": ("a", "b"),
        "address": Address(city="Paris", since=date(2020, 1, 1)),
        "extra": {"when": date(2026, 1, 1)},
    }
    return User(**{**fields, **changes})


def through(name: str, value: Any, annotation: Any) -> Any:
    serializer = get_serializer(name)
    return coerce(serializer.loads(serializer.dumps(dump(value))), annotation)


@SERIALIZERS
def test_pydantic_models_come_back_as_instances(name: str) -> None:
    alice, bob = user(), user(name="bob", address=None)
    assert through(name, alice, User) == alice
    assert through(name, [alice, bob], list[User]) == [alice, bob]
    assert through(name, {"a": alice}, dict[str, User]) == {"a": alice}
    assert through(name, None, User | None) is None
    assert through(name, alice, User | None) == alice
    assert through(name, (1, alice), tuple[int, User]) == (1, alice)
    # A field typed Any keeps the types the tagged scheme carries.
    assert type(through(name, alice, User).extra["when"]) is date


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    x: int

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return self.x * 2


@SERIALIZERS
def test_computed_fields_are_recomputed_not_stored(name: str) -> None:
    assert dump(Strict(x=2)) == {"x": 2}
    assert through(name, Strict(x=2), Strict).double == 4


def test_dump_keeps_the_types_of_model_fields() -> None:
    dumped = dump(user())
    assert type(dumped["id"]) is UUID and type(dumped["balance"]) is Decimal
    assert dumped["plan"] == "pro" and type(dumped["address"]["since"]) is date
    plain = {"a": [1, (2, 3)], "b": {4}}
    assert dump(plain) is plain  # nothing to turn: the very same object
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError, match="nested too deeply"):
        dump(cycle)


@SERIALIZERS
def test_dataclasses_come_back_recursively(name: str) -> None:
    shape = Shape("tri", [Point(0, 1.5), Point(2)], {"o": Point(0)}, owner=user())
    back = through(name, shape, Shape)
    assert back == shape and back.area == 2.0
    assert type(back.points[0]) is Point and type(back.owner) is User
    tree = Tree(1, [Tree(2), Tree(3, [Tree(4)])])
    assert through(name, tree, Tree) == tree
    assert through(name, Pair(Point(1), date(2026, 1, 1)), Pair) == Pair(Point(1), date(2026, 1, 1))
    movie: Movie = {"title": "M", "released": date(1999, 3, 31)}
    assert through(name, movie, Movie) == movie


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        (3, int),
        (3, float),  # PEP 484: an int where float is declared
        (b"x", bytes),
        ("pro", Plan),
        ("pro", Literal["pro", "free"]),
        ("u1", UserId),
        (5, Annotated[int, "meta"]),
        ({"a": 1}, dict),
        ([1, 2], list[int]),
        ((1, 2), tuple[int, ...]),
        ({1, 2}, frozenset[int]),
        (None, None),
        ({"x": object}, Any),
    ],
)
def test_plain_types_pass_through(value: Any, annotation: Any) -> None:
    got = coerce(value, annotation)
    assert got == (Plan(value) if annotation is Plan else value)


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        ("1", int),
        (1, bool),
        (1.5, int),
        ([1], tuple[int, int]),
        ({"x": 1, "z": 2}, Point),  # an unknown field
        ({"y": 1.0}, Point),  # a missing field
        ([{"x": "not an int"}], list[Point]),
        ({"name": "x"}, User),
        ("gold", Plan),
        ("x", Literal["y"]),
        ({"a": 1}, list[int]),
        ("alice", None),
        ([[1]], set[Any]),
    ],
)
def test_values_that_do_not_fit_raise_serialization_error(value: Any, annotation: Any) -> None:
    with pytest.raises(SerializationError, match="does not fit"):
        coerce(value, annotation)


def test_mismatch_never_quotes_the_value() -> None:
    with pytest.raises(SerializationError) as info:
        coerce({"id": "s3cr3t-value", "name": "s3cr3t-value"}, User)
    assert "s3cr3t" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


class Canary:
    built = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Canary.built += 1


def test_the_class_comes_from_the_annotation_never_from_the_data() -> None:
    planted = {"__class__": f"{__name__}.Canary", "$type": "Canary", "x": 1}
    assert coerce(planted, dict) is planted
    assert coerce(planted, dict[str, Any]) == planted
    with pytest.raises(SerializationError):
        coerce(planted, Point)
    assert Canary.built == 0


def test_unions_try_their_arms_in_order() -> None:
    assert coerce({"x": 1}, Point | dict[str, int]) == Point(1)
    assert coerce({"x": 1}, dict[str, int] | Point) == {"x": 1}
    assert type(coerce(date(2026, 1, 1), datetime | date)) is date


@pytest.mark.parametrize(
    "annotation",
    [
        int,
        User,
        list[User],
        dict[str, Shape],
        User | None,
        tuple[int, User],
        tuple[()],
        frozenset[UUID],
        Tree,
        Pair,
        Movie,
        Plan,
        dict[Color, int],
        Literal["a", 1],
        Any,
        UserId,
    ],
)
def test_storable_annotations(annotation: Any) -> None:
    assert storable(annotation)
    check_storable(annotation)


@pytest.mark.parametrize(
    ("annotation", "why"),
    [
        (dict[int, str], "dict keys must be str"),
        (OrderedDict[str, int], "come back as a dict"),
        (Canary, "not a type the serializers store"),
        (list[Canary], "not a type the serializers store"),
        ("User", "forward reference"),
        (complex, "not a type the serializers store"),
        (type("Str", (str,), {}), "come back as a str"),
        (Literal[1.5j], "literal"),
    ],
)
def test_unstorable_annotations_say_why(annotation: Any, why: str) -> None:
    assert not storable(annotation)
    with pytest.raises(TypeError, match=why):
        check_storable(annotation)


def test_unstorable_model_field_is_found() -> None:
    class Holder(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        thing: Canary

    with pytest.raises(TypeError, match="Canary"):
        check_storable(Holder)


def test_works_without_pydantic() -> None:
    # pydantic made unimportable: the module neither imports nor needs it.
    script = textwrap.dedent(
        """
        import dataclasses, sys
        sys.modules["pydantic"] = None
        from aiocache_secure.serializers import get_serializer
        from aiocache_secure.typed import check_storable, coerce, dump, storable

        @dataclasses.dataclass
        class P:
            x: int
            when: "list[int]"

        json = get_serializer("json")
        back = coerce(json.loads(json.dumps(dump(P(1, [2])))), P)
        assert back == P(1, [2]), back
        assert storable(P) and not storable(complex)
        assert coerce({"a": 1}, dict[str, int]) == {"a": 1}
        print("ok")
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and a literal script
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
