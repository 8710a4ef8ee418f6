"""DynamoDB attribute values <-> Python values, exactly as ``boto3.dynamodb.types`` does,
without importing boto3 for the types the authorizer's items hold.

Why not ``TypeSerializer`` / ``TypeDeserializer`` directly: they live in boto3, and
``import boto3`` (boto3, s3transfer, their imports) is ~77M instructions of the
authorizer's cold init, which builds its clients with botocore alone (adapters/aws.py;
benchmarks/authorizer_callgrind.py measures the cold init). The types every ledger,
liveness and quota item holds (strings, numbers, booleans, nulls, maps, lists and the
string/number sets the items read) are handled here with boto3's own rules (the same
``DYNAMODB_CONTEXT``, the same type order); anything else (binary, sets to write,
tuples, other Mappings, floats, bad input) is handed to boto3's classes, imported on
first use, so the answer and the error are always boto3's.
tests/unit/test_attribute_values.py holds both to boto3's on every type.
"""

from __future__ import annotations

from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

#: boto3.dynamodb.types.DYNAMODB_CONTEXT (DynamoDB's number range and precision)
DYNAMODB_CONTEXT = Context(
    Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow]
)


def _number(value: int | Decimal) -> str:
    number = str(DYNAMODB_CONTEXT.create_decimal(value))
    if number in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN not supported")
    return number


def serialize(value: Any) -> dict[str, Any]:
    """``TypeSerializer().serialize(value)``."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    kind = type(value)
    if kind is dict:
        return {"M": {k: serialize(v) for k, v in value.items()}}
    if kind is list:
        return {"L": [serialize(v) for v in value]}
    from boto3.dynamodb.types import TypeSerializer

    return TypeSerializer().serialize(value)  # type: ignore[no-any-return]


def deserialize(value: dict[str, Any]) -> Any:
    """``TypeDeserializer().deserialize(value)``."""
    if value and type(value) is dict:
        kind = next(iter(value))
        data = value[kind]
        if kind == "S" or kind == "BOOL":
            return data
        if kind == "N":
            return DYNAMODB_CONTEXT.create_decimal(data)
        if kind == "NULL":
            return None
        if kind == "M":
            return {k: deserialize(v) for k, v in data.items()}
        if kind == "L":
            return [deserialize(v) for v in data]
        if kind == "SS":
            return set(data)
        if kind == "NS":
            return {DYNAMODB_CONTEXT.create_decimal(v) for v in data}
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer().deserialize(value)
