"""``tokenbroker clients update`` and ``clients revoke-tokens`` against moto, in process:
the change, its ledger record (same transaction) and the one-line errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from click.testing import CliRunner, Result
from moto import mock_aws

from tokenbroker.cli.main import cli
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import load_template

STACK = "edge-cli"
REGION = "us-east-1"


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Deployment]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "TOKENBROKER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("TOKENBROKER_STACK", STACK)
    with mock_aws():
        yield provision(
            load_template(), session_or_clients=boto3.Session(), stack_name=STACK, region=REGION
        )


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="tokenbroker")


def ok_json(*args: str) -> Any:
    result = run(*args, "--output", "json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def events(deployed: Deployment) -> list[str]:
    items = boto3.client("dynamodb").scan(TableName=deployed.refs["UsageTable"])["Items"]
    return sorted(TypeDeserializer().deserialize(i["event"]) for i in items)


def test_clients_update_replaces_the_scopes_and_records_it(deployed: Deployment) -> None:
    created = ok_json("clients", "create", "--name", "app", "--scope", "model:a:invoke read")

    updated = ok_json(
        "clients", "update", "--client-id", created["client_id"], "--scope", "model:b:invoke"
    )

    assert updated["scopes"] == ["model:b:invoke"]
    shown = ok_json("clients", "show", "--client-id", created["client_id"])
    assert shown["scopes"] == ["model:b:invoke"]
    assert events(deployed) == ["client_created", "client_scopes_changed"]


def test_clients_revoke_tokens_sets_the_not_before_and_records_it(deployed: Deployment) -> None:
    created = ok_json("clients", "create", "--name", "app", "--scope", "read")

    revoked = ok_json("clients", "revoke-tokens", "--client-id", created["client_id"])

    assert revoked["tokens_not_before"] > created["created_at"]
    assert events(deployed) == ["client_created", "client_tokens_revoked"]


@pytest.mark.parametrize(
    ("args", "exit_code", "fragment"),
    [
        (["clients", "update", "--client-id", "tbc_nope", "--scope", "read"], 1, "not exist"),
        (["clients", "revoke-tokens", "--client-id", "tbc_nope"], 1, "not exist"),
        (["clients", "update", "--client-id", "tbc_x", "--scope", "caf\u00e9"], 2, "scope"),
        (["clients", "update", "--client-id", "tbc_x", "--scope", " "], 2, "scope"),
    ],
)
def test_bad_updates_are_one_line_errors_and_change_nothing(
    deployed: Deployment, args: list[str], exit_code: int, fragment: str
) -> None:
    result = run(*args)

    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert fragment in lines[0]
    assert events(deployed) == []
