"""Audit queries against moto, on the usage table provisioned from template.yaml, with
records written by the real ``usage_item``: index choice, filters and their
combinations, newest-first order, pagination with ``next_token`` (pages ending exactly
on the last record, on runs of equal ``at``), empty results and laziness."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tokenbroker.adapters.archive_index import HotIndex
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import UsageRecord
from tokenbroker.services.audit import (
    AuditQueryError,
    AuditService,
    Cursor,
    Page,
    UsageFilters,
)

from . import DEV_A1, HOUR_MS, REGION, T0, Ledger, ledger, provisioned, record, standard_records

SINCE, UNTIL = T0, T0 + 3 * HOUR_MS


@pytest.fixture(scope="module")
def data() -> Iterator[Ledger]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        with provisioned("audit-queries") as deployment:
            book = ledger(deployment)
            book.write(standard_records())
            yield book


def index_that_must_not_be_called() -> Any:
    class Refuse:
        def hours(self, *args: Any, **kw: Any) -> Any:
            raise AssertionError("no read expected")

        def records(self, *args: Any, **kw: Any) -> Any:
            raise AssertionError("no read expected")

    return Refuse()


def index(data: Ledger) -> HotIndex:
    return HotIndex(data.dynamodb, table=data.index_table, usage_table=data.table)


@pytest.fixture
def audit(data: Ledger) -> AuditService:
    return AuditService(index=index(data))


def ids(page: Page) -> list[str]:
    return [r.record_id for r in page.records]


def all_pages(audit: AuditService, filters: UsageFilters, limit: int) -> list[Page]:
    pages = [audit.usage(filters, limit)]
    while pages[-1].next_token:
        pages.append(audit.usage(filters, limit, pages[-1].next_token))
        assert len(pages) < 1000
    return pages


FILTERS: list[dict[str, str]] = [
    {},
    {"principal": "alice"},
    {"principal": "bob"},
    {"device": "dev-a2"},
    {"token": "tok-carol-3"},
    {"model": "embed"},
    {"decision": "deny"},
    {"decision": "allow"},
    {"principal": "alice", "model": "chat"},
    {"principal": "alice", "decision": "deny"},
    {"device": DEV_A1, "model": "embed", "decision": "allow"},
    {"token": "tok-alice-1", "device": "dev-a2"},
    {"token": "tok-alice-1", "principal": "bob"},  # contradictory: nothing
    {"model": "chat", "decision": "deny"},
    {"principal": "carol", "device": "dev-c2"},
]


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize("given", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_every_filter_and_combination_returns_exactly_the_matching_records_newest_first(
    audit: AuditService, data: Ledger, given: dict[str, str]
) -> None:
    filters = UsageFilters(SINCE, UNTIL, **given)
    page = audit.usage(filters, limit=1000)
    assert ids(page) == data.expected(SINCE, UNTIL, **given)
    assert page.next_token is None


@pytest.mark.parametrize("given", FILTERS[:6], ids=str)
def test_a_time_range_inside_the_data_is_half_open_and_applies_to_every_index(
    audit: AuditService, data: Ledger, given: dict[str, str]
) -> None:
    since, until = T0 + HOUR_MS // 2 + 17, T0 + 2 * HOUR_MS + HOUR_MS // 2 - 5
    got = ids(audit.usage(UsageFilters(since, until, **given), limit=1000))
    assert got == data.expected(since, until, **given)
    assert got  # the range is not trivially empty


def test_a_record_exactly_at_since_is_included_and_one_exactly_at_until_is_not(
    audit: AuditService, data: Ledger
) -> None:
    first = data.records[0]
    assert first.record_id in ids(audit.usage(UsageFilters(first.at_ms, first.at_ms + 1)))
    before = audit.usage(UsageFilters(first.at_ms - 10, first.at_ms))
    assert first.record_id not in ids(before)


def test_records_come_back_as_the_usage_records_that_were_written(
    audit: AuditService, data: Ledger
) -> None:
    (one,) = audit.usage(UsageFilters(SINCE, UNTIL, principal="bob"), limit=1).records
    # the reader yields the domain record itself, built from the item by ledger_items
    assert isinstance(one, UsageRecord)
    assert one == next(r for r in data.records if r.record_id == one.record_id)
    assert type(one.at_ms) is int
    assert type(one.retain_until) is int


def test_admin_events_without_a_token_or_model_are_found_by_principal_and_by_time(
    audit: AuditService, data: Ledger
) -> None:
    by_principal = audit.usage(UsageFilters(SINCE, UNTIL, principal="carol"), limit=1000)
    events = Counter(r.event.value for r in by_principal.records)
    assert events["device_enrolled"] == 3
    enrolled = {r.record_id for r in by_principal.records if r.event == "device_enrolled"}
    by_time = audit.usage(UsageFilters(T0 + 2 * HOUR_MS + 5, T0 + 2 * HOUR_MS + 8), limit=1000)
    assert enrolled <= set(ids(by_time))


# ---------------------------------------------------------------------------- pagination


@pytest.mark.parametrize(
    ("given", "limit", "hours"),
    [
        ({"principal": "bob"}, 1, 1),
        ({"principal": "alice"}, 7, 3),
        ({"principal": "alice"}, 25, 3),
        ({"principal": "alice"}, 50, 3),
        ({"model": "chat"}, 4, 1),
        ({"model": "chat", "decision": "allow"}, 25, 3),
        ({}, 40, 3),  # by_hour: every page restarts a merge of 128 shards (slow on moto)
    ],
    ids=str,
)
def test_pages_joined_are_the_whole_result_with_no_record_repeated_or_skipped(
    audit: AuditService, data: Ledger, given: dict[str, str], limit: int, hours: int
) -> None:
    since, until = UNTIL - hours * HOUR_MS, UNTIL
    pages = all_pages(audit, UsageFilters(since, until, **given), limit)
    expected = data.expected(since, until, **given)
    assert list(itertools.chain.from_iterable(ids(p) for p in pages)) == expected
    assert len(pages) == -(-len(expected) // limit)
    assert all(len(p.records) == limit for p in pages[:-1])


def test_a_page_ending_exactly_on_the_last_record_has_no_next_token(
    audit: AuditService, data: Ledger
) -> None:
    expected = data.expected(SINCE, UNTIL, principal="bob")
    assert len(expected) % 2 == 0
    whole = audit.usage(UsageFilters(SINCE, UNTIL, principal="bob"), limit=len(expected))
    assert ids(whole) == expected
    assert whole.next_token is None
    half = len(expected) // 2
    pages = all_pages(audit, UsageFilters(SINCE, UNTIL, principal="bob"), half)
    assert [len(p.records) for p in pages] == [half, half]
    assert pages[-1].next_token is None


@pytest.mark.parametrize("limit", [1, 3, 5, 11])
def test_pages_that_split_a_run_of_equal_times_neither_repeat_nor_skip(
    audit: AuditService, data: Ledger, limit: int
) -> None:
    same = T0 + HOUR_MS + 1234
    filters = UsageFilters(same - 1, same + 2, principal="alice")
    expected = data.expected(same - 1, same + 2, principal="alice")
    assert len(expected) >= 12
    got = [i for p in all_pages(audit, filters, limit) for i in ids(p)]
    assert got == expected


def test_records_written_after_the_first_page_appear_only_in_the_part_not_yet_read(
    data: Ledger,
) -> None:
    audit = AuditService(index=index(data))
    since, until = T0 + 7 * HOUR_MS, T0 + 8 * HOUR_MS
    data.write(record(since + i * 1000, "dave", device="dev-d1") for i in range(10))
    filters = UsageFilters(since, until, principal="dave")
    first = audit.usage(filters, limit=4)  # 9000 8000 7000 6000
    data.write([record(since + 9500, "dave", device="dev-d1")])  # newer: already past
    data.write([record(since + 5500, "dave", device="dev-d1")])  # in the unread part
    second = audit.usage(filters, 4, first.next_token or "")
    assert ids(first) + ids(second) == data.expected(since, until, principal="dave")[1:9]


# ---------------------------------------------------------------------------- empty and bad


def test_an_unknown_principal_or_an_empty_range_is_an_empty_page(audit: AuditService) -> None:
    assert audit.usage(UsageFilters(SINCE, UNTIL, principal="nobody")) == Page([], None)
    later = UsageFilters(T0 + 30 * HOUR_MS, T0 + 31 * HOUR_MS)
    assert audit.usage(later) == Page([], None)
    assert list(audit.export(later.since_ms, later.until_ms)) == []


@pytest.mark.parametrize(("since", "until"), [(T0, T0), (T0 + 1, T0)])
def test_a_range_that_does_not_start_before_it_ends_is_refused(since: int, until: int) -> None:
    audit = AuditService(index=index_that_must_not_be_called())
    with pytest.raises(AuditQueryError, match="before its end"):
        audit.usage(UsageFilters(since, until))
    with pytest.raises(AuditQueryError):
        list(audit.export(since, until))


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_a_limit_outside_1_to_1000_is_refused(limit: int) -> None:
    with pytest.raises(AuditQueryError, match=r"1\.\.1000"):
        AuditService(index=index_that_must_not_be_called()).usage(UsageFilters(SINCE, UNTIL), limit)


@pytest.mark.parametrize(
    "token", ["x", "!!!!", "eyJ2IjogMn0", Cursor(1, "a", "q").encode()[:-3], "e30"]
)
def test_a_malformed_next_token_is_refused(token: str) -> None:
    audit = AuditService(index=index_that_must_not_be_called())
    with pytest.raises(AuditQueryError, match="not a token printed by this query"):
        audit.usage(UsageFilters(SINCE, UNTIL), 10, token)


def test_a_next_token_used_with_other_filters_is_refused(audit: AuditService) -> None:
    token = audit.usage(UsageFilters(SINCE, UNTIL, principal="alice"), 5).next_token
    assert token
    with pytest.raises(AuditQueryError, match="other filters"):
        audit.usage(UsageFilters(SINCE, UNTIL, principal="bob"), 5, token)


def test_a_next_token_keeps_working_when_until_moves_like_now_does(
    audit: AuditService, data: Ledger
) -> None:
    first = audit.usage(UsageFilters(SINCE, UNTIL, principal="alice"), 5)
    later = UsageFilters(SINCE, UNTIL + HOUR_MS, principal="alice")
    second = audit.usage(later, 5, first.next_token or "")
    assert ids(first) + ids(second) == data.expected(SINCE, UNTIL, principal="alice")[:10]


# ---------------------------------------------------------------------------- laziness


class CountingClient:
    """The real DynamoDB client, counting calls and the keys asked of BatchGetItem."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.keys = 0  # of the usage table (index pages are fetched from their own)
        self.table = ""

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self.inner, name)

        def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "batch_get_item":
                self.keys += len(kwargs["RequestItems"].get(self.table, {}).get("Keys", []))
            return operation(**kwargs)

        return call


