"""The usage ledger's item schema: the ONE module that spells the usage table's attribute
names and maps an item to and from :class:`~tokenbroker.domain.models.UsageRecord`.

Writers (the edge's conditional put, the token endpoint's and the admin plane's
transactions) call :func:`to_item`; readers (audit queries, the stream function, the
local stack) call :func:`from_item` (DynamoDB JSON) or :func:`from_plain` (deserialised
values, as a stream's ``new_image`` or a digest's record holds them). Both readers
validate: a value of the wrong type, an unknown event type or decision, or an over-long
field raises :class:`~tokenbroker.domain.errors.MalformedRecord`, never a KeyError.

An item holds every non-empty field of the record (the usage table has no GSI, so no
index key attribute), its TTL and, when the hot window ends before the record's
retention, the retention in ``ru``. Readers ignore attributes they do not know (items
written by earlier versions still carry the keys of GSIs that no longer exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal
from typing import Any, Final

from tokenbroker.adapters.attribute_values import deserialize, serialize
from tokenbroker.domain.errors import MalformedRecord
from tokenbroker.domain.ledger import SORT_KEY, TTL_ATTRIBUTE
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.units import DAY_SECONDS

# ---- attribute names (template.yaml declares the key and index attributes) ----------
# (Shorter names would save ~110 B of the ~630 B item, i.e. storage, not write units:
# the item is one write unit either way. Tests and tools read these names; kept.)
ID: Final = "id"
AT: Final = SORT_KEY
EVENT: Final = "event"
DECISION: Final = "decision"
REASON: Final = "reason"
PRINCIPAL: Final = "principal"
CLIENT_ID: Final = "client_id"
JKT: Final = "jkt"
TOKEN_JTI: Final = "token_jti"
PROOF_JTI_HASH: Final = "proof_jti_hash"
METHOD: Final = "method"
ROUTE: Final = "route"
RESOURCE: Final = "resource"
SOURCE_IP: Final = "source_ip"
USER_AGENT: Final = "user_agent"
REQUEST_ID: Final = "request_id"
TTL: Final = TTL_ATTRIBUTE
ACTOR: Final = "actor"
#: the evidence retention (epoch s) when it differs from ``ttl`` (the hot window's end)
RETAIN_UNTIL: Final = "ru"
#: the hot window (days) when a writer is not told the deployment's: template.yaml's
#: HotWindowDays default and Settings.usage_hot_window_days' (a test checks all three)
HOT_WINDOW_DAYS: Final = 30

#: record field -> item attribute, for every field of UsageRecord (a test checks)
ATTRIBUTES: Final[Mapping[str, str]] = {
    "record_id": ID,
    "at_ms": AT,
    "event": EVENT,
    "decision": DECISION,
    "reason": REASON,
    "principal": PRINCIPAL,
    "client_id": CLIENT_ID,
    "jkt": JKT,
    "token_jti": TOKEN_JTI,
    "proof_jti_hash": PROOF_JTI_HASH,
    "method": METHOD,
    "route": ROUTE,
    "resource": RESOURCE,
    "source_ip": SOURCE_IP,
    "user_agent": USER_AGENT,
    "request_id": REQUEST_ID,
    "retain_until": TTL,
    "actor": ACTOR,
}
#: numeric fields (DynamoDB ``N``); every other field is a string
_NUMBERS: Final = frozenset({"at_ms", "retain_until"})
_REQUIRED: Final = frozenset({"record_id", "at_ms", "event", "decision"})
#: the attributes a reader decodes (anything else an item holds is ignored)
_KNOWN: Final = frozenset({*ATTRIBUTES.values(), RETAIN_UNTIL})
#: writers cap ids and names at 256 characters; free text (user agent, actor ARN) more
_MAX_TEXT = 500
_MAX_FREE_TEXT = 64 * 1024
_FREE_TEXT: Final = frozenset({"user_agent", "actor"})
#: the numeric and the free-text record fields, for the edge's lean writer (usage.py)
NUMBER_FIELDS: Final = _NUMBERS
FREE_TEXT_FIELDS: Final = _FREE_TEXT
#: free text is capped at the writers to this many UTF-8 bytes (marker included) so that
#: every item stays within one write unit (1 KB); a capped value ends in TRUNCATED
MAX_FREE_TEXT_BYTES: Final = 128
TRUNCATED: Final = "...[truncated]"

#: the record's fields in declaration order (what the CLI renders)
RECORD_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(UsageRecord))


def to_item(
    record: UsageRecord, *, hot_window_days: int | None = HOT_WINDOW_DAYS
) -> dict[str, Any]:
    """The item of a ledger record (DynamoDB JSON). Empty values are left out.

    The item's TTL is the end of the hot window (``at`` + ``hot_window_days``, never
    later than the record's retention), and the retention, if it differs, is kept in
    ``ru``: DynamoDB holds the hot window, the archive the whole retention. Every writer
    passes the deployment's window (``USAGE_HOT_WINDOW_DAYS``); ``None`` keeps the item
    for the whole retention (no archive: tests and tools only).
    """
    values = item_values(record, hot_window_days=hot_window_days)
    return {k: serialize(v) for k, v in values.items() if v != ""}


def item_values(
    record: UsageRecord, *, hot_window_days: int | None = HOT_WINDOW_DAYS
) -> dict[str, Any]:
    """The item's attributes as plain values (str/int; empty ones included): what
    :func:`to_item` serialises, and what the edge's lean writer spells as JSON itself."""
    values: dict[str, Any] = {
        attribute: _value(getattr(record, name)) for name, attribute in ATTRIBUTES.items()
    }
    for name in _FREE_TEXT:
        values[ATTRIBUTES[name]] = cap_free_text(values[ATTRIBUTES[name]])
    if hot_window_days is not None and record.retain_until:
        hot_until = record.at_ms // 1000 + hot_window_days * DAY_SECONDS
        if hot_until < record.retain_until:
            values[TTL] = hot_until
            values[RETAIN_UNTIL] = record.retain_until
    return values


