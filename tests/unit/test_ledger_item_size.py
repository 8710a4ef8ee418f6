"""Every ledger item fits one DynamoDB write unit (1 KB), and over-long free text is
capped at the writer with a visible marker (issue 9)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenbroker.adapters.ledger_items import (
    MAX_FREE_TEXT_BYTES,
    TRUNCATED,
    cap_free_text,
    from_item,
    to_item,
)
from tokenbroker.adapters.usage import usage_item_json
from tokenbroker.domain.models import Decision, EventType, UsageRecord


def _value_size(value: dict[str, Any]) -> int:
    """DynamoDB's size rules for the values a ledger item holds (S: UTF-8 bytes; N:
    ~1 byte per 2 significant digits + 1)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = v.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    raise AssertionError(f"unexpected type {kind}")


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(v) for name, v in item.items())


def _largest(event: EventType, decision: Decision) -> UsageRecord:
    client = "tbc_" + "f" * 24
    return UsageRecord(
        record_id="r" * 43,  # a base64url SHA-256 replay key
        at_ms=9_999_999_999_999,
        decision=decision,
        reason="proof_signature_invalid" if decision is Decision.DENY else "",
        principal="arn:aws:iam::123456789012:role/" + "p" * 64,
        client_id=client,
        retain_until=9_999_999_999,
        event=event,
        jkt="j" * 43,
        token_jti="t" * 43,
        proof_jti_hash="h" * 43,
        method="DELETE",
        route="/v1/models/" + "m" * 64 + "/invocations",
        resource="m" * 64,
        source_ip="2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        user_agent="Mozilla/5.0 " + "\u00e9" * 4000,  # a hostile, multi-byte agent
        request_id="12345678-1234-1234-1234-123456789012",
        actor="arn:aws:sts::123456789012:assumed-role/" + "a" * 2000,
    )


@pytest.mark.parametrize(
    ("event", "decision"),
    [
        (EventType.REQUEST, Decision.ALLOW),
        (EventType.REQUEST, Decision.DENY),
        (EventType.TOKEN_ISSUED, Decision.ALLOW),
        (EventType.TOKEN_DENIED, Decision.DENY),
        *[(e, Decision.ALLOW) for e in EventType if e.value not in {"request", "token_issued"}],
    ],
)
@pytest.mark.parametrize("hot_window_days", [None, 30])
def test_largest_realistic_item_fits_one_write_unit(
    event: EventType, decision: Decision, hot_window_days: int | None
) -> None:
    record = _largest(event, decision)
    item = to_item(record, hot_window_days=hot_window_days)
    assert item_size(item) <= 1024
    # the edge's lean writer spells the same (capped) item
    assert json.loads("{" + usage_item_json(record, hot_window_days=hot_window_days) + "}") == item


def test_free_text_is_capped_with_a_visible_marker() -> None:
    record = _largest(EventType.REQUEST, Decision.ALLOW)
    stored = from_item(to_item(record))
    for text in (stored.user_agent, stored.actor):
        assert text.endswith(TRUNCATED)
        assert len(text.encode()) <= MAX_FREE_TEXT_BYTES
    assert stored.user_agent.startswith("Mozilla/5.0 \u00e9")
    assert stored.actor.startswith("arn:aws:sts::123456789012:assumed-role/aaa")


def test_short_free_text_is_kept_as_is() -> None:
    assert cap_free_text("curl/8.5.0") == "curl/8.5.0"
    exact = "x" * MAX_FREE_TEXT_BYTES
    assert cap_free_text(exact) == exact
    assert cap_free_text(exact + "y") != exact + "y"


def test_cap_never_splits_a_character() -> None:
    capped = cap_free_text("\U0001f600" * 100)
    assert capped.endswith(TRUNCATED)
    assert set(capped.removesuffix(TRUNCATED)) == {"\U0001f600"}
    assert len(capped.encode()) <= MAX_FREE_TEXT_BYTES


def _typical_edge_record() -> UsageRecord:
    """An allowed request as the edge records it (benchmarks/ledger_cost.py's shape)."""
    return UsageRecord(
        record_id="r" * 43,
        at_ms=1_796_000_000_000,
        decision=Decision.ALLOW,
        reason="",
        principal="arn:aws:iam::123456789012:role/service-0001",
        client_id="tbc_" + "f" * 24,
        retain_until=1_796_000_000 + 400 * 86_400,
        event=EventType.REQUEST,
        jkt="j" * 43,
        token_jti="t" * 43,
        proof_jti_hash="h" * 43,
        method="POST",
        route="/v1/models/{model}/invoke",
        resource="model-03",
        source_ip="203.0.113.7",
        user_agent="python-httpx/0.27.0",
        request_id="12345678-1234-1234-1234-123456789012",
    )


def test_short_attribute_names_would_save_storage_only_and_little_of_it() -> None:
    """Why the item keeps its long attribute names (issue 9, "slim item"): the item is
    one write unit with either spelling, so short names would save hot storage only;
    this pins that the saving stays under 100 B a record (< $0.03 per million requests
    with the 30-day window at $0.25/GB-month), against a schema change every reader of
    the archive (Athena's Glue columns, old objects) would have to span. If the names
    ever grow past that, revisit."""
    item = to_item(_typical_edge_record(), hot_window_days=30)
    # the key (``id``), ``at`` and the TTL attribute are short already
    names = sum(len(name) for name in item)
    shortest = sum(min(len(name), 2) for name in item)
    saved = names - shortest
    assert 60 < saved < 100, saved
    assert item_size(item) <= 1024  # one write unit: long names cost no write
    dollars = saved / 1e9 * 0.25 * (30 / 30.4375) * 1e6
    assert dollars < 0.03
