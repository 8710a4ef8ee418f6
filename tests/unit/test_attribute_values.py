"""adapters/attribute_values.py answers (and fails) exactly as boto3's TypeSerializer and
TypeDeserializer, on every DynamoDB type."""

from __future__ import annotations

import enum
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from tokenbroker.adapters.attribute_values import DYNAMODB_CONTEXT, deserialize, serialize


class Kind(enum.StrEnum):
    ALLOWED = "allowed"


class Level(enum.IntEnum):
    HIGH = 3


#: what boto3 raises on bad input (decimal's traps are ArithmeticErrors)
REFUSALS = (TypeError, ArithmeticError, AttributeError)

PLAIN = [
    None,
    True,
    False,
    0,
    -7,
    10**37,
    Decimal("1.5"),
    Decimal("-0.000001"),
    Decimal("1E+100"),
    "",
    "jti-1",
    "ünïcode ✓",
    Kind.ALLOWED,  # the ledger's StrEnums
    Level.HIGH,
    {},
    {"a": 1, "b": {"c": [1, "x", None, True]}},
    [],
    [Decimal("2"), "s", {"k": False}],
    # handed to boto3 (binary, sets, tuples, other Mappings)
    b"\x00\x01",
    bytearray(b"ab"),
    Binary(b"z"),
    {"a", "b"},
    {1, Decimal("2")},
    {b"x"},
    set(),
    (1, "a"),
    OrderedDict([("k", "v")]),
]


def _stable_id(value: Any) -> str:
    """repr without what differs between processes (a set's order follows the string
    hash seed, an object's repr its address): pytest-xdist workers must collect the
    same test ids."""
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(map(repr, value))) + "}"
    return "object()" if type(value) is object else repr(value)


@pytest.mark.parametrize("value", PLAIN, ids=_stable_id)
def test_serialize_is_boto3s(value: Any) -> None:
    assert serialize(value) == TypeSerializer().serialize(value)


BAD_VALUES = [1.5, Decimal("NaN"), Decimal("Infinity"), 10**40, Decimal("1E+200"), object()]


@pytest.mark.parametrize("value", BAD_VALUES, ids=_stable_id)
def test_serialize_refuses_what_boto3_refuses_with_its_error(value: Any) -> None:
    with pytest.raises(REFUSALS) as theirs:
        TypeSerializer().serialize(value)
    with pytest.raises(type(theirs.value)) as mine:
        serialize(value)
    assert str(mine.value) == str(theirs.value)


ITEMS = [
    {"S": "x"},
    {"S": ""},
    {"N": "12"},
    {"N": "-1.50"},
    {"N": "1E+100"},
    {"BOOL": True},
    {"BOOL": False},
    {"NULL": True},
    {"M": {}},
    {"M": {"a": {"N": "1"}, "b": {"L": [{"S": "x"}, {"NULL": True}]}}},
    {"L": []},
    {"SS": ["model:demo:invoke", "profile"]},
    {"NS": ["1", "2.5"]},
    # handed to boto3
    {"B": b"\x00"},
    {"BS": [b"a", b"b"]},
    {"s": "lower-case type name"},
]


@pytest.mark.parametrize("item", ITEMS, ids=_stable_id)
def test_deserialize_is_boto3s(item: dict[str, Any]) -> None:
    mine, theirs = deserialize(item), TypeDeserializer().deserialize(item)
    assert mine == theirs
    assert type(mine) is type(theirs)


BAD_ITEMS: list[Any] = [{}, {"X": 1}, {"N": "1" * 40}, {"N": "1E+999"}, {"M": "x"}, None]


@pytest.mark.parametrize("item", BAD_ITEMS, ids=_stable_id)
def test_deserialize_refuses_what_boto3_refuses_with_its_error(item: Any) -> None:
    with pytest.raises(REFUSALS) as theirs:
        TypeDeserializer().deserialize(item)
    with pytest.raises(type(theirs.value)) as mine:
        deserialize(item)
    assert str(mine.value) == str(theirs.value)


def test_a_number_that_is_no_number_is_boto3s_nan() -> None:
    item = {"N": "not a number"}
    assert str(deserialize(item)) == str(TypeDeserializer().deserialize(item)) == "NaN"


def test_the_number_context_is_boto3s() -> None:
    from boto3.dynamodb.types import DYNAMODB_CONTEXT as BOTO3_CONTEXT

    names = ("prec", "Emin", "Emax", "rounding", "capitals", "clamp")
    assert {n: getattr(DYNAMODB_CONTEXT, n) for n in names} == {
        n: getattr(BOTO3_CONTEXT, n) for n in names
    }
    assert DYNAMODB_CONTEXT.traps == BOTO3_CONTEXT.traps
