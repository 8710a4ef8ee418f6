"""Quota rules in QuotasTable: the current item, the previous version's items, the
migration from one to the other and what the edge reads. The only code that knows the
rules items' attribute names (adapters/quotas.py re-exports what the edge wires).

Items (``pk``, ``sk``):
- the current format: ``rule#<client_id>``, ``rules``, ONE item per client holding every
  model's limits as ``rpm:<model or *>``, ``rpd:<model>``, ``upd:<model>``: one key, so
  the edge reads it inside the liveness BatchGetItem it makes anyway (:class:`RulesRider`);
- the previous version's format (before the rules rode in the liveness read): one item
  per model, ``rule#<client_id>``, ``<model or *>`` with bare ``rpm``, ``rpd``, ``upd``
  (a model named ``rules`` had its bare limits on the current item's key);
- the format marker: ``meta#quota-rules``, ``format`` with ``version`` 2, written by
  ``tokenbroker quotas migrate`` once a scan of the table found no item of the previous
  format left (and by the local stack on its freshly created table).

Why a marker and not a read of the legacy items at the edge. BatchGetItem needs exact
keys; the legacy item of the route's model is keyed by the model, but the liveness read
the rules ride in is made (and cached) per (client, device), before and whatever the
model. So until the marker says the table holds no legacy item, the edge does not trust
the rules item alone: it reads the client's whole ``rule#`` partition with a Query of
its own (one per client per liveness bound per execution environment) and merges. After
the migration it costs nothing: the marker rides in the same BatchGetItem.

Precedence when both formats hold a limit: the current item's (it was written by this
version, i.e. after the upgrade); the legacy items only fill what it leaves unset. The
reader and the migration use the same rule, so migrating never changes what is enforced.

Fail closed: a limit that is not a non-negative integer, a legacy item with an attribute
the previous version never wrote, or a marker of a format this version does not know is
TemporarilyUnavailable (a Deny at the edge), never "no rule".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.quotas import LegacyRule, QuotaLimits

PK: Final = "pk"
SK: Final = "sk"
RPM: Final = "rpm"
RPD: Final = "rpd"
UPD: Final = "upd"
AT: Final = "at"
LIMIT_NAMES: Final = (RPM, RPD, UPD)  # in QuotaLimits order
_FIELDS: Final = ("requests_per_minute", "requests_per_day", "units_per_day")
RULES_SK: Final = "rules"
RULE_PREFIX: Final = "rule#"
#: ``<limit>:<model>`` (a model may hold ":", the limit names do not)
RULE_SEPARATOR: Final = ":"
FORMAT_KEY: Final = {PK: {"S": "meta#quota-rules"}, SK: {"S": "format"}}
VERSION: Final = "version"
FORMAT_VERSION: Final = 2
#: the attributes the previous version wrote on a per-model rule item
_LEGACY_ATTRIBUTES: Final = frozenset({PK, SK, AT, *LIMIT_NAMES})
#: a transaction holds at most 100 actions: the rules item's update + 99 deletes
_LEGACY_PER_TRANSACTION: Final = 99
REASON_INVALID: Final = "quota_rules_invalid"


def rules_key(client_id: str) -> dict[str, Any]:
    return {PK: {"S": RULE_PREFIX + client_id}, SK: {"S": RULES_SK}}


def _number(value: object, what: str) -> int:
    number = value.get("N") if isinstance(value, Mapping) else None
    if not isinstance(number, str) or not number.isdigit():
        raise TemporarilyUnavailable(f"{what} holds an invalid limit", reason=REASON_INVALID)
    return int(number)


def _limits(found: Mapping[str, int]) -> QuotaLimits:
    return QuotaLimits(*(found.get(name) for name in LIMIT_NAMES))


def _current(item: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    """The current item's limits: model -> {limit name: value}."""
    found: dict[str, dict[str, int]] = {}
    for name, value in (item or {}).items():
        attr, sep, model = name.partition(RULE_SEPARATOR)
        if not sep or attr not in LIMIT_NAMES or not model:
            continue
        found.setdefault(model, {})[attr] = _number(value, "a quota rule")
    return found


