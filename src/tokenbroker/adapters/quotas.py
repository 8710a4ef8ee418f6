"""DynamoDB adapter for quotas (QuotasTable in template.yaml): the only code that knows the
quota items' attribute names. The design and its bounds: :mod:`tokenbroker.domain.quotas`.

Items (``pk``, ``sk``):
- a client's rules (both formats, the previous version's too, and their migration):
  adapters/quota_rules.py, which alone knows their attributes;
- a counter: ``use#<json [client, principal, model key]>``, ``<UTC day>`` with
  ``m<minute of the day>`` (requests leased in that minute; the last two minutes),
  ``d`` (requests leased today), ``u`` (model units reported today), ``ttl`` (2 days on);
- a units report: ``report#<usage record id>``, ``units``: one per usage record, so a
  protected function that reports twice (a retry) counts once.
"""

from __future__ import annotations

import json
from typing import Any, Final

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.adapters.dynamodb import ledger_put
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.adapters.quota_rules import (
    DynamoQuotaRules,
    RulesRider,
    parse_rules,
    rules_key,
)
from tokenbroker.adapters.usage import DynamoUsageLedger, LeaseTransactions
from tokenbroker.domain.errors import InvalidRequest, ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.quotas import (
    CounterState,
    LeaseAsk,
    LegacyRule,
    QuotaContended,
    QuotaLimits,
)

PK: Final = "pk"
SK: Final = "sk"
RPM: Final = "rpm"
RPD: Final = "rpd"
UPD: Final = "upd"
#: ``m<minute of the day>``: requests leased in that minute
MINUTE_PREFIX: Final = "m"
MINUTES_PER_DAY: Final = 1440
DAY_COUNT: Final = "d"
UNITS: Final = "u"
EXPIRES_AT: Final = "ttl"
MODEL: Final = "model"
AT: Final = "at"
_LIMITS: Final = ((RPM, "requests_per_minute"), (RPD, "requests_per_day"), (UPD, "units_per_day"))


def counter_pk(client_id: str, principal: str, model_key: str) -> str:
    # JSON, not a separator: no client id or principal can forge another's counter
    return "use#" + json.dumps([client_id, principal, model_key], separators=(",", ":"))


def counter_key(counter_id: str, day: int) -> dict[str, Any]:
    return {PK: {"S": counter_id}, SK: {"S": str(day)}}


