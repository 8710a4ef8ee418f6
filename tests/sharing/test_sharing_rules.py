"""The pure sharing rules: networks, the batch fold, thresholds, configuration."""

from __future__ import annotations

import calendar
from typing import Any

import pytest

from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.sharing import (
    DEFAULT_RULES,
    Mode,
    Rule,
    Rules,
    WindowState,
    day_of_alert,
    evaluate_burst,
    evaluate_window,
    fold,
    network_of,
    parse_mode,
    parse_rules,
    region_of,
    rules_json,
)
from tokenbroker.domain.units import HOUR_MS

T0 = calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000


def record(n: int = 0, **overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "record_id": f"rec-{n}",
        "at_ms": T0 + n,
        "decision": Decision.ALLOW,
        "reason": "ok",
        "principal": "tbc_alice",
        "client_id": "tbc_alice",
        "retain_until": 0,
        "jkt": "jkt-a",
        "source_ip": "198.51.100.7",
    }
    values.update(overrides)
    return UsageRecord(**values)


def test_networks_are_ipv4_slash_24_and_ipv6_slash_48() -> None:
    assert network_of("198.51.100.7") == "198.51.100.0/24"
    assert network_of("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert network_of("::ffff:198.51.100.7") == "198.51.100.0/24"  # v4-mapped is v4
    assert network_of("") == network_of("not-an-ip") == network_of("10.0.0.1/8") == ""


def test_distant_means_another_ipv4_slash_16_or_ipv6_slash_32() -> None:
    assert region_of("198.51.100.7") == region_of("198.51.7.1") == "198.51.0.0/16"
    assert region_of("203.0.113.1") != region_of("198.51.100.7")
    assert region_of("2001:db8:1234::1") == "2001:db8::/32"
    assert region_of("garbage") == ""


def test_a_batch_folds_into_one_delta_per_rule_subject_and_window() -> None:
    records = [record(i, source_ip=f"10.{i}.{i}.1") for i in range(20)]
    deltas = fold(records, Rules())
    by_rule = {d.key.rule: d for d in deltas}
    assert len(deltas) == 3  # device networks, distant networks, devices of the principal
    assert len(by_rule[Rule.DEVICE_NETWORKS].members) == 20
    assert len(by_rule[Rule.DISTANT_NETWORKS].members) == 20
    assert by_rule[Rule.CONCURRENT_DEVICES].members == {"jkt-a"}
    assert by_rule[Rule.DEVICE_NETWORKS].jkt == "jkt-a"
    assert by_rule[Rule.CONCURRENT_DEVICES].jkt == ""  # a principal's window
    assert fold(list(reversed(records)), Rules()) == deltas  # deterministic


def test_windows_are_tumbling_so_a_minute_later_is_another_window() -> None:
    deltas = fold([record(0), record(60_000)], Rules())
    starts = {d.key.start_ms for d in deltas if d.key.rule is Rule.DEVICE_NETWORKS}
    assert starts == {T0, T0 + 60_000}


def test_denied_requests_and_admin_events_do_not_count() -> None:
    # a copied token without the device key produces denials from anywhere: counting
    # them would let an attacker get the victim's device revoked
    denied = [record(i, decision=Decision.DENY, source_ip=f"10.{i}.0.1") for i in range(30)]
    admin = record(99, event=EventType.DEVICE_REVOKED, source_ip="10.99.0.1")
    assert fold([*denied, admin], Rules()) == []


def test_a_token_issuance_counts_like_a_request() -> None:
    deltas = fold([record(0, event=EventType.TOKEN_ISSUED)], Rules())
    assert {d.key.rule for d in deltas} == {
        Rule.DEVICE_NETWORKS,
        Rule.DISTANT_NETWORKS,
        Rule.CONCURRENT_DEVICES,
    }


def _state(rule: Rule, members: set[str], overflow: bool = False) -> WindowState:
    [delta] = [d for d in fold([record(0)], Rules()) if d.key.rule is rule]
    return WindowState(delta, frozenset(members), overflow)


def test_a_device_is_flagged_only_above_its_networks_limit() -> None:
    limit = DEFAULT_RULES[Rule.DEVICE_NETWORKS].limit
    at_limit = {f"10.{i}.0.0/24" for i in range(limit)}
    assert evaluate_window(_state(Rule.DEVICE_NETWORKS, at_limit), Rules()) is None
    over = at_limit | {"10.200.0.0/24"}
    finding = evaluate_window(_state(Rule.DEVICE_NETWORKS, over), Rules())
    assert finding is not None
    assert (finding.rule, finding.jkt, finding.observed, finding.limit) == (
        Rule.DEVICE_NETWORKS,
        "jkt-a",
        limit + 1,
        limit,
    )
    assert finding.summary() == f"{limit + 1} networks in 60s (limit {limit})"
    assert day_of_alert(finding.alert_id) == "20270115"
    # the same window is the same alert (idempotent on a retried batch)
    again = evaluate_window(_state(Rule.DEVICE_NETWORKS, over), Rules())
    assert again is not None
    assert again.alert_id == finding.alert_id


def test_two_distant_networks_within_the_window_are_flagged() -> None:
    one = _state(Rule.DISTANT_NETWORKS, {"198.51.0.0/16"})
    two = _state(Rule.DISTANT_NETWORKS, {"198.51.0.0/16", "203.0.0.0/16"})
    assert evaluate_window(one, Rules()) is None
    finding = evaluate_window(two, Rules())
    assert finding is not None
    assert finding.rule is Rule.DISTANT_NETWORKS


def test_a_full_window_set_counts_as_over_any_limit() -> None:
    finding = evaluate_window(_state(Rule.DEVICE_NETWORKS, {"x"}, overflow=True), Rules())
    assert finding is not None
    assert finding.observed > finding.limit


def test_more_devices_than_a_person_uses_is_flagged_without_naming_one_device() -> None:
    devices = {f"jkt-{i}" for i in range(4)}
    finding = evaluate_window(_state(Rule.CONCURRENT_DEVICES, devices), Rules())
    assert finding is not None
    assert (finding.rule, finding.jkt, finding.principal) == (
        Rule.CONCURRENT_DEVICES,
        "",
        "tbc_alice",
    )


def test_a_burst_is_measured_against_the_principals_own_baseline() -> None:
    current = T0 + 5 * HOUR_MS
    baseline = [(current - h * HOUR_MS, 100) for h in range(1, 25)]  # 100/h for a day
    quiet = evaluate_burst("p", "c", current + 1, [*baseline, (current, 900)], Rules())
    assert quiet is None  # 9x its baseline: under the factor of 10
    loud = evaluate_burst("p", "c", current + 1, [*baseline, (current, 1001)], Rules())
    assert loud is not None
    assert (loud.rule, loud.observed, loud.limit) == (Rule.PRINCIPAL_BURST, 1001, 1000)
    # a new principal (no baseline) needs min_requests before it is a burst
    assert evaluate_burst("p", "c", current, [(current, 499)], Rules()) is None
    assert evaluate_burst("p", "c", current, [(current, 501)], Rules()) is not None


def test_rules_come_from_json_with_defaults_for_what_is_not_named() -> None:
    rules = parse_rules(
        '{"device_networks": {"max_networks": 19, "window_seconds": 120},'
        ' "principal_burst": {"enabled": false}}'
    )
    assert rules.get(Rule.DEVICE_NETWORKS).limit == 19
    assert rules.get(Rule.DEVICE_NETWORKS).window_seconds == 120
    assert not rules.enabled(Rule.PRINCIPAL_BURST)
    assert rules.get(Rule.DISTANT_NETWORKS) == DEFAULT_RULES[Rule.DISTANT_NETWORKS]
    assert parse_rules("{}") == parse_rules("") == Rules()
    assert rules_json(rules)["device_networks"] == {
        "enabled": True,
        "window_seconds": 120,
        "max_networks": 19,
    }


def test_a_disabled_rule_folds_nothing() -> None:
    rules = parse_rules('{"device_networks": {"enabled": false}}')
    assert Rule.DEVICE_NETWORKS not in {d.key.rule for d in fold([record(0)], rules)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[", "must be a JSON object"),
        ("[]", "must be a JSON object"),
        ('{"teleport": {}}', "unknown rule 'teleport'"),
        ('{"device_networks": 5}', "device_networks must be an object"),
        ('{"device_networks": {"max_devices": 2}}', "unknown key 'max_devices'"),
        ('{"device_networks": {"max_networks": 0}}', "must be a positive integer"),
        ('{"device_networks": {"max_networks": true}}', "must be a positive integer"),
        ('{"device_networks": {"max_networks": 500}}', "the limit must be below 200"),
        ('{"device_networks": {"window_seconds": 90000}}', "window_seconds must be within"),
        ('{"device_networks": {"enabled": "no"}}', "enabled must be true or false"),
    ],
)
def test_bad_rules_are_a_configuration_error_naming_the_problem(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_rules(raw)
    assert message in str(caught.value.description)


def test_containment_modes_are_exactly_three() -> None:
    assert [parse_mode(m) for m in ("audit", "step_up", "revoke")] == list(Mode)
    with pytest.raises(ConfigurationError):
        parse_mode("nuke")


def test_alert_ids_are_recognised() -> None:
    assert day_of_alert("20270115-0123456789abcdef0123") == "20270115"
    for bad in ("", "x", "20270115-xyz", "2027011-0123456789abcdef0123", "20270115_01"):
        assert day_of_alert(bad) == ""
