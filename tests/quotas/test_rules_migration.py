"""Upgrade safety of the quota rules (adapters/quota_rules.py): rules the previous
version stored (one item per model, bare ``rpm``/``rpd``/``upd``) stay enforced before,
during and after ``quotas migrate``; an item that cannot be read is a Deny; the migration
is idempotent, safe against itself and ``quotas set`` running at the same time, and a
failure half-way leaves the unmoved items in place and enforced. On moto, QuotasTable
from template.yaml; faults injected with botocore events (moto cannot throttle).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.quota_rules import FORMAT_KEY, REASON_INVALID, rules_key
from tokenbroker.adapters.quotas import DynamoQuotaStore, RulesRider
from tokenbroker.adapters.usage import DynamoLiveness
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.quotas import ALL_MODELS, LegacyRule, QuotaExceeded, QuotaLimits
from tokenbroker.local import load_template
from tokenbroker.services.quotas import QuotaAdmin, QuotaGate

TABLE = "quotas-test"
T0 = 1_800_000_000 - 1_800_000_000 % 86_400 + 7
A, B = "tbc_a", "tbc_b"


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = aws_client("dynamodb")
        template = load_template()
        for logical_id in ("QuotasTable", "ClientsTable", "DevicesTable"):
            name = TABLE if logical_id == "QuotasTable" else logical_id
            client.create_table(**template.create_table_kwargs(logical_id, name))
        yield client


def legacy(ddb: Any, client_id: str, model: str, **limits: int) -> None:
    """A rule item exactly as the previous version's ``set_rule`` wrote it."""
    item = {"pk": {"S": "rule#" + client_id}, "sk": {"S": model}, "at": {"N": "1"}}
    item.update({name: {"N": str(value)} for name, value in limits.items()})
    ddb.put_item(TableName=TABLE, Item=item)


def rule_items(ddb: Any) -> list[tuple[str, str]]:
    items = ddb.scan(TableName=TABLE)["Items"]
    return sorted((i["pk"]["S"], i["sk"]["S"]) for i in items if i["pk"]["S"].startswith("rule#"))


def admin(ddb: Any) -> QuotaAdmin:
    return QuotaAdmin(DynamoQuotaStore(ddb, table=TABLE), clock=FixedClock(T0))


def gate(ddb: Any) -> QuotaGate:
    return QuotaGate(
        DynamoQuotaStore(ddb, table=TABLE), defaults=QuotaLimits(0, 0, 0), clock=FixedClock(T0)
    )