def _legacy(item: Mapping[str, Any], client_id: str, model: str) -> dict[str, int]:
    """One rule item of the previous format: {limit name: value}."""
    what = f"the quota rule the previous version stored for client {client_id} model {model!r}"
    if model != RULES_SK:  # the current item may share the key (a model named "rules")
        unknown = sorted(set(item) - _LEGACY_ATTRIBUTES)
        if unknown:
            raise TemporarilyUnavailable(
                f"{what} holds attributes it never wrote ({', '.join(unknown)})",
                reason=REASON_INVALID,
            )
    return {name: _number(item[name], what) for name in LIMIT_NAMES if name in item}


def parse_rules(item: Mapping[str, Any] | None) -> dict[str, QuotaLimits]:
    """The current rules item alone (None = the client has none) as model -> limits."""
    return _merged([item] if item is not None else [], "")


def _client_of(item: Mapping[str, Any]) -> str:
    return str(item[PK]["S"]).removeprefix(RULE_PREFIX)


def _merged(items: Sequence[Mapping[str, Any]], client_id: str) -> dict[str, QuotaLimits]:
    """Every rules item of a client's partition, both formats, as model -> limits: the
    current item's limits win, the legacy items fill what it leaves unset."""
    current: dict[str, dict[str, int]] = {}
    legacy: dict[str, dict[str, int]] = {}
    for item in items:
        sk = str(item.get(SK, {}).get("S", RULES_SK))
        if sk == RULES_SK:
            current = _current(item)
            bare = _legacy(item, client_id, RULES_SK)
            if bare:
                legacy[RULES_SK] = bare
        else:
            legacy[sk] = _legacy(item, client_id, sk)
    models = sorted(set(current) | set(legacy))
    return {m: _limits({**legacy.get(m, {}), **current.get(m, {})}) for m in models}


@dataclass
class _Plan:
    client_id: str
    legacy: list[tuple[Mapping[str, Any], LegacyRule]] = field(default_factory=list)
    current_names: frozenset[str] = frozenset()


