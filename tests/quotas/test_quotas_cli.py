"""``tokenbroker quotas set|list`` against template.yaml's deployment in moto (the
fixtures and helpers of tests/test_cli.py)."""

from __future__ import annotations

import json
from typing import Any

from test_cli import (
    assert_one_line_error,
    aws_env,
    create_client,
    deployed,
    ok,
    ok_json,
    run,
)

__all__ = ["aws_env", "deployed"]


def test_set_merges_limits_and_list_shows_each_rule(deployed: Any) -> None:
    client_id = create_client()["client_id"]
    rule = ok_json("quotas", "set", "--client-id", client_id, "--requests-per-minute", "50")
    assert rule == {
        "client_id": client_id,
        "model": "*",
        "requests_per_minute": 50,
        "requests_per_day": None,
        "units_per_day": None,
    }
    ok("quotas", "set", "--client-id", client_id, "--requests-per-day", "1000")
    ok("quotas", "set", "--client-id", client_id, "--model", "llama3:8b", "--units-per-day", "9")
    rules = ok_json("quotas", "list", "--client-id", client_id)
    assert [
        (r["model"], r["requests_per_minute"], r["requests_per_day"], r["units_per_day"])
        for r in rules
    ] == [("*", 50, 1000, None), ("llama3:8b", None, None, 9)]
    table = ok("quotas", "list", "--client-id", client_id).stdout
    assert "llama3:8b" in table
    assert "requests_per_minute" in table


def test_bad_input_is_one_line_and_exit_2(deployed: Any) -> None:
    client_id = create_client()["client_id"]
    assert_one_line_error(run("quotas", "set", "--client-id", client_id), 2, "at least one")
    negative = run("quotas", "set", "--client-id", client_id, "--requests-per-minute", "-1")
    assert negative.exit_code == 2  # click's usage error (its usage lines, then Error:)
    assert "Traceback" not in negative.output
    assert "Error: Invalid value for '--requests-per-minute'" in negative.stderr
    assert_one_line_error(
        run("quotas", "set", "--client-id", client_id, "--model", "a b", "--units-per-day", "1"),
        2,
        "--model",
    )
    unknown = run("quotas", "list", "--client-id", "tbc_0123456789abcdef01234567")
    assert unknown.exit_code != 0
    assert "does not exist" in unknown.stderr


def _legacy_rule(deployed: Any, client_id: str, model: str, **limits: Any) -> None:
    """A rule item as the previous version's ``quotas set`` wrote it."""
    import boto3

    item = {"pk": {"S": "rule#" + client_id}, "sk": {"S": model}, "at": {"N": "1"}}
    item.update(limits)
    boto3.client("dynamodb").put_item(TableName=deployed.refs["QuotasTable"], Item=item)


def test_migrate_moves_the_previous_versions_rules_and_is_idempotent(deployed: Any) -> None:
    assert "--dry-run" in ok("quotas", "migrate", "--help").stdout
    client_id = create_client()["client_id"]
    _legacy_rule(deployed, client_id, "*", rpm={"N": "5"})
    assert ok_json("quotas", "list", "--client-id", client_id)[0]["requests_per_minute"] == 5
    dry = run("quotas", "migrate", "--dry-run", "--output", "json")
    assert dry.exit_code == 0, dry.output
    assert [(r["model"], r["result"]) for r in json.loads(dry.stdout)] == [("*", "would migrate")]
    assert "would migrate 1 legacy rule(s)" in dry.stderr
    done = json.loads(ok("quotas", "migrate", "--output", "json").stdout)
    assert [(r["client_id"], r["requests_per_minute"], r["result"]) for r in done] == [
        (client_id, 5, "migrated")
    ]
    again = ok("quotas", "migrate", "--output", "json")
    assert (json.loads(again.stdout), "marked migrated" in again.stderr) == ([], True)
    assert ok_json("quotas", "list", "--client-id", client_id)[0]["requests_per_minute"] == 5


def test_migrate_with_an_unreadable_legacy_rule_is_one_line_exit_2(deployed: Any) -> None:
    client_id = create_client()["client_id"]
    _legacy_rule(deployed, client_id, "m", rpm={"S": "lots"})
    assert_one_line_error(
        run("quotas", "migrate"), 2, client_id, "invalid limit", "nothing of that client"
    )
