"""``tokenbroker clients create|update --resource`` (RFC 8707) against moto, in process:
stored with the client, replaced by update, bad URIs are one-line exit-2 errors."""

from __future__ import annotations

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from edge.test_admin_allowance_cli import deployed, events, ok_json, run
from tokenbroker.local.provision import Deployment

__all__ = ["deployed"]
A = "https://api-a.example/v1"
B = "https://api-b.example/v1"


def stored_resources(deployed: Deployment, client_id: str) -> list[str]:
    item = boto3.client("dynamodb").get_item(
        TableName=deployed.refs["ClientsTable"], Key={"client_id": {"S": client_id}}
    )["Item"]
    return list(TypeDeserializer().deserialize(item.get("resources", {"L": []})))


def test_create_and_update_store_the_clients_resources(deployed: Deployment) -> None:
    created = ok_json("clients", "create", "--name", "a", "--scope", "read", "--resource", A)
    assert stored_resources(deployed, created["client_id"]) == [A]
    ok_json(
        "clients", "update", "--client-id", created["client_id"], "--resource", B, "--resource", A
    )
    assert stored_resources(deployed, created["client_id"]) == [A, B]
    assert events(deployed) == ["client_created", "client_scopes_changed"]


def test_a_client_created_without_resources_stores_none(deployed: Deployment) -> None:
    created = ok_json("clients", "create", "--name", "a", "--scope", "read")
    assert stored_resources(deployed, created["client_id"]) == []


@pytest.mark.parametrize(
    "args",
    [
        ["clients", "create", "--name", "a", "--scope", "read", "--resource", "https://a/#f"],
        ["clients", "create", "--name", "a", "--scope", "read", "--resource", "no-scheme"],
        ["clients", "update", "--client-id", "tbc_0123456789abcdef01234567"],
    ],
)
def test_bad_resources_are_one_line_usage_errors(deployed: Deployment, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or "Usage" in result.stderr
    assert events(deployed) == []