class DynamoQuotaRules:
    """The admin plane's rules: read both formats, write the current one, migrate."""

    def __init__(self, dynamodb: Any, *, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    # ---- reads ------------------------------------------------------------------------
    def _partition(self, client_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": PK},
            "ExpressionAttributeValues": {":pk": {"S": RULE_PREFIX + client_id}},
            "ConsistentRead": True,
        }
        with failing_closed("dynamodb:Query"):
            while True:
                page = self._ddb.query(**kwargs)
                items += page.get("Items", [])
                if not page.get("LastEvaluatedKey"):
                    return items
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def rules(self, client_id: str) -> dict[str, QuotaLimits]:
        """Both formats merged (one consistent Query of the client's partition)."""
        return _merged(self._partition(client_id), client_id)

    def set_rule(self, client_id: str, model: str, limits: QuotaLimits, at: int) -> QuotaLimits:
        """Merge the given limits into the model's rule in the current item; returns the
        rule as stored. Callers migrate the client first (services/quotas.py)."""
        sets, values = ["#at = :at"], {":at": {"N": str(at)}}
        names = {"#at": AT}
        for i, (attr, value) in enumerate(zip(LIMIT_NAMES, limits.astuple(), strict=True)):
            if value is not None:
                sets.append(f"#l{i} = :l{i}")
                names[f"#l{i}"] = attr + RULE_SEPARATOR + model
                values[f":l{i}"] = {"N": str(value)}
        with failing_closed("dynamodb:UpdateItem"):
            item = self._ddb.update_item(
                TableName=self._table,
                Key=rules_key(client_id),
                UpdateExpression="SET " + ", ".join(sets),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return _limits(_current(item).get(model, {}))

    # ---- migration --------------------------------------------------------------------
    def legacy_clients(self) -> list[str]:
        """Clients with a rule item of the previous format (a Scan of the table: rule
        items only come back, counters are filtered out server-side)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "#pk",
            "FilterExpression": "begins_with(#pk, :rule) AND (#sk <> :rules"
            " OR attribute_exists(#rpm) OR attribute_exists(#rpd) OR attribute_exists(#upd))",
            "ExpressionAttributeNames": {
                "#pk": PK,
                "#sk": SK,
                "#rpm": RPM,
                "#rpd": RPD,
                "#upd": UPD,
            },
            "ExpressionAttributeValues": {":rule": {"S": RULE_PREFIX}, ":rules": {"S": RULES_SK}},
            "ConsistentRead": True,
        }
        found: set[str] = set()
        with failing_closed("dynamodb:Scan"):
            while True:
                page = self._ddb.scan(**kwargs)
                found.update(_client_of(item) for item in page.get("Items", []))
                if not page.get("LastEvaluatedKey"):
                    return sorted(found)
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _plan(self, client_id: str) -> _Plan:
        items = self._partition(client_id)
        _merged(items, client_id)  # an item that cannot be parsed stops here: nothing moves
        plan = _Plan(client_id)
        current: dict[str, dict[str, int]] = {}
        for item in items:
            sk = item[SK]["S"]
            if sk == RULES_SK:
                current = _current(item)
                plan.current_names = frozenset(n for n in item if RULE_SEPARATOR in n)
        for item in items:
            sk = item[SK]["S"]
            found = _legacy(item, client_id, sk)
            if sk == RULES_SK and not found:
                continue  # the current item without bare limits: nothing of the old format
            superseded = tuple(
                field
                for n, field in zip(LIMIT_NAMES, _FIELDS, strict=True)
                if n in found and n in current.get(sk, {})
            )
            plan.legacy.append((item, LegacyRule(client_id, sk, _limits(found), superseded)))
        return plan

    def migrate_client(self, client_id: str, *, dry_run: bool = False) -> list[LegacyRule]:
        """Fold the client's legacy items into its current item and delete them, in
        transactions whose conditions make it safe to run twice or concurrently (with
        itself and with ``quotas set``): each folded limit is written only if the current
        item still lacks it (else it won since the read: re-planned), each legacy item is
        deleted only if it still holds what was read (else re-planned). A chunk's fold and
        deletes commit together, so a failure leaves that chunk's legacy items in place
        and the reader enforces them as before. Returns the legacy rules found."""
        for _ in range(5):
            plan = self._plan(client_id)
            if dry_run or not plan.legacy:
                return [rule for _, rule in plan.legacy]
            if all(
                self._apply(plan, plan.legacy[i : i + _LEGACY_PER_TRANSACTION])
                for i in range(0, len(plan.legacy), _LEGACY_PER_TRANSACTION)
            ):
                return [rule for _, rule in plan.legacy]
        raise TemporarilyUnavailable(
            f"the quota rules of client {client_id} kept changing during the migration"
        )

    def _apply(self, plan: _Plan, chunk: Sequence[tuple[Mapping[str, Any], LegacyRule]]) -> bool:
        sets: list[str] = []
        removes: list[str] = []
        conditions: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        deletes: list[dict[str, Any]] = []
        for i, (item, rule) in enumerate(chunk):
            for j, (attr, value) in enumerate(zip(LIMIT_NAMES, rule.limits.astuple(), strict=True)):
                if value is None:
                    continue
                name = attr + RULE_SEPARATOR + rule.model
                if name in plan.current_names:
                    continue  # the current item's limit wins (module docstring)
                names[f"#f{i}_{j}"] = name
                values[f":f{i}_{j}"] = {"N": str(value)}
                sets.append(f"#f{i}_{j} = :f{i}_{j}")
                # if a `quotas set` wrote it since the read, it wins: re-plan
                conditions.append(f"attribute_not_exists(#f{i}_{j})")
            if rule.model == RULES_SK:  # the bare limits on the current item's own key
                for j, attr in enumerate(LIMIT_NAMES):
                    if attr in item:
                        names[f"#b{j}"] = attr
                        values[f":b{j}"] = item[attr]
                        removes.append(f"#b{j}")
                        conditions.append(f"#b{j} = :b{j}")
                continue
            deletes.append({"Delete": self._unchanged(item)})
        actions = list(deletes)
        if sets or removes:
            update = (("SET " + ", ".join(sets)) if sets else "") + (
                (" REMOVE " + ", ".join(removes)) if removes else ""
            )
            update_action: dict[str, Any] = {
                "TableName": self._table,
                "Key": rules_key(plan.client_id),
                "UpdateExpression": update.strip(),
                "ExpressionAttributeNames": names,
            }
            if values:
                update_action["ExpressionAttributeValues"] = values
            if conditions:
                update_action["ConditionExpression"] = " AND ".join(conditions)
            actions.insert(0, {"Update": update_action})
        if not actions:
            return True
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=actions)
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons") or []
                if error_code(exc) == "TransactionCanceledException" and any(
                    r.get("Code") in ("ConditionalCheckFailed", "TransactionConflict")
                    for r in reasons
                ):
                    return False  # someone moved first: re-plan from a fresh read
                raise
        return True

    def _unchanged(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A Delete of a legacy item on condition it still holds exactly what was read."""
        names = {"#pk": PK}
        values: dict[str, Any] = {}
        conditions = ["attribute_exists(#pk)"]
        for j, attr in enumerate((*LIMIT_NAMES, AT)):
            names[f"#a{j}"] = attr
            if attr in item:
                values[f":a{j}"] = item[attr]
                conditions.append(f"#a{j} = :a{j}")
            else:
                conditions.append(f"attribute_not_exists(#a{j})")
        delete: dict[str, Any] = {
            "TableName": self._table,
            "Key": {PK: item[PK], SK: item[SK]},
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names,
        }
        if values:
            delete["ExpressionAttributeValues"] = values
        return delete

    def mark_migrated(self, at: int) -> None:
        """The format marker: from now on the edge trusts the rules item alone."""
        with failing_closed("dynamodb:PutItem"):
            self._ddb.put_item(
                TableName=self._table,
                Item={
                    **FORMAT_KEY,
                    VERSION: {"N": str(FORMAT_VERSION)},
                    AT: {"N": str(at)},
                },
            )

    def migrated(self) -> bool:
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._table, Key=FORMAT_KEY, ConsistentRead=True
            ).get("Item")
        return _format_current(item)


def _format_current(item: Mapping[str, Any] | None) -> bool:
    """True when the marker says no legacy item is left; False when there is none."""
    if item is None:
        return False
    version = item.get(VERSION, {}).get("N") if isinstance(item.get(VERSION), Mapping) else None
    if version != str(FORMAT_VERSION):
        raise TemporarilyUnavailable(
            f"the quota rules format {version!r} is not one this version reads",
            reason=REASON_INVALID,
        )
    return True


def _same_key(item: Mapping[str, Any], key: Mapping[str, Any]) -> bool:
    return bool(item.get(PK) == key[PK] and item.get(SK) == key[SK])


class RulesRider:
    """The client's rules item and the format marker, read inside the edge's liveness
    BatchGetItem (adapters/usage.py::DynamoLiveness ``riders``): no round trip of their
    own, read as often as the liveness (at most once per (client, device) per
    ``liveness.MAX_AGE``). With the marker, ``deliver(client_id, rules)`` hands the
    rules item's rules to the quota gate (an absent item is "no rules": the template
    defaults apply). Without it (the previous version's items may be left, module
    docstring) nothing is delivered, so the gate reads the client's rules with a Query
    of both formats itself. A throttled or unprocessed read fails the whole
    BatchGetItem closed, exactly as the liveness read does."""

    def __init__(
        self, *, table: str, deliver: Callable[[str, dict[str, QuotaLimits]], None]
    ) -> None:
        self.table = table
        self._deliver = deliver

    def keys(self, client_id: str, jkt: str) -> list[dict[str, Any]]:
        return [rules_key(client_id), dict(FORMAT_KEY)]

    def found(self, client_id: str, jkt: str, items: Sequence[Mapping[str, Any]]) -> None:
        marker = next((i for i in items if _same_key(i, FORMAT_KEY)), None)
        rules = next((i for i in items if _same_key(i, rules_key(client_id))), None)
        parsed = _merged([rules] if rules is not None else [], client_id)  # fails closed
        if _format_current(marker):
            self._deliver(client_id, parsed)
