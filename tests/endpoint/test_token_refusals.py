"""Refused token requests leave a (rate-bounded) ledger record, on moto through the
token function: who claimed to call, with which device key, why; auditors see them in
``usage`` and the aggregates count them as ``tokens_denied``."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.adapters.aggregates import decode_usage_image
from tokenbroker.adapters.archive_index import HotIndex, HotIndexWriter
from tokenbroker.adapters.ledger_scan import plain
from tokenbroker.domain.ledger import hour_of
from tokenbroker.services.aggregates import contribution
from tokenbroker.services.audit import AuditService, UsageFilters

from ._support import App, Broker, assert_error


def _refusals(broker: Broker) -> list[dict[str, Any]]:
    return broker.ledger_records("token_denied")


def test_a_wrong_secret_is_refused_and_recorded_with_the_claimed_client_and_device(
    broker: Broker, app: App
) -> None:
    assert_error(broker.issue(app, secret="x" * len(app.secret)), 401, "invalid_client")
    (record,) = _refusals(broker)
    assert (record["decision"], record["reason"]) == ("deny", "wrong_secret")
    assert (record["principal"], record["client_id"], record["jkt"]) == (
        app.client_id,
        app.client_id,
        app.key.jkt,
    )
    assert app.secret not in repr(record)
    assert broker.ledger_records("token_issued") == []
    assert broker.token_records() == []


def test_a_revoked_device_is_refused_and_recorded(broker: Broker, app: App) -> None:
    bootstrap.default().admin.revoke_device(app.key.jkt)
    assert_error(broker.issue(app), 400, "invalid_grant")
    (record,) = _refusals(broker)
    assert (record["reason"], record["jkt"]) == ("device_revoked", app.key.jkt)


def test_unknown_and_disabled_clients_are_recorded_and_still_answered_identically(
    broker: Broker, app: App
) -> None:
    unknown = broker.issue(app, client_id="tbc_" + "0" * 24)
    bootstrap.default().admin.disable_client(app.client_id)
    disabled = broker.issue(app)
    assert unknown == disabled
    assert_error(unknown, 401, "invalid_client")
    reasons = {(r["reason"], r["principal"]) for r in _refusals(broker)}
    assert reasons == {("unknown_client", "tbc_" + "0" * 24), ("client_disabled", app.client_id)}


def test_a_flood_of_refusals_adds_one_record_per_bucket_a_minute(broker: Broker, app: App) -> None:
    stranger = DeviceKey.generate()
    for n in range(20):
        broker.issue(app, secret=f"wrong-{n}")
        broker.issue(app, client_id=f"tbc_garbage{n:02d}")
        broker.issue(app, key=stranger)
    assert sorted(r["reason"] for r in _refusals(broker)) == [
        "device_not_enrolled",
        "unknown_client",
        "wrong_secret",
    ]
    broker.clock.advance(60)
    broker.issue(app, secret="wrong-again")
    assert len(_refusals(broker)) == 4


def test_auditors_see_refusals_in_usage_and_the_aggregates_count_them(
    broker: Broker, app: App
) -> None:
    broker.issue(app, secret="wrong")
    # what the archive stream function does with the new records (moto runs no stream):
    # one time index page per hour, which the auditors' query reads
    usage, index_table = broker.table("UsageTable"), broker.table("AggregatesTable")
    images = [plain(i) for i in broker.ddb.scan(TableName=usage)["Items"]]
    writer = HotIndexWriter(broker.ddb, table=index_table, hot_window_days=30)
    for hour in {hour_of(int(i["at"])) for i in images}:
        writer.write_page(hour, f"t-{hour}", [i for i in images if hour_of(int(i["at"])) == hour])
    audit = AuditService(index=HotIndex(broker.ddb, table=index_table, usage_table=usage))
    now_ms = broker.now * 1000
    page = audit.usage(
        UsageFilters(now_ms - 60_000, now_ms + 60_000, principal=app.client_id, decision="deny")
    )
    (record,) = page.records
    assert (record.event, record.reason) == ("token_denied", "wrong_secret")

    item = broker.ddb.get_item(
        TableName=broker.table("UsageTable"), Key={"id": {"S": record.record_id}}
    )["Item"]
    image = {k: TypeDeserializer().deserialize(v) for k, v in item.items()}
    counted = contribution(decode_usage_image(image))  # what the stream function adds
    assert (counted.tokens_denied, counted.tokens_issued, counted.denial_reason) == (
        1,
        0,
        "wrong_secret",
    )
