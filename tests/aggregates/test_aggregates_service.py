"""What one ledger record adds to its principal's aggregates, which buckets cover a
range, and how buckets sum up: pure, no AWS."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from tokenbroker.domain import aggregates as domain_aggregates
from tokenbroker.domain.aggregates import DELTA_RECORDS
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.services.aggregates import (
    DAY_MS,
    HOUR_MS,
    AggregatesService,
    Contribution,
    MalformedRecord,
    Page,
    PrincipalSummary,
    add_to,
    contribution,
    cover,
    day_of,
    fold,
    hour_start,
    merge,
    shard_of,
)

#: 2027-01-15T08:00:00Z
T0 = calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000


def record(**overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "record_id": "rec-1",
        "at_ms": T0 + 1234,
        "decision": Decision.ALLOW,
        "reason": "ok",
        "principal": "tbc_alice",
        "client_id": "tbc_alice",
        "jkt": "jkt-a",
        "token_jti": "jti-1",
        "proof_jti_hash": "h",
        "method": "POST",
        "route": "/v1/models/{model}/invoke",
        "resource": "gpt-secret",
        "source_ip": "198.51.100.7",
        "user_agent": "ua",
        "request_id": "req-1",
        "retain_until": T0 // 1000 + 400 * 86400,
    }
    values.update(overrides)
    return UsageRecord(**values)


def test_the_fixture_time_is_an_utc_hour_boundary() -> None:
    assert T0 % HOUR_MS == 0
    assert day_of(T0) == "2027-01-15"
    assert hour_start("2027-01-15T08") == T0


def test_an_allowed_request_counts_a_request_its_model_device_and_address() -> None:
    c = contribution(record())

    assert c == Contribution(
        record_id="rec-1",
        principal="tbc_alice",
        at_ms=T0 + 1234,
        retain_until=T0 // 1000 + 400 * 86400,
        requests=1,
        allowed=1,
        model="gpt-secret",
        device="jkt-a",
        source_ip="198.51.100.7",
    )
    assert (c.day, c.hour) == ("2027-01-15", "2027-01-15T08")


def test_a_denied_request_counts_the_denial_and_its_reason() -> None:
    c = contribution(record(decision=Decision.DENY, reason="proof_replayed"))

    assert (c.requests, c.allowed, c.denied, c.denial_reason) == (1, 0, 1, "proof_replayed")
    assert (c.model, c.device, c.source_ip) == ("gpt-secret", "jkt-a", "198.51.100.7")


def test_a_denial_without_a_reason_is_counted_as_unspecified() -> None:
    assert contribution(record(decision=Decision.DENY, reason="")).denial_reason == "unspecified"


def test_an_allowed_request_has_no_denial_reason_even_if_the_record_has_one() -> None:
    assert contribution(record(reason="ok")).denial_reason == ""


def test_a_token_issuance_counts_the_token_device_and_address_but_no_request() -> None:
    c = contribution(record(event=EventType.TOKEN_ISSUED, resource=""))

    assert (c.requests, c.tokens_issued, c.tokens_denied, c.model) == (0, 1, 0, "")
    assert (c.device, c.source_ip) == ("jkt-a", "198.51.100.7")


def test_a_denied_token_request_counts_its_reason() -> None:
    c = contribution(
        record(event=EventType.TOKEN_ISSUED, decision=Decision.DENY, reason="device_revoked")
    )

    assert (c.tokens_issued, c.tokens_denied, c.denied, c.denial_reason) == (
        0,
        1,
        0,
        "device_revoked",
    )


@pytest.mark.parametrize(
    "event",
    [
        EventType.CLIENT_CREATED,
        EventType.CLIENT_DISABLED,
        EventType.DEVICE_ENROLLED,
        EventType.DEVICE_REVOKED,
    ],
)
def test_admin_events_count_by_type_and_not_as_devices_or_addresses(event: EventType) -> None:
    c = contribution(record(event=event, actor="arn:aws:iam::123456789012:user/admin"))

    assert c.admin_event == event.value
    assert (c.requests, c.tokens_issued, c.device, c.source_ip, c.model) == (0, 0, "", "", "")


def test_the_principal_defaults_to_the_client() -> None:
    assert contribution(record(principal="", client_id="tbc_bob")).principal == "tbc_bob"


def test_a_record_without_principal_or_client_is_malformed() -> None:
    with pytest.raises(MalformedRecord):
        contribution(record(principal="", client_id=""))


# --------------------------------------------------------------------- the service


class FakeStore:
    """Keeps pages by (hour, shard, name) and skips a page of the same writer, like the
    DynamoDB store; sums them per principal and hour like its reader."""

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.pages: dict[tuple[str, int, str], Page] = {}
        self._writes = 0
        self._fail_on = fail_on

    def write(self, page: Page) -> bool:
        key = (page.hour, page.shard, page.name)
        held = self.pages.get(key)
        if held is not None and held.writer == page.writer:
            return False
        self._writes += 1
        if self._writes == self._fail_on:
            raise TemporarilyUnavailable("injected")
        self.pages[key] = page
        return True

    def bucket(self, principal: str, hour: str) -> PrincipalSummary:
        total = PrincipalSummary(principal, 0, 0)
        for (page_hour, _, _), page in sorted(self.pages.items()):
            for delta in page.deltas:
                if page_hour == hour and delta.principal == principal:
                    total = add_to(total, delta)
        return total


def images(*records: UsageRecord) -> list[dict[str, Any]]:
    return [{"record": r} for r in records]


def decode(image: Mapping[str, Any]) -> UsageRecord:
    if "record" not in image:
        raise MalformedRecord("no")
    return image["record"]  # type: ignore[no-any-return]


HOUR = "2027-01-15T08"
BOB = {"principal": "tbc_bob", "client_id": "tbc_bob"}


def test_a_batch_folds_into_one_page_per_hour_and_principal_shard() -> None:
    batch = [record(record_id=f"r{i}", at_ms=T0 + i) for i in range(10)]
    batch.append(record(record_id="b1", **BOB))
    batch.append(record(record_id="n1", at_ms=T0 + HOUR_MS))
    pages = fold(contribution(r) for r in batch)

    assert [(p.hour, p.shard) for p in pages] == [
        (HOUR, shard_of("tbc_bob")),
        (HOUR, shard_of("tbc_alice")),
        ("2027-01-15T09", shard_of("tbc_alice")),
    ]
    alice = pages[1].deltas[0]
    assert (alice.requests, alice.first_seen_ms, alice.last_seen_ms) == (10, T0, T0 + 9)
    assert len({p.name for p in pages}) == len({p.writer for p in pages}) == 3


def test_principals_of_one_shard_share_a_page() -> None:
    carol = {"principal": "p", "client_id": "p"}  # the same shard as tbc_carol
    assert shard_of("p") == shard_of("tbc_carol")
    other = {"principal": "tbc_carol", "client_id": "tbc_carol"}
    [page] = fold([contribution(record(record_id="1", **carol)), contribution(record(**other))])
    assert [d.principal for d in page.deltas] == ["p", "tbc_carol"]


def test_a_principal_with_many_records_in_a_batch_gets_bounded_deltas_that_sum() -> None:
    many = DELTA_RECORDS * 2 + 5
    batch = [record(record_id=f"r{i}", jkt=f"jkt-{i}", at_ms=T0 + i) for i in range(many)]
    [page] = fold(contribution(r) for r in batch)

    assert [d.requests for d in page.deltas] == [DELTA_RECORDS, DELTA_RECORDS, 5]
    total = merge("tbc_alice", 0, 0, page.deltas)
    assert (total.requests, total.distinct_devices) == (many, many)
    assert (total.first_seen_ms, total.last_seen_ms) == (T0, T0 + many - 1)


def test_a_record_twice_in_one_batch_counts_once() -> None:
    [page] = fold([contribution(record()), contribution(record())])
    assert page.deltas[0].requests == 1


def test_a_retry_with_more_records_names_the_same_page_with_a_new_writer() -> None:
    first = fold([contribution(record(record_id="r1"))])
    longer = fold([contribution(record(record_id="r1")), contribution(record(record_id="r2"))])
    assert first[0].name == longer[0].name
    assert first[0].writer != longer[0].writer


def test_the_service_writes_one_page_per_hour_and_shard_per_batch() -> None:
    store = FakeStore()
    service = AggregatesService(store=store, decode=decode)

    result = service.count_batch(images(*(record(record_id=f"r{i}") for i in range(50))))

    assert (result.counted, result.written, result.skipped) == (50, 1, 0)
    assert store.bucket("tbc_alice", HOUR).requests == 50


def test_a_redelivered_batch_adds_nothing() -> None:
    store = FakeStore()
    service = AggregatesService(store=store, decode=decode)
    batch = images(record(record_id="r1"), record(record_id="r2"))
    service.count_batch(batch)

    again = service.count_batch(batch)

    assert (again.written, again.skipped) == (0, 1)
    assert store.bucket("tbc_alice", HOUR).requests == 2


def test_a_batch_failing_half_way_counts_each_record_once_after_the_retry() -> None:
    store = FakeStore(fail_on=2)  # bob's page is written, alice's fails
    service = AggregatesService(store=store, decode=decode)
    batch = images(record(record_id="r1"), record(record_id="r2", **BOB))

    with pytest.raises(TemporarilyUnavailable):
        service.count_batch(batch)
    retry = service.count_batch(batch)

    assert (retry.written, retry.skipped) == (1, 1)
    assert store.bucket("tbc_alice", HOUR).requests == 1
    assert store.bucket("tbc_bob", HOUR).requests == 1


def test_a_retried_batch_with_more_records_replaces_its_pages() -> None:
    store = FakeStore()
    service = AggregatesService(store=store, decode=decode)
    service.count_batch(images(record(record_id="r1")))

    retry = service.count_batch(images(record(record_id="r1"), record(record_id="r2")))

    assert (retry.written, retry.skipped) == (1, 0)
    assert len(store.pages) == 1
    assert store.bucket("tbc_alice", HOUR).requests == 2


def test_the_service_skips_and_reports_what_it_cannot_decode() -> None:
    store = FakeStore()
    service = AggregatesService(store=store, decode=decode)

    result = service.count_batch([{}, {"record": record()}, {"x": 1}])

    assert (result.counted, result.malformed) == (1, (0, 2))
    assert store.bucket("tbc_alice", HOUR).requests == 1
    with pytest.raises(MalformedRecord):
        service.count({})


def test_source_ips_beyond_the_cap_are_flagged_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain_aggregates, "MAX_SOURCE_IPS", 2)
    bucket = PrincipalSummary("p", 0, 0, source_ips=frozenset({"10.0.0.9"}))
    delta = PrincipalSummary("p", 0, 0, source_ips=frozenset({"10.0.0.1", "10.0.0.2"}))

    total = add_to(bucket, delta)

    assert total.source_ips == {"10.0.0.9", "10.0.0.1"}
    assert total.source_ips_overflow is True


# ------------------------------------------------------------------ covering a range


def test_a_range_inside_one_hour_is_that_hour() -> None:
    span = cover(T0 + 10, T0 + 20)

    assert (span.since_ms, span.until_ms) == (T0, T0 + HOUR_MS)
    assert span.days == ()
    assert span.hours == ("2027-01-15T08",)


def test_a_range_ending_on_an_hour_boundary_does_not_take_the_next_hour() -> None:
    assert cover(T0, T0 + 2 * HOUR_MS).hours == ("2027-01-15T08", "2027-01-15T09")


def test_whole_days_are_read_as_days_and_the_edges_as_hours() -> None:
    day = T0 - 8 * HOUR_MS  # 2027-01-15T00
    span = cover(day - 2 * HOUR_MS, day + DAY_MS + HOUR_MS + 1)

    assert span.days == ("2027-01-15",)
    assert span.hours == ("2027-01-14T22", "2027-01-14T23", "2027-01-16T00", "2027-01-16T01")
    assert (span.since_ms, span.until_ms) == (day - 2 * HOUR_MS, day + DAY_MS + 2 * HOUR_MS)


def test_exact_days_need_no_hours() -> None:
    day = T0 - 8 * HOUR_MS
    span = cover(day, day + 2 * DAY_MS)

    assert span.days == ("2027-01-15", "2027-01-16")
    assert span.hours == ()


def test_a_range_across_midnight_without_a_whole_day_is_hours() -> None:
    midnight = T0 + 16 * HOUR_MS
    span = cover(midnight - HOUR_MS, midnight + HOUR_MS)

    assert span.days == ()
    assert span.hours == ("2027-01-15T23", "2027-01-16T00")


@pytest.mark.parametrize(("since", "until"), [(T0, T0), (T0 + 1, T0)])
def test_an_empty_range_is_an_error(since: int, until: int) -> None:
    with pytest.raises(ValueError, match="empty"):
        cover(since, until)


# -------------------------------------------------------------------- summing buckets


def test_merge_sums_counters_unions_sets_and_keeps_the_extremes() -> None:
    a = PrincipalSummary(
        "p",
        0,
        0,
        requests=3,
        allowed=2,
        denied=1,
        denials={"proof_replayed": 1},
        models={"m1": 3},
        devices=frozenset({"j1"}),
        source_ips=frozenset({"ip1"}),
        first_seen_ms=50,
        last_seen_ms=60,
    )
    b = replace(
        a,
        requests=1,
        allowed=1,
        denied=0,
        denials={},
        models={"m1": 1, "m2": 1},
        admin_events={"device_enrolled": 1},
        devices=frozenset({"j2"}),
        source_ips=frozenset({"ip1", "ip2"}),
        source_ips_overflow=True,
        first_seen_ms=10,
        last_seen_ms=20,
        tokens_issued=2,
    )

    total = merge("p", 0, DAY_MS, [a, b, PrincipalSummary("p", 0, 0)])

    assert total == PrincipalSummary(
        "p",
        0,
        DAY_MS,
        requests=4,
        allowed=3,
        denied=1,
        tokens_issued=2,
        denials={"proof_replayed": 1},
        models={"m1": 4, "m2": 1},
        admin_events={"device_enrolled": 1},
        devices=frozenset({"j1", "j2"}),
        source_ips=frozenset({"ip1", "ip2"}),
        source_ips_overflow=True,
        first_seen_ms=10,
        last_seen_ms=60,
    )
    assert (total.distinct_devices, total.distinct_source_ips) == (2, 2)


def test_a_summary_without_records_has_no_first_or_last_seen() -> None:
    assert merge("p", 0, HOUR_MS, []).first_seen_ms is None


def test_summaries_have_a_plain_json_form() -> None:
    summary = PrincipalSummary(
        "p",
        0,
        HOUR_MS,
        requests=1,
        allowed=1,
        devices=frozenset({"b", "a"}),
        models={"z": 1, "a": 2},
    )

    as_json = summary.as_json()

    assert as_json["devices"] == ["a", "b"]
    assert list(as_json["models"]) == ["a", "z"]
    assert as_json["distinct_devices"] == 2
    assert as_json["first_seen_ms"] is None
