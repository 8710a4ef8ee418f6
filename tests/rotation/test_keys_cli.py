"""``tokenbroker keys list|status|rotate`` in-process against moto (template provisioned)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws

from tokenbroker.cli.main import cli
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import load_template

STACK = "tb-keys-cli"
REGION = "us-east-1"


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Deployment]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "TOKENBROKER_")):
            monkeypatch.delenv(name)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "TOKENBROKER_STACK": STACK,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield provision(
            load_template(), session_or_clients=boto3.Session(), stack_name=STACK, region=REGION
        )


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="tokenbroker")


def test_status_before_any_rotation_shows_slot_a_current_and_nothing_due(
    deployed: Deployment,
) -> None:
    result = run("keys", "status", "-o", "json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    states = {row["key_id"]: row["state"] for row in body["keys"]}
    assert states == {
        deployed.attrs[("SigningKey", "Arn")]: "current",
        deployed.attrs[("SigningKeyB", "Arn")]: "retired",
    }
    assert body["next_step_at"] is None


def test_rotate_then_rotate_again_is_a_one_line_error_with_exit_code_2(
    deployed: Deployment,
) -> None:
    first = run("keys", "rotate", "-o", "json")
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert sorted(r["state"] for r in rows) == ["current", "next"]
    assert all(len(r["kid"]) == 43 for r in rows)  # RFC 7638 SHA-256 thumbprints

    again = run("keys", "rotate")
    assert again.exit_code == 2, again.output
    assert again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: a key rotation is already in progress (next step at 20")
    assert "Traceback" not in again.output

    table = run("keys", "list")
    assert table.exit_code == 0, table.output
    assert "next" in table.stdout
    assert "Next step at " in table.stderr
