"""The protected function's write to the usage ledger (its units events) is confined
by IAM to units events: the function that serves model calls must not be able to put
any other ledger record (a forged "allow"/admin event the digests would then seal, or
an edge usage record id taken first so the real request is refused as a replay); its
quota writes are confined to the units report and counter items (not the rules)."""

from __future__ import annotations

import re
from typing import Any

from tokenbroker.domain.rfc9449 import replay_key
from tokenbroker.local.template import load_template
from tokenbroker.services.quotas import UNITS_EVENT_PREFIX


def _string_like(pattern: str, value: str) -> bool:
    """IAM StringLike: ``*`` any run, ``?`` one character, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _usage_puts() -> list[dict[str, Any]]:
    function = load_template().resources("AWS::Serverless::Function")["ModelInvokeFunction"]
    statements = function["Policies"][0]["Statement"]
    return [s for s in statements if s["Resource"] == {"Fn::GetAtt": ["UsageTable", "Arn"]}]


def test_the_protected_function_may_put_only_units_events_in_the_ledger() -> None:
    [put] = _usage_puts()
    assert put["Action"] == "dynamodb:PutItem"
    # a PutItem (also inside TransactWriteItems) has exactly one leading key: the id
    [(operator, condition)] = put.get("Condition", {}).items()
    assert operator == "ForAllValues:StringLike"
    patterns = condition["dynamodb:LeadingKeys"]
    patterns = patterns if isinstance(patterns, list) else [patterns]

    def allowed(key: str) -> bool:
        return any(_string_like(p, key) for p in patterns)

    assert allowed(UNITS_EVENT_PREFIX + replay_key("jkt-1", "jti-1"))
    assert allowed(UNITS_EVENT_PREFIX + "iss:abc")
    others = [
        replay_key("jkt-1", "jti-1"),  # the edge's usage record (the replay guard)
        "iss:abc",
        "adm:client.create:1",
        "rvk:jti",
        "tden:reason:who",
        "xunits:1",
        "UNITS:1",
        "units",
        "",
    ]
    assert [k for k in others if allowed(k)] == []


def _model_quota_grant(action: str, key: str, attributes: set[str]) -> bool:
    """Whether ModelInvokeFunction's statements on QuotasTable allow ``action`` of an
    item with partition key ``key`` touching ``attributes`` (IAM: any Allow statement
    whose action matches and whose every condition holds; ForAllValues over the
    request's leading keys and attribute names)."""
    function = load_template().resources("AWS::Serverless::Function")["ModelInvokeFunction"]
    for statement in function["Policies"][0]["Statement"]:
        if statement["Resource"] != {"Fn::GetAtt": ["QuotasTable", "Arn"]}:
            continue
        actions = statement["Action"]
        if action not in (actions if isinstance(actions, list) else [actions]):
            continue
        condition = statement["Condition"]
        assert set(condition) <= {
            "ForAllValues:StringLike",
            "ForAllValues:StringEquals",
            "StringEqualsIfExists",
        }
        patterns = condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        listed = condition.get("ForAllValues:StringEquals", {}).get("dynamodb:Attributes")
        if any(_string_like(p, key) for p in patterns) and (
            listed is None or attributes <= set(listed)
        ):
            return True
    return False


def test_the_protected_function_cannot_rewrite_a_clients_quota_rules() -> None:
    """Its quota writes are the units report and the counter; the rules item
    (``rule#<client>``) in the same table must stay out of reach, or the function could
    set any client's limits to 0 (= unlimited) with one UpdateItem."""
    from tokenbroker.adapters.quotas import counter_pk, rules_key
    from tokenbroker.domain.quotas import shard_counter_id

    counter = counter_pk("tbc_c", "alice", "*")
    units = {"pk", "sk", "u"}
    assert _model_quota_grant("dynamodb:UpdateItem", counter, units)
    assert _model_quota_grant("dynamodb:UpdateItem", shard_counter_id(counter, 3, 8), units)
    report = {"pk", "sk", "u", "ttl", "model", "counter", "at"}
    assert _model_quota_grant("dynamodb:PutItem", "report#" + replay_key("jkt-1", "jti-1"), report)
    rules = rules_key("tbc_c")["pk"]["S"]
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        for key in (rules, "rule#tbc_c", "RULE#x", "xuse#1", ""):
            assert not _model_quota_grant(action, key, {"pk", "sk"}), (action, key)


def _edges() -> dict[str, list[dict[str, Any]]]:
    functions = load_template().resources("AWS::Serverless::Function")
    return {
        name: props["Policies"][0]["Statement"]
        for name, props in functions.items()
        if "Policies" in props
        and any(s.get("Sid") == "LeaseQuota" for s in props["Policies"][0]["Statement"])
    }


def test_the_edges_may_write_only_quota_counters() -> None:
    """The authorizers lease from the counters; their UpdateItem (which creates items)
    must not reach a client's rules (set to 0 = unlimited) or a units report
    (``report#<usage id>`` taken first: the real report is refused as a retry and its
    units never counted)."""
    from tokenbroker.adapters.quotas import counter_pk, rules_key
    from tokenbroker.domain.quotas import shard_counter_id

    edges = _edges()
    assert sorted(edges) == ["AuthorizerFunction", "HttpApiAuthorizerFunction"]
    counter = counter_pk("tbc_c", "alice", "*")
    for name, statements in edges.items():
        writes = [
            s
            for s in statements
            if s["Resource"] == {"Fn::GetAtt": ["QuotasTable", "Arn"]}
            and set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
            - {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
        ]
        [write] = writes
        [(operator, condition)] = write.get("Condition", {}).items()
        assert operator == "ForAllValues:StringLike", name
        patterns = condition["dynamodb:LeadingKeys"]

        def allowed(key: str, patterns: list[str] = patterns) -> bool:
            return any(_string_like(p, key) for p in patterns)

        assert allowed(counter), name
        assert allowed(shard_counter_id(counter, 3, 8)), name
        refused = [rules_key("tbc_c")["pk"]["S"], "report#abc", "xuse#1", "USE#1", ""]
        assert [k for k in refused if allowed(k)] == [], name


def test_the_edges_rules_query_reaches_rule_items_only() -> None:
    """The authorizers read a client's rules with a Query of its ``rule#`` partition
    (both formats, until ``quotas migrate`` marked the table: adapters/quota_rules.py);
    it must not read counters or units reports."""
    from tokenbroker.adapters.quota_rules import rules_key

    for name, statements in _edges().items():
        [query] = [s for s in statements if s["Action"] == "dynamodb:Query"]
        assert query["Resource"] == {"Fn::GetAtt": ["QuotasTable", "Arn"]}, name
        [(operator, condition)] = query["Condition"].items()
        assert operator == "ForAllValues:StringLike", name
        patterns = condition["dynamodb:LeadingKeys"]
        assert [_string_like(p, rules_key("tbc_c")["pk"]["S"]) for p in patterns] == [True]
        refused = ["use#x", "report#abc", "meta#quota-rules", "RULE#x", ""]
        assert [k for k in refused if any(_string_like(p, k) for p in patterns)] == [], name


def test_the_edges_folded_lease_needs_no_grant_beyond_its_items_actions() -> None:
    """The folded lease is ONE TransactWriteItems [Put usage record, Update counter].
    DynamoDB authorizes each item by its underlying action (AWS: "Permissions for Put,
    Update, Delete, and Get actions are governed by the permissions used for the
    underlying PutItem, UpdateItem, DeleteItem, and GetItem operations"), so the edges'
    existing grants must cover both items: PutItem of the edge's record id on the usage
    table, UpdateItem of a counter key (``use#``, condition LeadingKeys) on the quotas
    table; the rules item stays out of reach inside a transaction too."""
    from tokenbroker.adapters.quotas import counter_pk, rules_key

    record_id = replay_key("jkt-1", "jti-1")
    for name, statements in _edges().items():

        def granted(action: str, table: str, key: str, statements: Any = statements) -> bool:
            for s in statements:
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                if s.get("Effect", "Allow") != "Allow" or action not in actions:
                    continue
                if s["Resource"] != {"Fn::GetAtt": [table, "Arn"]}:
                    continue
                leading = s.get("Condition", {}).get("ForAllValues:StringLike", {})
                patterns = leading.get("dynamodb:LeadingKeys")
                if patterns is None:
                    return True
                patterns = patterns if isinstance(patterns, list) else [patterns]
                if any(_string_like(p, key) for p in patterns):
                    return True
            return False

        assert granted("dynamodb:PutItem", "UsageTable", record_id), name
        assert granted("dynamodb:UpdateItem", "QuotasTable", counter_pk("c", "p", "*")), name
        assert not granted("dynamodb:UpdateItem", "QuotasTable", rules_key("c")["pk"]["S"])


def _attributes(request: dict[str, Any]) -> set[str]:
    """The top-level attribute names a write accesses (IAM's ``dynamodb:Attributes``):
    its key's, its item's and every name its expressions use (all through ``#names``
    here: the store writes no bare attribute name into an expression)."""
    names = set(request.get("Key", {})) | set(request.get("Item", {}))
    names |= set(request.get("ExpressionAttributeNames", {}).values())
    for expression in ("UpdateExpression", "ConditionExpression"):
        text = request.get(expression, "")
        bare = re.sub(r"#\w+|:\w+", " ", text)
        words = set(re.findall(r"[A-Za-z_]\w*", bare))
        keywords = {"ADD", "SET", "REMOVE", "DELETE", "AND", "OR", "NOT"}
        assert words - keywords <= {"attribute_not_exists", "attribute_exists"}, text
    return names


def test_the_protected_function_reports_units_but_cannot_reset_request_counters() -> None:
    """Counter items (use#...) also hold the request counts the authorizers lease from.
    The units report, every item of its transaction as the store sends it, is granted;
    a put of a counter item (a put replaces the whole item: the counts would be gone),
    the authorizers' own lease update and two resets of the counts are not."""
    from tokenbroker.adapters.quotas import DynamoQuotaStore, counter_pk, lease_update
    from tokenbroker.domain.quotas import LeaseAsk

    sent: list[dict[str, Any]] = []

    class Recording:
        def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
            sent.extend(kwargs["TransactItems"])
            return {}

    store = DynamoQuotaStore(Recording(), table="quotas", usage_table="")
    counter = counter_pk("tbc_c", "alice", "*")
    assert store.report_units(
        usage_id="rec-1", counter_id=counter, day=20_000, model="m", units=7, at=1
    )
    writes = [(op, body) for item in sent for op, body in item.items()]
    assert sorted(op for op, _ in writes) == ["Put", "Update"]
    action = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem"}
    for op, body in writes:
        assert body["TableName"] == "quotas"
        key = (body.get("Key") or body["Item"])["pk"]["S"]
        assert _model_quota_grant(action[op], key, _attributes(body)), (op, _attributes(body))

    minute = 20_000 * 1440 + 5
    ask = LeaseAsk(minute=minute, size=1, max_minute_count=9, max_day_count=99, max_units=None)
    lease = lease_update("quotas", counter, 20_000, ask)
    resets = [
        lease,  # an authorizer's lease: the model function must not spend or shift it
        {
            "Key": lease["Key"],
            "UpdateExpression": "SET #d = :z",
            "ExpressionAttributeNames": {"#d": "d"},
        },
        {
            "Key": lease["Key"],
            "UpdateExpression": "REMOVE #m",
            "ExpressionAttributeNames": {"#m": "m5"},
        },
        {  # an expiry in the past: DynamoDB's TTL deletes the item, counts and all
            "Key": lease["Key"],
            "UpdateExpression": "SET #x = :x",
            "ExpressionAttributeNames": {"#x": "ttl"},
        },
    ]
    for attack in resets:
        assert not _model_quota_grant("dynamodb:UpdateItem", counter, _attributes(attack))
    # a put of the counter item with the units attributes only: it would replace the
    # item and drop its request counts
    wipe = {"Item": {"pk": {"S": counter}, "sk": {"S": "20000"}, "u": {"N": "0"}}}
    assert not _model_quota_grant("dynamodb:PutItem", counter, _attributes(wipe))
    # the report item cannot be rewritten after the fact either (it is put once)
    assert not _model_quota_grant("dynamodb:UpdateItem", "report#rec-1", {"pk", "sk", "u"})