def admitted(g: QuotaGate, client_id: str, model: str, n: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for _ in range(n):
        try:
            g.admit(client_id, "alice", model, T0)
            outcomes["allowed"] += 1
        except QuotaExceeded as exc:
            outcomes[exc.reason] += 1
    return outcomes


def fail(ddb: Any, operation: str, code: str, *, after: int = 0) -> None:
    """``operation`` fails with ``code`` from its ``after + 1``-th call on."""
    calls = [0]

    def inject(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        calls[0] += 1
        if calls[0] <= after:
            return None
        parsed = {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None), parsed

    ddb.meta.events.register(f"before-call.dynamodb.{operation}", inject)


# ---- reading both formats ------------------------------------------------------------
def test_legacy_rules_merge_with_the_rules_item_which_wins_where_it_sets_a_limit(
    ddb: Any,
) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=5, rpd=100)
    legacy(ddb, A, "llama3:8b", upd=9)
    store = DynamoQuotaStore(ddb, table=TABLE)
    store._rules.set_rule(A, ALL_MODELS, QuotaLimits(requests_per_minute=7), at=T0)
    assert store.rules(A) == {
        ALL_MODELS: QuotaLimits(7, 100, None),  # 7 from the rules item, 100 legacy
        "llama3:8b": QuotaLimits(None, None, 9),
    }


def test_the_edge_enforces_a_legacy_rule_of_the_routes_model(ddb: Any) -> None:
    legacy(ddb, A, "gpt-secret", rpm=3)
    outcomes = admitted(gate(ddb), A, "gpt-secret", 5)
    assert outcomes == {"allowed": 3, "quota_exceeded:requests_per_minute": 2}


def test_a_legacy_model_named_rules_is_read_from_the_shared_key(ddb: Any) -> None:
    """The previous version keyed a model's rule by the model: ``--model rules`` wrote
    bare limits on the key the rules item now has."""
    legacy(ddb, A, "rules", rpm=2)
    store = DynamoQuotaStore(ddb, table=TABLE)
    store._rules.set_rule(A, ALL_MODELS, QuotaLimits(requests_per_day=50), at=T0)
    assert store.rules(A) == {
        ALL_MODELS: QuotaLimits(None, 50, None),
        "rules": QuotaLimits(2, None, None),
    }
    [rule] = admin(ddb).migrate().rules
    assert rule == LegacyRule(A, "rules", QuotaLimits(2, None, None))
    item = ddb.get_item(TableName=TABLE, Key=rules_key(A))["Item"]
    assert ("rpm" in item, item["rpm:rules"], item["rpd:*"]) == (False, {"N": "2"}, {"N": "50"})
    assert store.rules(A)["rules"] == QuotaLimits(2, None, None)


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ({"rpm": {"S": "lots"}}, "invalid limit"),
        ({"rpm": {"N": "-1"}}, "invalid limit"),
        ({"rpm": {"N": "2.5"}}, "invalid limit"),
        ({"rpm": {"N": "5"}, "burst": {"N": "9"}}, "attributes it never wrote (burst)"),
    ],
)
def test_a_legacy_item_that_cannot_be_read_is_a_deny_never_unlimited(
    ddb: Any, item: dict[str, Any], why: str
) -> None:
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "rule#" + A}, "sk": {"S": "m1"}, **item})
    with pytest.raises(TemporarilyUnavailable, match=re.escape(why)) as denied:
        gate(ddb).admit(A, "alice", "other-model", T0)  # any route of the client
    assert denied.value.reason == REASON_INVALID
    assert f"client {A} model 'm1'" in denied.value.description
    # and the migration moves nothing of that client
    with pytest.raises(TemporarilyUnavailable, match=re.escape(why)):
        admin(ddb).migrate()
    assert rule_items(ddb) == [("rule#" + A, "m1")]
    assert "Item" not in ddb.get_item(TableName=TABLE, Key=FORMAT_KEY)


# ---- the edge's read: the marker rides in the liveness BatchGetItem -----------------
def _edge(ddb: Any) -> tuple[QuotaGate, DynamoLiveness, Counter[str]]:
    g = gate(ddb)
    sent: Counter[str] = Counter()
    ddb.meta.events.register(
        "before-send.dynamodb", lambda event_name, **_: sent.update([event_name.split(".")[-1]])
    )
    source = DynamoLiveness(
        ddb,
        clients_table="ClientsTable",
        devices_table="DevicesTable",
        riders=(RulesRider(table=TABLE, deliver=g.rules_read),),
    )
    return g, source, sent


def test_before_the_migration_the_edge_queries_both_formats_and_enforces_them(
    ddb: Any,
) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=2)
    g, source, sent = _edge(ddb)
    source.fetch(A, "jkt")  # the liveness read brings no marker: rules not delivered
    assert admitted(g, A, "", 3) == {"allowed": 2, "quota_exceeded:requests_per_minute": 1}
    assert sent["Query"] == 1  # the gate's own read of the client's rule# partition


def test_after_the_migration_the_rules_ride_in_the_liveness_read_alone(ddb: Any) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=2)
    admin(ddb).migrate()
    g, source, sent = _edge(ddb)
    source.fetch(A, "jkt")
    assert admitted(g, A, "", 3) == {"allowed": 2, "quota_exceeded:requests_per_minute": 1}
    assert (sent["BatchGetItem"], sent["Query"], sent["GetItem"]) == (1, 0, 0)