def lease_update(table: str, counter_id: str, day: int, a: LeaseAsk) -> dict[str, Any]:
    """The conditional update that leases ``a`` (UpdateItem's keyword arguments, or a
    transaction's ``Update``): ADD the size to the minute and the day, REMOVE the minute
    before last, on the condition that the leased sum stays within every limit
    (``domain.quotas.fits`` is the same condition in Python)."""
    base = day * MINUTES_PER_DAY
    names = {
        "#cur": _minute_name(a.minute - base),
        "#n1": _minute_name(a.minute + 1 - base),
        "#n2": _minute_name(a.minute + 2 - base),
        "#d": DAY_COUNT,
        "#x": EXPIRES_AT,
    }
    values: dict[str, Any] = {":n": {"N": str(a.size)}, ":x": {"N": str((day + 2) * 86_400)}}
    update = "ADD #cur :n, #d :n SET #x = :x"
    if a.minute - 2 >= base:
        # the minute before last is over for every clock the condition admits: drop
        # it, so the item holds two minutes and stays small (1 write unit)
        update += " REMOVE #old"
        names["#old"] = _minute_name(a.minute - 2 - base)
    # Refused if the item holds a later minute: that environment's clock is ahead,
    # and a lease at minute+2 removed ours; re-planned into the later minute.
    conditions = ["attribute_not_exists(#n1)", "attribute_not_exists(#n2)"]
    if a.max_minute_count is not None:
        conditions.append("(attribute_not_exists(#cur) OR #cur <= :mmax)")
        values[":mmax"] = {"N": str(a.max_minute_count)}
    if a.max_day_count is not None:
        conditions.append("(attribute_not_exists(#d) OR #d <= :dmax)")
        values[":dmax"] = {"N": str(a.max_day_count)}
    if a.max_units is not None:
        conditions.append("(attribute_not_exists(#u) OR #u <= :umax)")
        names["#u"] = UNITS
        values[":umax"] = {"N": str(a.max_units)}
    return {
        "TableName": table,
        "Key": counter_key(counter_id, day),
        "UpdateExpression": update,
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _n(item: dict[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name, {}).get("N")
    return int(value) if value is not None else default


def _minute_name(minute_of_day: int) -> str:
    return f"{MINUTE_PREFIX}{minute_of_day}"


def _state(item: dict[str, Any] | None, day: int) -> CounterState:
    item = item or {}
    minutes = {
        day * MINUTES_PER_DAY + int(name[1:]): int(value["N"])
        for name, value in item.items()
        if name.startswith(MINUTE_PREFIX) and name[1:].isdigit() and "N" in value
    }
    return CounterState(minutes=minutes, day_count=_n(item, DAY_COUNT), units=_n(item, UNITS))


class DynamoQuotaStore:
    def __init__(
        self,
        dynamodb: Any,
        *,
        table: str,
        usage_table: str = "",
        hot_window_days: int = HOT_WINDOW_DAYS,
    ) -> None:
        """``usage_table``: the ledger a units report's event goes to ("" = none), its
        item kept there for the deployment's hot window (``USAGE_HOT_WINDOW_DAYS``)."""
        self._ddb = dynamodb
        self._table = table
        self._usage = usage_table
        self._hot_window_days = hot_window_days
        self._rules = DynamoQuotaRules(dynamodb, table=table)
        #: the folded leases' transaction writer (adapters/usage.py), built on first use
        self._transactions: LeaseTransactions | None = None

    def writes_usage_like(self, ledger: DynamoUsageLedger) -> bool:
        """A folded lease's transaction puts the usage record in this store's usage
        table: True when that is the very item ``ledger`` would write (same table, same
        hot window), so folding bypasses nothing (bootstrap.py::Container._quota_fold)."""
        return bool(self._usage) and (ledger.usage_table, ledger.hot_window_days) == (
            self._usage,
            self._hot_window_days,
        )

    def counter_id(self, client_id: str, principal: str, model_key: str) -> str:
        return counter_pk(client_id, principal, model_key)

    # ---- rules (admin plane writes, the edge reads through a cache) ------------------
    def rules(self, client_id: str) -> dict[str, QuotaLimits]:
        """A direct read of both formats (the admin plane, and the edge until the table
        is migrated; after it the edge reads the rules item with the liveness)."""
        return self._rules.rules(client_id)

    def set_rule(self, client_id: str, model: str, limits: QuotaLimits, at: int) -> QuotaLimits:
        """Merge the given limits into the model's rule; returns the rule as stored."""
        return self._rules.set_rule(client_id, model, limits, at)

    def legacy_clients(self) -> list[str]:
        return self._rules.legacy_clients()

    def migrate_client(self, client_id: str, *, dry_run: bool = False) -> list[LegacyRule]:
        return self._rules.migrate_client(client_id, dry_run=dry_run)

    def mark_migrated(self, at: int) -> None:
        self._rules.mark_migrated(at)

    def migrated(self) -> bool:
        return self._rules.migrated()

    # ---- the edge: one conditional UpdateItem per lease ------------------------------
    def lease(self, counter_id: str, day: int, a: LeaseAsk) -> tuple[bool, CounterState]:
        """(granted, the counter after it) or (False, the counter as it was)."""
        with failing_closed("dynamodb:UpdateItem"):
            try:
                response = self._ddb.update_item(
                    **lease_update(self._table, counter_id, day, a),
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False, _state(exc.response.get("Item"), day)
                raise
        return True, _state(response.get("Attributes"), day)

    def lease_with_use(
        self, record: UsageRecord, counter_id: str, day: int, a: LeaseAsk, attempt: int
    ) -> tuple[bool, CounterState]:
        """The usage record and the lease in ONE TransactWriteItems (QuotaStore port):
        item 0 the usage Put (its condition: the record id is new, the replay guard), item
        1 the counter Update (the lease's condition, :func:`lease_update`), sent the lean
        way (adapters/put_item.py). ``ClientRequestToken`` derives from the record id and
        ``attempt``: a retry of the same attempt after a lost answer is idempotent
        within DynamoDB's 10 minutes; a re-planned attempt (another ask) gets its own.
        DynamoDB authorizes each item's action (PutItem on the usage table, UpdateItem on
        the quota counter ``use#``), so the template's existing grants cover it."""
        if not self._usage:
            raise TemporarilyUnavailable("no usage table is configured for folded leases")
        if self._transactions is None:
            self._transactions = LeaseTransactions(
                self._ddb, usage_table=self._usage, hot_window_days=self._hot_window_days
            )
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._transactions.send(
                    record, lease_update(self._table, counter_id, day, a), attempt
                )
            except ClientError as exc:
                if error_code(exc) == "IdempotentParameterMismatchException":
                    # the token derives from the record id: another request carried this
                    # record id (the proof's replay key) within DynamoDB's 10 minutes with
                    # other parameters: a replay (nothing written by this one)
                    raise ProofReplayed("the DPoP proof has already been used") from exc
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                use, counter = [*reasons, {}, {}][:2]
                if use.get("Code") == "ConditionalCheckFailed":
                    # our own earlier attempt (its answer lost) left the very item we
                    # send, and took the lease with it (one transaction); anything else
                    # is another request's record: a replay, nothing written
                    if self._transactions.own_item(record, use.get("Item")):
                        return True, CounterState()
                    raise ProofReplayed("the DPoP proof has already been used") from exc
                codes = {r.get("Code") for r in reasons}
                if counter.get("Code") == "ConditionalCheckFailed" and codes <= {
                    "ConditionalCheckFailed",
                    "None",
                    None,
                }:
                    return False, _state(counter.get("Item"), day)
                if "TransactionConflict" in codes:
                    raise QuotaContended() from exc
                raise
        return True, CounterState()

    # ---- the protected function: units after the call --------------------------------
    def report_units(
        self,
        *,
        usage_id: str,
        counter_id: str,
        day: int,
        model: str,
        units: int,
        at: int,
        event: UsageRecord | None = None,
    ) -> bool:
        """Count ``units`` toward the counter's day, once per usage record (atomically:
        the report item, the counter and the ledger ``event`` move together, each put
        conditional on its id being new). False if already reported."""
        if not usage_id or not counter_id.startswith("use#"):
            raise InvalidRequest("the grant carries no usage record or quota counter")
        ledger = []
        if event is not None:
            if not self._usage:
                raise TemporarilyUnavailable("no usage table is configured for units events")
            ledger.append(ledger_put(self._usage, event, self._hot_window_days))
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(
                    TransactItems=[
                        *ledger,
                        {
                            "Put": {
                                "TableName": self._table,
                                "Item": {
                                    PK: {"S": "report#" + usage_id},
                                    SK: {"S": "units"},
                                    UNITS: {"N": str(units)},
                                    MODEL: {"S": model or "-"},
                                    "counter": {"S": counter_id},
                                    AT: {"N": str(at)},
                                    EXPIRES_AT: {"N": str((day + 2) * 86_400)},
                                },
                                "ConditionExpression": "attribute_not_exists(#pk)",
                                "ExpressionAttributeNames": {"#pk": PK},
                            }
                        },
                        {
                            "Update": {
                                "TableName": self._table,
                                "Key": counter_key(counter_id, day),
                                # the units only: the lease that granted the request
                                # made the item and set its expiry (the model function
                                # may not write ttl: SET ttl = 1 would have TTL delete
                                # the item, request counts and all; template.yaml)
                                "UpdateExpression": "ADD #u :u",
                                "ExpressionAttributeNames": {"#u": UNITS},
                                "ExpressionAttributeValues": {":u": {"N": str(units)}},
                            }
                        },
                    ]
                )
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons") or []
                if error_code(exc) == "TransactionCanceledException" and any(
                    r.get("Code") == "ConditionalCheckFailed" for r in reasons
                ):
                    return False
                raise
        return True

    def record_units(self, event: UsageRecord) -> bool:
        """A grant no quota applies to: its units report is the ledger event alone (no
        counter to count against), a conditional put (False if reported before)."""
        if not self._usage:
            raise TemporarilyUnavailable("no usage table is configured for units events")
        put = ledger_put(self._usage, event, self._hot_window_days)["Put"]
        with failing_closed("dynamodb:PutItem"):
            try:
                self._ddb.put_item(**put)
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def counter(self, counter_id: str, day: int) -> CounterState:
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._table, Key=counter_key(counter_id, day), ConsistentRead=True
            ).get("Item")
        return _state(item, day)


__all__ = ["DynamoQuotaStore", "RulesRider", "counter_pk", "parse_rules", "rules_key"]
