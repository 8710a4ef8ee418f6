"""``tokenbroker alerts list|ack`` and ``clients set-containment`` against moto."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws

from tokenbroker.adapters.alerts import DynamoSharingStore
from tokenbroker.cli.main import cli
from tokenbroker.domain.models import EventType, UsageRecord
from tokenbroker.domain.sharing import Alert, alert_day
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import load_template

STACK = "test"
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
    monkeypatch.setenv("TOKENBROKER_STACK", STACK)
    with mock_aws():
        yield provision(
            load_template(), session_or_clients=boto3.Session(), stack_name=STACK, region=REGION
        )


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="tokenbroker")


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def now_ms() -> int:
    return int(time.time() * 1000)


def put_alert(deployment: Deployment, at_ms: int, n: int = 0) -> Alert:
    alert = Alert(
        alert_id=f"{alert_day(at_ms)}-{n:020x}",
        rule="device_networks",
        principal="tbc_x",
        client_id="tbc_x",
        jkt="j" * 43,
        summary="20 networks in 60s (limit 5)",
        evidence=("203.0.0.0/24",),
        at_ms=at_ms,
        window_start_ms=at_ms,
        containment="revoke",
    )
    record = UsageRecord.build(
        at=at_ms / 1000,
        retention_days=1,
        record_id=f"shr:{alert.alert_id}",
        principal="tbc_x",
        client_id="tbc_x",
        event=EventType.SHARING_DETECTED,
    )
    store = DynamoSharingStore(
        boto3.client("dynamodb"),
        table=deployment.refs["SharingTable"],
        usage_table=deployment.refs["UsageTable"],
    )
    assert store.put_alert(alert, record, expires_at=at_ms // 1000 + 86400)
    assert not store.put_alert(alert, record, expires_at=at_ms // 1000 + 86400)  # once
    return alert


def test_alerts_list_shows_open_alerts_as_json_and_ack_closes_them(
    deployed: Deployment,
) -> None:
    old = put_alert(deployed, now_ms() - 10 * 86_400_000, 1)
    new = put_alert(deployed, now_ms() - 60_000, 2)
    result = run("alerts", "list", "--output", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [a["id"] for a in listed] == [new.alert_id]  # default: the last 7 days
    assert listed[0]["rule"] == "device_networks"
    assert listed[0]["containment"] == "revoke"
    assert listed[0]["status"] == "open"
    since = json.loads(run("alerts", "list", "--since", "30d", "--output", "json").stdout)
    assert [a["id"] for a in since] == [old.alert_id, new.alert_id]

    acked = run("alerts", "ack", new.alert_id, "--output", "json")
    assert acked.exit_code == 0, acked.output
    assert json.loads(acked.stdout)["status"] == "acked"
    assert json.loads(run("alerts", "list", "--output", "json").stdout) == []
    both = run("alerts", "list", "--status", "all", "--output", "json")
    assert [a["status"] for a in json.loads(both.stdout)] == ["acked"]
    table = run("alerts", "list", "--status", "acked")
    assert new.alert_id in table.stdout


def test_acking_an_unknown_alert_is_exit_1_and_a_bad_id_exit_2(deployed: Deployment) -> None:
    missing = one_line_error(run("alerts", "ack", "20270115-" + "0" * 20), 1)
    assert "no alert 20270115-" in missing
    bad = one_line_error(run("alerts", "ack", "not-an-id"), 2)
    assert "YYYYMMDD" in bad
    assert one_line_error(run("alerts", "list", "--since", "yesterday-ish"), 2)
    assert run("alerts", "list", "--status", "closed").exit_code == 2


def test_set_containment_stores_the_mode_on_the_client(deployed: Deployment) -> None:
    created = run("clients", "create", "--name", "a", "--scope", "read", "--output", "json")
    client_id = json.loads(created.stdout)["client_id"]
    result = run(
        "clients", "set-containment", "--client-id", client_id, "--mode", "revoke", "-o", "json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"client_id": client_id, "containment": "revoke"}
    item = boto3.client("dynamodb").get_item(
        TableName=deployed.refs["ClientsTable"], Key={"client_id": {"S": client_id}}
    )["Item"]
    assert item["containment"] == {"S": "revoke"}


def test_set_containment_rejects_bad_modes_and_unknown_clients(deployed: Deployment) -> None:
    bad = run("clients", "set-containment", "--client-id", "tbc_x", "--mode", "nuke")
    assert bad.exit_code == 2
    unknown = one_line_error(
        run("clients", "set-containment", "--client-id", "tbc_" + "0" * 24, "--mode", "audit"), 1
    )
    assert "does not exist" in unknown