def test_a_marker_of_a_format_this_version_does_not_know_fails_the_liveness_read(
    ddb: Any,
) -> None:
    """A rolled-back deployment must not read a newer format as "no rules"."""
    ddb.put_item(TableName=TABLE, Item={**FORMAT_KEY, "version": {"N": "3"}})
    _, source, _ = _edge(ddb)
    with pytest.raises(TemporarilyUnavailable, match="format '3'") as denied:
        source.fetch(A, "jkt")
    assert denied.value.reason == REASON_INVALID


# ---- the migration --------------------------------------------------------------------
def test_dry_run_lists_and_changes_nothing(ddb: Any) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=5)
    legacy(ddb, B, "m", upd=9)
    before = rule_items(ddb)
    report = admin(ddb).migrate(dry_run=True)
    assert (report.dry_run, report.marked) == (True, False)
    assert [(r["client_id"], r["model"], r["result"]) for r in report.rows()] == [
        (A, "*", "would migrate"),
        (B, "m", "would migrate"),
    ]
    assert rule_items(ddb) == before
    assert "Item" not in ddb.get_item(TableName=TABLE, Key=FORMAT_KEY)


def test_migrate_folds_deletes_marks_and_a_second_run_changes_nothing(ddb: Any) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=5, rpd=100)
    legacy(ddb, A, "llama3:8b", upd=9)
    legacy(ddb, B, ALL_MODELS, rpm=1)
    store = DynamoQuotaStore(ddb, table=TABLE)
    store._rules.set_rule(B, ALL_MODELS, QuotaLimits(requests_per_minute=4), at=T0)
    enforced = {c: store.rules(c) for c in (A, B)}
    report = admin(ddb).migrate()
    assert report.marked
    assert [(r.client_id, r.model, r.superseded) for r in report.rules] == [
        (A, "*", ()),
        (A, "llama3:8b", ()),
        (B, "*", ("requests_per_minute",)),  # the rules item's 4 wins over the legacy 1
    ]
    assert rule_items(ddb) == [("rule#" + A, "rules"), ("rule#" + B, "rules")]
    assert {c: store.rules(c) for c in (A, B)} == enforced  # nothing enforced changed
    assert ddb.get_item(TableName=TABLE, Key=FORMAT_KEY)["Item"]["version"] == {"N": "2"}
    again = admin(ddb).migrate()
    assert (again.rules, again.marked) == ((), True)
    assert {c: store.rules(c) for c in (A, B)} == enforced


def test_a_client_with_more_legacy_rules_than_one_transaction_holds(ddb: Any) -> None:
    for i in range(130):
        legacy(ddb, A, f"m{i}", rpm=i + 1)
    assert len(admin(ddb).migrate().rules) == 130
    assert rule_items(ddb) == [("rule#" + A, "rules")]
    rules = DynamoQuotaStore(ddb, table=TABLE).rules(A)
    assert (len(rules), rules["m129"]) == (130, QuotaLimits(130, None, None))


def test_a_quotas_set_between_the_migrations_read_and_write_wins(ddb: Any) -> None:
    """The fold's condition (the rules item still lacks the limit) fails, the migration
    re-plans from a fresh read: the value the admin just set is kept, the legacy item
    goes."""
    legacy(ddb, A, ALL_MODELS, rpm=5, rpd=100)
    other = aws_client("dynamodb")  # the concurrent admin, with its own client
    done: list[int] = []

    def concurrent_set(**_: Any) -> None:
        if not done:
            done.append(1)
            DynamoQuotaStore(other, table=TABLE)._rules.set_rule(
                A, ALL_MODELS, QuotaLimits(requests_per_minute=9), at=T0
            )

    ddb.meta.events.register("before-call.dynamodb.TransactWriteItems", concurrent_set)
    [rule] = admin(ddb).migrate().rules
    assert rule.superseded == ("requests_per_minute",)  # the re-plan saw the set
    assert DynamoQuotaStore(ddb, table=TABLE).rules(A) == {ALL_MODELS: QuotaLimits(9, 100, None)}
    assert rule_items(ddb) == [("rule#" + A, "rules")]