def counted(data: Ledger) -> tuple[AuditService, CountingClient]:
    client = CountingClient(data.dynamodb)
    client.table = data.table
    index = HotIndex(client, table=data.index_table, usage_table=data.table)
    return AuditService(index=index), client


def test_a_first_page_fetches_only_records_of_the_newest_hours_it_needs(data: Ledger) -> None:
    audit, client = counted(data)
    day = UsageFilters(T0 - 21 * HOUR_MS, T0 + 3 * HOUR_MS)  # 24 hours, data in the last 3
    page = audit.usage(day, limit=20)
    assert ids(page) == data.expected(day.since_ms, day.until_ms)[:20]
    # one directory Query (the month), then the newest hour's records, 100 at a time
    assert client.calls["query"] == 1
    assert len(data.expected(T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS)) > 20  # the newest hour
    # its index pages (more than fit a directory item), then its records in one request
    assert client.calls["batch_get_item"] == 2
    assert 21 <= client.keys <= 100


def test_a_principal_filter_fetches_only_that_principals_records(data: Ledger) -> None:
    audit, client = counted(data)
    page = audit.usage(UsageFilters(SINCE, UNTIL, principal="bob"), limit=1000)
    assert ids(page) == data.expected(SINCE, UNTIL, principal="bob")
    assert client.keys == len(page.records)  # not every record of the hours


