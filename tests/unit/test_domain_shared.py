"""What the domain defines once for everyone: the ledger record constructor, the error
tree's audit reasons, and the one rule against repeated keys."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import pytest

from tokenbroker.domain import errors
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.pairs import unique_mapping
from tokenbroker.domain.units import CLIENT_ID, DAY_MS, DAY_SECONDS, HOUR_MS, MAX_LEDGER_FIELD


def test_a_record_is_built_with_its_retention_and_request_fields_cut_to_the_ledger_bounds() -> None:
    record = UsageRecord.build(
        at=1_800_000_000.75,
        retention_days=30,
        record_id="r",
        principal="p",
        client_id="c",
        resource="m" * 1000,
        source_ip="1" * 100,
        user_agent="u" * 1000,
        request_id="q" * 1000,
        jkt="k",
    )
    assert record.at_ms == 1_800_000_000_750
    assert record.retain_until == 1_800_000_000 + 30 * DAY_SECONDS
    assert (record.decision, record.reason, record.event) == (
        Decision.ALLOW,
        "ok",
        EventType.REQUEST,
    )
    assert len(record.resource) == len(record.user_agent) == len(record.request_id) == 256
    assert len(record.source_ip) == 64
    assert (record.jkt, record.token_jti, record.actor) == ("k", "", "")
    assert MAX_LEDGER_FIELD == 256


def test_a_built_record_equals_the_constructors_field_for_field_and_stays_frozen() -> None:
    # build() fills the instance dict directly (speed, issue 13): every field must be set
    values: dict[str, Any] = {f.name: f"v-{f.name}" for f in dataclasses.fields(UsageRecord)}
    values.update(at_ms=1_800_000_000_000, retain_until=1_800_000_000 + 30 * DAY_SECONDS)
    values.update(decision=Decision.DENY, event=EventType.REQUEST)
    built = UsageRecord.build(
        at=1_800_000_000,
        retention_days=30,
        **{k: v for k, v in values.items() if k not in ("at_ms", "retain_until")},
    )
    assert built == UsageRecord(**values)
    assert vars(built) == vars(UsageRecord(**values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.reason = "changed"  # type: ignore[misc]


def test_units_agree_with_each_other() -> None:
    assert DAY_MS == 24 * HOUR_MS == DAY_SECONDS * 1000
    assert CLIENT_ID.fullmatch("tbc_0123456789abcdef")
    assert not CLIENT_ID.fullmatch("a/b")
    assert not CLIENT_ID.fullmatch("x" * 65)


LEAVES = [
    errors.InvalidRequest,
    errors.InvalidClient,
    errors.InvalidGrant,
    errors.UnauthorizedClient,
    errors.UnsupportedGrantType,
    errors.InvalidScope,
    errors.InvalidDpopProof,
    errors.UseDpopNonce,
    errors.InvalidToken,
    errors.InsufficientScope,
    errors.InvalidTarget,
]


@pytest.mark.parametrize("leaf", LEAVES)
def test_an_oauth_leaf_is_audited_under_its_own_code(leaf: type[errors.OAuthError]) -> None:
    assert leaf.reason == leaf.error
    assert leaf().reason == leaf.error


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (errors.ProofReplayed, "invalid_dpop_proof", "proof_replayed"),
        (errors.DeviceRevoked, "invalid_token", "device_revoked"),
        (errors.ClientDisabled, "invalid_token", "client_disabled"),
        (errors.TemporarilyUnavailable, "temporarily_unavailable", "dependency_failure"),
        (errors.ConfigurationError, "temporarily_unavailable", "configuration_error"),
        (errors.NotFound, "not_found", "error"),  # admin errors are not OAuth leaves
    ],
)
def test_a_reason_a_class_states_is_kept(
    error: type[errors.BrokerError], code: str, reason: str
) -> None:
    assert (error.error, error.reason) == (code, reason)
    assert error("x", reason="refined").reason == "refined"


def test_a_repeated_key_is_refused_with_the_callers_error() -> None:
    assert unique_mapping([("a", 1), ("b", 2)], KeyError) == {"a": 1, "b": 2}
    with pytest.raises(LookupError, match="'a'"):
        unique_mapping([("a", 1), ("a", 1)], lambda key: LookupError(f"again: {key!r}"))
    hook = functools.partial(unique_mapping, duplicate=lambda key: ValueError(key))
    with pytest.raises(ValueError, match="x"):
        json.loads('{"o": {"x": 1, "x": 2}}', object_pairs_hook=hook)
