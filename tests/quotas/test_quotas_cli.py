"""``tokenbroker quotas set|list`` against template.yaml's deployment in moto (the
fixtures and helpers of tests/test_cli.py)."""

from __future__ import annotations

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