def test_two_migrations_at_once_move_each_rule_once(ddb: Any) -> None:
    """The second migration's deletes are conditional on the legacy items it read: the
    first one moved them, so it re-plans and finds nothing."""
    legacy(ddb, A, ALL_MODELS, rpm=5)
    legacy(ddb, A, "m", upd=9)
    other = aws_client("dynamodb")
    done: list[list[LegacyRule]] = []

    def concurrent_migration(**_: Any) -> None:
        if not done:
            done.append(DynamoQuotaStore(other, table=TABLE).migrate_client(A))

    ddb.meta.events.register("before-call.dynamodb.TransactWriteItems", concurrent_migration)
    mine = DynamoQuotaStore(ddb, table=TABLE).migrate_client(A)
    assert [r.model for r in done[0]] == ["*", "m"]
    assert mine == []  # re-planned: nothing left to move
    assert DynamoQuotaStore(ddb, table=TABLE).rules(A) == {
        ALL_MODELS: QuotaLimits(5, None, None),
        "m": QuotaLimits(None, None, 9),
    }
    assert rule_items(ddb) == [("rule#" + A, "rules")]


def test_a_failure_half_way_leaves_the_old_items_and_the_edge_still_enforces(
    ddb: Any,
) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=2)
    legacy(ddb, B, ALL_MODELS, rpm=3)
    fail(ddb, "TransactWriteItems", "ThrottlingException", after=1)  # B's transaction
    with pytest.raises(TemporarilyUnavailable, match="ThrottlingException"):
        admin(ddb).migrate()
    assert rule_items(ddb) == [("rule#" + A, "rules"), ("rule#" + B, ALL_MODELS)]
    assert "Item" not in ddb.get_item(TableName=TABLE, Key=FORMAT_KEY)
    g = gate(ddb)
    assert admitted(g, A, "", 3) == {"allowed": 2, "quota_exceeded:requests_per_minute": 1}
    assert admitted(g, B, "", 4) == {"allowed": 3, "quota_exceeded:requests_per_minute": 1}
    healthy = aws_client("dynamodb")  # the fault stays with ``ddb``: run it again
    assert [r.client_id for r in admin(healthy).migrate().rules] == [B]
    assert rule_items(healthy) == [("rule#" + A, "rules"), ("rule#" + B, "rules")]


def test_a_failed_marker_write_leaves_the_edge_reading_both_formats(ddb: Any) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=2)
    fail(ddb, "PutItem", "AccessDeniedException")
    with pytest.raises(TemporarilyUnavailable, match="AccessDeniedException"):
        admin(ddb).migrate()
    g, source, sent = _edge(ddb)
    source.fetch(A, "jkt")
    assert admitted(g, A, "", 3) == {"allowed": 2, "quota_exceeded:requests_per_minute": 1}
    assert sent["Query"] == 1


def test_quotas_set_on_a_client_with_legacy_rules_migrates_it_first(ddb: Any) -> None:
    legacy(ddb, A, ALL_MODELS, rpm=5)
    legacy(ddb, A, "m", upd=9)
    rule = admin(ddb).set(A, ALL_MODELS, QuotaLimits(requests_per_day=70))
    assert rule.limits == QuotaLimits(5, 70, None)
    assert rule_items(ddb) == [("rule#" + A, "rules")]
    assert [(r.model, r.limits) for r in admin(ddb).list(A)] == [
        (ALL_MODELS, QuotaLimits(5, 70, None)),
        ("m", QuotaLimits(None, None, 9)),
    ]