def cap_free_text(text: str) -> str:
    """``text`` if it fits MAX_FREE_TEXT_BYTES of UTF-8, else its longest prefix that fits
    with the visible TRUNCATED marker appended (never a split character)."""
    data = text.encode()
    if len(data) <= MAX_FREE_TEXT_BYTES:
        return text
    room = MAX_FREE_TEXT_BYTES - len(TRUNCATED.encode())
    return data[:room].decode(errors="ignore") + TRUNCATED


def _value(value: Any) -> Any:
    return value.value if isinstance(value, EventType | Decision) else value


def from_item(item: Mapping[str, Any]) -> UsageRecord:
    """A usage item in DynamoDB JSON (as Query/GetItem return it) as a record."""
    try:
        plain = {k: deserialize(v) for k, v in item.items() if k in _KNOWN}
    except (TypeError, ValueError, AttributeError) as exc:
        raise MalformedRecord(f"not a DynamoDB item: {exc}") from exc
    return from_plain(plain)


def from_plain(image: Mapping[str, Any]) -> UsageRecord:
    """A usage item as plain values (``new_image`` of a stream record, a digest's record)
    as a record; MalformedRecord if it is not one."""
    values: dict[str, Any] = {}
    for name, attribute in ATTRIBUTES.items():
        value = image.get(attribute)
        if name == "retain_until" and image.get(RETAIN_UNTIL) is not None:
            value = image[RETAIN_UNTIL]  # the item's TTL is the hot window's end
        if value is None:
            if name in _REQUIRED:
                raise MalformedRecord(f"attribute {attribute!r} is missing")
            # writers leave empty values out (to_item): a missing text is an empty one
            values[name] = 0 if name in _NUMBERS else ""
            continue
        values[name] = _number(attribute, value) if name in _NUMBERS else _text(name, value)
    if not values["record_id"]:
        raise MalformedRecord(f"attribute {ID!r} is empty")
    try:
        values["event"] = EventType(values["event"])
        values["decision"] = Decision(values["decision"])
    except ValueError as exc:
        raise MalformedRecord(f"unknown event type or decision: {exc}") from exc
    return UsageRecord(**values)


def _text(name: str, value: Any) -> str:
    limit = _MAX_FREE_TEXT if name in _FREE_TEXT else _MAX_TEXT
    if not isinstance(value, str) or len(value) > limit:
        raise MalformedRecord(f"attribute {ATTRIBUTES[name]!r} is not a valid string")
    return value


def _number(attribute: str, value: Any) -> int:
    if not isinstance(value, Decimal | int) or isinstance(value, bool):
        raise MalformedRecord(f"attribute {attribute!r} is not a number")
    if value != int(value) or value < 0:
        raise MalformedRecord(f"attribute {attribute!r} is not a non-negative integer")
    return int(value)


def as_plain(record: UsageRecord) -> dict[str, Any]:
    """The record as JSON-ready values keyed by field name (enums as their values)."""
    return {name: _value(getattr(record, name)) for name in RECORD_FIELDS}