# ---------------------------------------------------------------------------- export


def test_export_streams_every_record_of_the_range_once_oldest_first(data: Ledger) -> None:
    audit = AuditService(index=index(data))
    since, until = T0 + HOUR_MS // 2, T0 + 2 * HOUR_MS + 6  # cuts through the admin events
    got = [r.record_id for r in audit.export(since, until)]
    assert got == data.oldest_first(since, until)
    assert len(got) == len(set(got))


# --------------------------------------------------------- requests by data (issue 9)


@pytest.fixture(scope="module")
def quiet_day() -> Iterator[Ledger]:
    """A deployment whose ledger holds 14 records over one day, indexed as the archive
    stream function indexes them (one page per batch and hour)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        with provisioned("audit-quiet") as deployment:
            book = ledger(deployment)
            records = [record(T0 + h * HOUR_MS + 17_000 * (h + 1)) for h in (1, 1, 5, 9, 9, 9)]
            records += [record(T0 + 20 * HOUR_MS + i, "bob", device="dev-b1") for i in range(8)]
            book.write(records)
            yield book


def test_an_unfiltered_quiet_day_reads_one_query_and_one_fetch_per_hour_with_records(
    quiet_day: Ledger,
) -> None:
    audit, client = counted(quiet_day)
    page = audit.usage(UsageFilters(T0, T0 + 24 * HOUR_MS), limit=1000)
    assert ids(page) == quiet_day.expected(T0, T0 + 24 * HOUR_MS)
    hours = {hour_of(r.at_ms) for r in quiet_day.records}
    # where all 256 by_hour shards of 24 hours were 6,144 Queries
    assert client.calls == Counter({"query": 1, "batch_get_item": len(hours)})
    assert client.keys == len(page.records) == 14


def test_the_request_count_does_not_grow_with_the_length_of_the_range(
    quiet_day: Ledger,
) -> None:
    counts = []
    for days in (1, 30, 90):
        audit, client = counted(quiet_day)
        since = T0 + 24 * HOUR_MS - days * 24 * HOUR_MS
        page = audit.usage(UsageFilters(since, T0 + 24 * HOUR_MS), limit=1000)
        assert len(page.records) == 14
        counts.append(client.calls)
    months = [1, 2, 4]  # one directory Query per month touched (Nov; Oct-Nov; Aug-Nov)
    assert [c["query"] for c in counts] == months
    assert {c["batch_get_item"] for c in counts} == {
        len({hour_of(r.at_ms) for r in quiet_day.records})
    }


def test_a_record_with_empty_names_comes_back_with_them_empty() -> None:
    # writers leave empty values out of the item (a person's event has no client id):
    # reading it back must give the record that was written, not a decoding error
    from tokenbroker.adapters.ledger_items import ATTRIBUTES, from_item, from_plain, to_item
    from tokenbroker.domain.models import EventType, UsageRecord

    record = UsageRecord.build(
        at=1_800_000_000,
        retention_days=30,
        record_id="enr:person-1",
        principal="https://idp.example|alice",
        client_id="",
        reason="",
        event=EventType.DEVICE_ENROLLED,
    )
    item = to_item(record)
    assert ATTRIBUTES["client_id"] not in item
    assert ATTRIBUTES["reason"] not in item
    assert from_item(item) == record
    plain = {k: next(iter(v.values())) for k, v in item.items()}
    for number in ("at_ms", "retain_until"):
        plain[ATTRIBUTES[number]] = int(plain[ATTRIBUTES[number]])
    assert from_plain(plain) == record


def test_usage_reports_its_progress_with_each_record_it_reads_newest_first(
    audit: AuditService,
) -> None:
    seen: list[int] = []
    page = audit.usage(UsageFilters(UNTIL - 6 * HOUR_MS, UNTIL), 5, progress=seen.append)
    assert page.records
    # every record of the page was reported, in the order read (newest first): the
    # CLI's bar moves back through the range; one more is read to know a next page exists
    assert seen[: len(page.records)] == [r.at_ms for r in page.records]
    assert seen == sorted(seen, reverse=True)
    assert len(seen) <= len(page.records) + 1
