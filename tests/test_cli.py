"""The ``tokenbroker`` admin CLI against moto (in-process), provisioned from template.yaml."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import click
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from moto import mock_aws

from tokenbroker.bootstrap import build
from tokenbroker.cli import deployment as cli_deployment
from tokenbroker.cli.main import cli
from tokenbroker.cli.output import Field, iso8601, iso_ms, render, to_table
from tokenbroker.domain.errors import DeviceLimitReached
from tokenbroker.domain.rfc7638 import jwk_thumbprint
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import load_template
from tokenbroker.services.admin import AdminService
from tokenbroker.settings import Settings

STACK = "test"
REGION = "us-east-1"
CLIENT_KEYS = {
    "client_id",
    "name",
    "status",
    "scopes",
    "active_devices",
    "max_devices",
    "created_at",
    "created_at_ms",
}
CREATED_KEYS = {
    "client_id",
    "client_secret",
    "name",
    "scopes",
    "max_devices",
    "status",
    "created_at",
    "created_at_ms",
}
DEVICE_KEYS = {
    "jkt",
    "client_id",
    "label",
    "status",
    "enrolled_at",
    "enrolled_at_ms",
    "revoked_at",
    "revoked_at_ms",
}


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Fake credentials, a fixed region, and nothing from the developer's AWS setup."""
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


@pytest.fixture
def deployed(aws_env: None) -> Iterator[Deployment]:
    """template.yaml's tables, signing key and deployment parameter, in moto."""
    with mock_aws():
        yield provision(
            load_template(), session_or_clients=boto3.Session(), stack_name=STACK, region=REGION
        )


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="tokenbroker")


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--output", "json").stdout)


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> str:
    """The command failed with ``exit_code``, one ``Error:`` line on stderr, nothing on
    stdout, and no exception escaped (so no traceback was printed)."""
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def new_jkt() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwk_thumbprint(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))


def create_client(max_devices: int = 3, scope: str = "model:chat:invoke read") -> dict[str, Any]:
    created: dict[str, Any] = ok_json(
        "clients",
        "create",
        "--name",
        "billing app",
        "--scope",
        scope,
        "--max-devices",
        str(max_devices),
    )
    return created


def all_commands() -> list[list[str]]:
    paths: list[list[str]] = [[]]
    for name, command in cli.commands.items():
        paths.append([name])
        if isinstance(command, click.Group):
            paths.extend([name, sub] for sub in command.commands)
    return paths


def ledger(deployed: Deployment) -> list[dict[str, Any]]:
    """Every record of the usage table (plain values), oldest first."""
    items = boto3.client("dynamodb").scan(
        TableName=deployed.refs["UsageTable"], ConsistentRead=True
    )["Items"]
    plain = [{k: TypeDeserializer().deserialize(v) for k, v in i.items()} for i in items]
    return sorted(plain, key=lambda r: (r["at"], r["id"]))


def caller_arn() -> str:
    """The identity moto's STS reports for the test credentials."""
    return str(boto3.client("sts").get_caller_identity()["Arn"])


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "tokenbroker")
def test_every_command_explains_itself_with_an_example_and_touches_no_aws(
    path: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_aws(region: str | None) -> boto3.Session:
        raise AssertionError("--help must not touch AWS")

    monkeypatch.setattr(cli_deployment, "new_session", no_aws)
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="tokenbroker")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout
    assert "Example" in result.stdout


def test_the_help_documents_output_formats_times_and_exit_codes() -> None:
    text = CliRunner().invoke(cli, ["--help"]).stdout
    assert "ISO 8601 UTC" in text
    assert "epoch" in text
    assert "Exit codes" in text
    assert "/tokenbroker/STACK/deployment" in text


# ---------------------------------------------------------------------------- clients


def test_a_client_can_be_created_listed_shown_and_disabled(deployed: Deployment) -> None:
    created = create_client(max_devices=2)
    assert set(created) == CREATED_KEYS
    assert created["client_id"].startswith("tbc_")
    assert created["name"] == "billing app"
    assert created["scopes"] == ["model:chat:invoke", "read"]
    assert created["max_devices"] == 2
    assert created["status"] == "active"
    # one time format: ISO 8601 UTC, plus the epoch in machine-readable output
    assert isinstance(created["created_at_ms"], int)
    assert created["created_at"] == iso_ms(created["created_at_ms"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created["created_at"])
    client_id = created["client_id"]

    listed = ok_json("clients", "list")
    assert [c["client_id"] for c in listed] == [client_id]
    assert set(listed[0]) == CLIENT_KEYS
    assert listed[0]["active_devices"] == 0

    shown = ok_json("clients", "show", "--client-id", client_id)
    assert shown == listed[0]

    disabled = ok_json("clients", "disable", "--client-id", client_id)
    assert disabled["status"] == "disabled"
    assert ok_json("clients", "show", "--client-id", client_id)["status"] == "disabled"


def test_the_secret_is_shown_once_and_only_its_hash_is_stored(deployed: Deployment) -> None:
    created = create_client()
    secret = created["client_secret"]
    assert len(secret) >= 43

    for fmt in ("json", "table", "csv"):
        listed = ok("clients", "list", "--output", fmt)
        shown = ok("clients", "show", "--client-id", created["client_id"], "--output", fmt)
        for result in (listed, shown):
            assert secret not in result.output
            assert "secret" not in result.output
            assert "sha256:" not in result.output

    items = boto3.client("dynamodb").scan(TableName=deployed.refs["ClientsTable"])["Items"]
    assert len(items) == 1
    assert secret not in json.dumps(items)
    stored_hash = items[0]["secret_hash"]["S"]
    assert stored_hash.startswith("sha256:")
    assert len(stored_hash) == len("sha256:") + 64


def test_table_output_of_a_new_client_shows_the_secret_with_a_warning(
    deployed: Deployment,
) -> None:
    result = ok("clients", "create", "--name", "n", "--scope", "a b")
    assert "client_secret" in result.stdout
    assert "cannot be shown again" in result.stdout
    secret_line = next(x for x in result.stdout.splitlines() if x.startswith("client_secret"))
    assert len(secret_line.split()[1]) >= 43


def test_json_output_of_a_new_client_keeps_stdout_parseable_and_warns_on_stderr(
    deployed: Deployment,
) -> None:
    result = ok("clients", "create", "--name", "n", "--scope", "a", "--output", "json")
    assert set(json.loads(result.stdout)) == CREATED_KEYS
    assert "cannot be shown again" in result.stderr


def test_the_output_option_works_before_and_after_the_subcommand(deployed: Deployment) -> None:
    create_client()
    after = ok("clients", "list", "--output", "json").stdout
    before = ok("--output", "json", "clients", "list").stdout
    assert json.loads(after) == json.loads(before)
    # the command's own option wins over the global one
    assert ok("--output", "json", "clients", "list", "-o", "csv").stdout.startswith("client_id,")


def test_list_output_is_a_json_array_a_csv_with_a_header_and_an_aligned_table(
    deployed: Deployment,
) -> None:
    first, second = create_client(), create_client(scope="x")
    ids = {first["client_id"], second["client_id"]}

    records = ok_json("clients", "list")
    assert isinstance(records, list)
    assert {r["client_id"] for r in records} == ids

    rows = list(csv.reader(io.StringIO(ok("clients", "list", "--output", "csv").stdout)))
    assert rows[0] == [
        "client_id",
        "name",
        "status",
        "scopes",
        "active_devices",
        "max_devices",
        "created_at",
    ]
    assert {r[0] for r in rows[1:]} == ids
    assert rows[1][6].endswith("Z")
    assert "T" in rows[1][6]

    table = ok("clients", "list").stdout.splitlines()
    assert table[0].split() == rows[0]
    assert set(table[1]) <= {"-", " "}
    assert len(table) == 4
    # columns are aligned: every value of a column starts where its header does
    status_at = table[0].index("status")
    assert all(line[status_at:].startswith("active") for line in table[2:])


def test_a_single_record_is_a_json_object_and_one_csv_row(deployed: Deployment) -> None:
    client_id = create_client()["client_id"]
    assert isinstance(ok_json("clients", "show", "--client-id", client_id), dict)
    rows = list(
        csv.reader(io.StringIO(ok("clients", "show", "--client-id", client_id, "-o", "csv").stdout))
    )
    assert len(rows) == 2
    assert rows[1][0] == client_id
    assert rows[1][3] == "model:chat:invoke read"


def test_an_empty_list_is_an_empty_array_a_bare_header_and_a_none_table(
    deployed: Deployment,
) -> None:
    assert ok_json("clients", "list") == []
    assert ok("clients", "list", "-o", "csv").stdout == (
        "client_id,name,status,scopes,active_devices,max_devices,created_at\n"
    )
    assert "(none)" in ok("clients", "list").stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--name", "   ", "--scope", "a"], "name must be"),
        (["--name", "bad\x07name", "--scope", "a"], "name must be"),
        (["--name", "n", "--scope", ""], "at least one scope"),
        (["--name", "n", "--scope", 'a "quoted"'], "scope"),
        (["--name", "n", "--scope", "a  b"], "scope"),
        (["--name", "n", "--scope", "a", "--max-devices", "0"], "max-devices must be"),
        (["--name", "n", "--scope", "a", "--max-devices", "101"], "max-devices must be"),
    ],
)
def test_malformed_client_input_is_a_usage_error_with_one_line_and_exit_2(
    deployed: Deployment, args: list[str], fragment: str
) -> None:
    assert_one_line_error(run("clients", "create", *args), 2, fragment)
    assert ok_json("clients", "list") == []


def test_an_unknown_or_malformed_client_id_fails_with_one_line(deployed: Deployment) -> None:
    assert_one_line_error(
        run("clients", "show", "--client-id", "tbc_nope"), 1, "tbc_nope does not exist"
    )
    assert_one_line_error(run("clients", "disable", "--client-id", "tbc_nope"), 1, "not exist")
    assert_one_line_error(run("clients", "show", "--client-id", "a/b"), 2, "client id must be")
    assert_one_line_error(run("devices", "list", "--client-id", "tbc_nope"), 1, "not exist")


def test_click_usage_errors_keep_exit_code_2(deployed: Deployment) -> None:
    result = run("clients", "create", "--name", "n")
    assert result.exit_code == 2
    assert "Missing option '--scope'" in result.stderr
    assert run("clients", "list", "--output", "xml").exit_code == 2
    assert (
        run("clients", "create", "--name", "n", "--scope", "a", "--max-devices", "x").exit_code == 2
    )


# ---------------------------------------------------------------------------- devices


def test_enrolling_beyond_max_devices_fails_clearly_and_revoking_frees_a_slot(
    deployed: Deployment,
) -> None:
    client_id = create_client(max_devices=3)["client_id"]
    keys = [new_jkt() for _ in range(5)]
    for i, jkt in enumerate(keys[:3]):
        device = ok_json(
            "devices", "enroll", "--client-id", client_id, "--jkt", jkt, "--label", f"host-{i}"
        )
        assert set(device) == DEVICE_KEYS
        assert device["status"] == "active"
        assert device["revoked_at"] is None

    assert_one_line_error(
        run("devices", "enroll", "--client-id", client_id, "--jkt", keys[3]),
        1,
        "already has 3 of 3 active devices",
        "revoke one first",
    )
    assert ok_json("clients", "show", "--client-id", client_id)["active_devices"] == 3

    revoked = ok_json("devices", "revoke", "--jkt", keys[0])
    assert revoked["status"] == "revoked"
    assert isinstance(revoked["revoked_at_ms"], int)
    assert revoked["revoked_at"].endswith("Z")
    assert ok_json("clients", "show", "--client-id", client_id)["active_devices"] == 2

    ok("devices", "enroll", "--client-id", client_id, "--jkt", keys[3])
    assert_one_line_error(
        run("devices", "enroll", "--client-id", client_id, "--jkt", keys[4]), 1, "3 of 3"
    )

    listed = ok_json("devices", "list", "--client-id", client_id)
    assert {d["jkt"]: d["status"] for d in listed} == {
        keys[0]: "revoked",
        keys[1]: "active",
        keys[2]: "active",
        keys[3]: "active",
    }


def test_device_output_formats(deployed: Deployment) -> None:
    client_id = create_client()["client_id"]
    jkt = new_jkt()
    ok("devices", "enroll", "--client-id", client_id, "--jkt", jkt, "--label", "ci runner")
    ok("devices", "revoke", "--jkt", jkt)

    (device,) = ok_json("devices", "list", "--client-id", client_id)
    assert device["label"] == "ci runner"
    rows = list(
        csv.DictReader(
            io.StringIO(ok("devices", "list", "--client-id", client_id, "-o", "csv").stdout)
        )
    )
    assert list(rows[0]) == ["jkt", "client_id", "label", "status", "enrolled_at", "revoked_at"]
    assert rows[0]["revoked_at"].endswith("Z")
    table = ok("devices", "list", "--client-id", client_id).stdout
    assert jkt in table
    assert "ci runner" in table


def test_revoking_an_unknown_or_already_revoked_key_fails_with_exit_1(
    deployed: Deployment,
) -> None:
    unknown = new_jkt()
    assert_one_line_error(run("devices", "revoke", "--jkt", unknown), 1, "no active device")

    client_id = create_client()["client_id"]
    jkt = new_jkt()
    ok("devices", "enroll", "--client-id", client_id, "--jkt", jkt)
    ok("devices", "revoke", "--jkt", jkt)
    assert_one_line_error(run("devices", "revoke", "--jkt", jkt), 1, "no active device")
    assert ok_json("clients", "show", "--client-id", client_id)["active_devices"] == 0


def test_a_key_cannot_be_enrolled_twice_even_after_revocation(deployed: Deployment) -> None:
    client_id = create_client()["client_id"]
    other = create_client()["client_id"]
    jkt = new_jkt()
    ok("devices", "enroll", "--client-id", client_id, "--jkt", jkt)
    assert_one_line_error(
        run("devices", "enroll", "--client-id", other, "--jkt", jkt), 1, "already enrolled"
    )
    ok("devices", "revoke", "--jkt", jkt)
    assert_one_line_error(
        run("devices", "enroll", "--client-id", client_id, "--jkt", jkt), 1, "already enrolled"
    )


def test_a_disabled_or_unknown_client_cannot_enroll_devices(deployed: Deployment) -> None:
    client_id = create_client()["client_id"]
    ok("clients", "disable", "--client-id", client_id)
    assert_one_line_error(
        run("devices", "enroll", "--client-id", client_id, "--jkt", new_jkt()), 1, "disabled"
    )
    assert_one_line_error(
        run("devices", "enroll", "--client-id", "tbc_nope", "--jkt", new_jkt()),
        1,
        "does not exist",
    )


@pytest.mark.parametrize(
    "jkt",
    [
        "too-short",
        "A" * 44,
        "!" * 43,
        "abc+def/ghi=" + "A" * 31,  # base64 (not base64url) alphabet
    ],
)
def test_malformed_thumbprints_are_refused_with_exit_2(deployed: Deployment, jkt: str) -> None:
    client_id = create_client()["client_id"]
    assert_one_line_error(
        run("devices", "enroll", "--client-id", client_id, "--jkt", jkt), 2, "RFC 7638"
    )
    assert_one_line_error(run("devices", "revoke", "--jkt", jkt), 2, "RFC 7638")


def test_a_malformed_label_is_refused(deployed: Deployment) -> None:
    client_id = create_client()["client_id"]
    assert_one_line_error(
        run("devices", "enroll", "--client-id", client_id, "--jkt", new_jkt(), "--label", "a\nb"),
        2,
        "label must be",
    )


class Serialised:
    """A boto3 client whose calls run one at a time. moto's conditional writes are not
    atomic across threads (DynamoDB's are), so concurrent tests serialise each call; the
    race under test is between calls (read-then-write would still lose)."""

    def __init__(self, client: Any, lock: threading.Lock) -> None:
        self._client = client
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name == "get_paginator":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def test_concurrent_enrollments_never_exceed_max_devices(deployed: Deployment) -> None:
    env = json.loads(
        boto3.client("ssm").get_parameter(Name=f"/tokenbroker/{STACK}/deployment")["Parameter"][
            "Value"
        ]
    )
    lock = threading.Lock()
    clients: dict[str, Any] = {}

    def aws(service: str) -> Any:
        return clients.setdefault(service, Serialised(boto3.client(service), lock))

    admin: AdminService = build(Settings.from_mapping(env), aws=aws).admin
    client_id = admin.create_client(name="n", scope="a", max_devices=3).client.client_id
    keys = [new_jkt() for _ in range(8)]
    start = threading.Barrier(len(keys))
    outcomes: list[str] = []

    def enroll(jkt: str) -> None:
        start.wait()
        try:
            admin.enroll_device(client_id=client_id, jkt=jkt)
            outcomes.append("enrolled")
        except DeviceLimitReached:
            outcomes.append("limit")

    threads = [threading.Thread(target=enroll, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["enrolled"] * 3 + ["limit"] * 5
    assert admin.get_client(client_id).active_devices == 3
    assert sum(d.active for d in admin.list_devices(client_id)) == 3
    # one record per change that happened; the five refused enrolments wrote none
    events = sorted(r["event"] for r in ledger(deployed))
    assert events == ["client_created"] + ["device_enrolled"] * 3


# ---------------------------------------------------------------------------- the ledger


def test_each_admin_command_writes_one_ledger_record_naming_the_caller(
    deployed: Deployment,
) -> None:
    actor = caller_arn()
    created = create_client(max_devices=2)
    client_id = created["client_id"]
    jkt = new_jkt()
    ok("devices", "enroll", "--client-id", client_id, "--jkt", jkt, "--label", "laptop")
    ok("devices", "revoke", "--jkt", jkt)
    ok("clients", "disable", "--client-id", client_id)
    # reads are not ledger events
    ok("clients", "list")
    ok("devices", "list", "--client-id", client_id)

    records = ledger(deployed)
    assert sorted(r["event"] for r in records) == [
        "client_created",
        "client_disabled",
        "device_enrolled",
        "device_revoked",
    ]
    by_event = {r["event"]: r for r in records}
    assert len(by_event) == len(records) == 4
    for event, record in by_event.items():
        assert record["id"] == "adm:" + record["request_id"]
        assert (record["decision"], record["reason"]) == ("allow", "ok")
        assert (record["principal"], record["client_id"]) == (client_id, client_id)
        assert record["actor"] == actor
        assert record.get("jkt") == (jkt if event.startswith("device_") else None)
        assert "token_jti" not in record
        # DynamoDB keeps it for the hot window, the archive for the retention
        assert record["ttl"] == record["at"] // 1000 + 30 * 86_400
        assert record["ru"] == record["at"] // 1000 + 400 * 86_400
    assert len({r["request_id"] for r in records}) == 4
    # no secret and no secret hash in any record
    stored = json.dumps(records, default=str)
    secret_hash = boto3.client("dynamodb").get_item(
        TableName=deployed.refs["ClientsTable"], Key={"client_id": {"S": client_id}}
    )["Item"]["secret_hash"]["S"]
    for secret in (created["client_secret"], secret_hash, secret_hash.split(":", 1)[1]):
        assert secret not in stored


def test_a_failed_admin_command_writes_no_ledger_record(deployed: Deployment) -> None:
    client_id = create_client(max_devices=1)["client_id"]
    ok("devices", "enroll", "--client-id", client_id, "--jkt", new_jkt())
    before = ledger(deployed)
    assert len(before) == 2

    enroll = ("devices", "enroll", "--jkt")
    assert_one_line_error(run(*enroll, new_jkt(), "--client-id", client_id), 1, "1 of 1")
    assert_one_line_error(run(*enroll, new_jkt(), "--client-id", "tbc_nope"), 1, "does not exist")
    assert_one_line_error(run("clients", "disable", "--client-id", "tbc_nope"), 1, "not exist")
    assert_one_line_error(run("devices", "revoke", "--jkt", new_jkt()), 1, "no active device")
    assert_one_line_error(run("clients", "create", "--name", "n", "--scope", ""), 2)

    assert ledger(deployed) == before


def test_a_caller_sts_cannot_identify_exits_2_with_one_line(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {"Code": "ExpiredToken", "Message": "The security token included has expired"}
        response = AWSResponse("https://sts.amazonaws.com/", 403, {}, None)
        return response, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}

    _with_session_hook(monkeypatch, "before-call.sts.GetCallerIdentity", denied)
    assert_one_line_error(
        run("clients", "create", "--name", "n", "--scope", "a"),
        2,
        "cannot identify the caller (sts:GetCallerIdentity): ExpiredToken",
    )
    assert ledger(deployed) == []
    assert boto3.client("dynamodb").scan(TableName=deployed.refs["ClientsTable"])["Items"] == []


# ---------------------------------------------------------------------------- failures


def test_a_missing_deployment_exits_2_with_one_line_naming_the_parameter(
    deployed: Deployment,
) -> None:
    line = assert_one_line_error(run("--stack", "elsewhere", "clients", "list"), 2)
    assert line == (
        "Error: deployment 'elsewhere' not found (no SSM parameter "
        "/tokenbroker/elsewhere/deployment); deploy the stack or run `tokenbroker dev` "
        "and export its variables"
    )


def test_the_stack_comes_from_tokenbroker_stack(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBROKER_STACK", "other")
    assert_one_line_error(run("clients", "list"), 2, "deployment 'other' not found")
    monkeypatch.setenv("TOKENBROKER_STACK", STACK)
    ok("clients", "list")


def test_an_invalid_stack_name_exits_2(deployed: Deployment) -> None:
    assert_one_line_error(run("--stack", "a/b", "clients", "list"), 2, "invalid stack name")


def test_a_deployment_parameter_that_is_not_json_exits_2(deployed: Deployment) -> None:
    boto3.client("ssm").put_parameter(
        Name="/tokenbroker/broken/deployment", Value="{", Type="String"
    )
    assert_one_line_error(run("--stack", "broken", "clients", "list"), 2, "not valid JSON")


def test_a_deployment_without_tables_exits_2(deployed: Deployment) -> None:
    boto3.client("ssm").put_parameter(
        Name="/tokenbroker/empty/deployment", Value="{}", Type="String"
    )
    # first: no stack to check the parameter against
    assert_one_line_error(
        run("--stack", "empty", "clients", "list"), 2, "no CloudFormation stack 'empty'"
    )
    _stack("empty", {})  # a stack naming nothing: nothing to disagree with
    assert_one_line_error(run("--stack", "empty", "clients", "list"), 2, "CLIENTS_TABLE")


def _stack(name: str, outputs: dict[str, str]) -> None:
    body = {
        "Resources": {"Marker": {"Type": "AWS::Logs::LogGroup"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(body))


def test_the_region_option_is_honoured(deployed: Deployment) -> None:
    # the deployment lives in us-east-1 only
    assert_one_line_error(run("--region", "eu-west-1", "clients", "list"), 2, "not found")
    ok("--region", REGION, "clients", "list")


def test_no_credentials_exits_2_with_one_line(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert_one_line_error(run("clients", "list"), 2, "no AWS credentials")


def test_no_region_exits_2_with_one_line(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert_one_line_error(run("clients", "list"), 2, "no AWS region")


def test_an_unreachable_endpoint_exits_2_with_one_line(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
    assert_one_line_error(run("clients", "list"), 2, "cannot reach AWS", "127.0.0.1:9")


def _with_session_hook(
    monkeypatch: pytest.MonkeyPatch, event: str, handler: Callable[..., Any]
) -> None:
    """Every session the CLI builds gets ``handler`` on ``event`` (its clients inherit
    the session's event hooks)."""
    original = cli_deployment.new_session

    def new_session(region: str | None) -> boto3.Session:
        session = original(region)
        session.events.register(event, handler)
        return session

    monkeypatch.setattr(cli_deployment, "new_session", new_session)


def test_a_dynamodb_failure_is_one_line_and_exit_1(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        error = {
            "Code": "ProvisionedThroughputExceededException",
            "Message": "Rate of requests exceeds the allowed throughput.",
        }
        response = AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None)
        return response, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    _with_session_hook(monkeypatch, "before-call.dynamodb.TransactWriteItems", throttled)
    assert_one_line_error(
        run("clients", "create", "--name", "n", "--scope", "a"),
        1,
        "dynamodb:TransactWriteItems failed (ProvisionedThroughputExceededException)",
    )
    assert ledger(deployed) == []


def test_a_raised_botocore_error_is_one_line_and_exit_1(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ReadTimeoutError

    def timeout(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")

    _with_session_hook(monkeypatch, "before-call.dynamodb.Scan", timeout)
    assert_one_line_error(run("clients", "list"), 1, "dynamodb:Scan failed (ReadTimeoutError)")


def test_an_unexpected_error_is_one_line_and_a_traceback_only_with_debug(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AdminService) -> Iterator[Any]:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(AdminService, "list_clients", broken)
    assert_one_line_error(
        run("clients", "list"), 1, "unexpected RuntimeError: boom second line", "--debug"
    )
    result = run("--debug", "clients", "list")
    assert isinstance(result.exception, RuntimeError)


# ---------------------------------------------------------------------------- rendering


def test_the_table_renderer_aligns_wide_characters_and_neutralises_control_characters() -> None:
    fields = (Field("name"), Field("n", "int"))
    table = to_table([{"name": "日本", "n": 5}, {"name": "a\x1b[31mb", "n": 10}], fields)
    lines = table.splitlines()
    assert "\x1b" not in table
    # "a\ufffd[31mb" takes 7 columns, "日本" 4: three spaces of padding, two between
    assert lines[2] == "日本" + " " * 3 + "  " + " 5"
    assert lines[3] == "a\ufffd[31mb" + "  " + "10"


def test_times_are_iso_8601_utc_everywhere_and_json_adds_the_epoch() -> None:
    fields = (Field("at", "time"), Field("tags", "list"), Field("gone", "time"))
    record = {"at": 0, "tags": ["a", "b"], "gone": None}
    assert json.loads(render([record], fields, "json", many=False)) == {
        "at": "1970-01-01T00:00:00.000Z",
        "at_ms": 0,
        "tags": ["a", "b"],
        "gone": None,
        "gone_ms": None,
    }
    assert render([record], fields, "csv", many=True) == (
        "at,tags,gone\n1970-01-01T00:00:00.000Z,a b,\n"
    )
    # the admin plane's seconds and the ledger's milliseconds print alike
    assert iso8601(1_764_000_000) == iso_ms(1_764_000_000_000) == "2025-11-24T16:00:00.000Z"


# ------------------------------------------------ configuration errors, one line each


def test_an_unknown_profile_is_a_one_line_configuration_error(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    line = assert_one_line_error(run("clients", "list"), 2, "AWS profile 'nope' not found")
    assert "unexpected" not in line


def test_a_malformed_endpoint_url_is_a_one_line_configuration_error(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "notaurl")
    line = assert_one_line_error(run("clients", "list"), 2, "invalid AWS endpoint URL")
    assert "unexpected" not in line


def test_a_malformed_region_is_a_one_line_configuration_error(deployed: Deployment) -> None:
    assert_one_line_error(
        run("--region", "bad region!", "clients", "list"), 2, "invalid AWS region 'bad region!'"
    )


def test_an_endpoint_answering_a_bare_500_is_explained(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bare_500(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("http://127.0.0.1:9/", 500, {}, None)
        return response, {"Error": {"Code": "500", "Message": ""}}

    _with_session_hook(monkeypatch, "before-call.ssm.GetParameter", bare_500)
    line = assert_one_line_error(run("clients", "list"), 2, "answered HTTP 500")
    assert not line.endswith(": 500")


def test_an_over_long_scope_is_named_as_such_not_as_a_syntax_error(deployed: Deployment) -> None:
    line = assert_one_line_error(
        run("clients", "create", "--name", "n", "--scope", "a" * 300), 2, "300 characters long"
    )
    assert "RFC 6749 scope tokens" not in line


# ------------------------------------------- an admin plane that cannot be redirected


def _decoy(deployed: Deployment, jkt: str, client_id: str) -> dict[str, str]:
    """Copies of the clients and devices tables holding the device, and the deployment
    parameter rewritten to point at them (what ssm:PutParameter alone can do)."""
    ddb = boto3.client("dynamodb")
    template = load_template()
    for logical_id in ("ClientsTable", "DevicesTable"):
        ddb.create_table(**template.create_table_kwargs(logical_id, f"decoy-{logical_id}"))
        for item in ddb.scan(TableName=deployed.refs[logical_id])["Items"]:
            ddb.put_item(TableName=f"decoy-{logical_id}", Item=item)
    ssm = boto3.client("ssm")
    name = f"/tokenbroker/{STACK}/deployment"
    value = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    value |= {"CLIENTS_TABLE": "decoy-ClientsTable", "DEVICES_TABLE": "decoy-DevicesTable"}
    ssm.put_parameter(Name=name, Value=json.dumps(value), Type="String", Overwrite=True)
    return value


def _status(table: str, jkt: str) -> str:
    item = boto3.client("dynamodb").get_item(TableName=table, Key={"jkt": {"S": jkt}})["Item"]
    return str(item["status"]["S"])


def test_a_parameter_pointing_at_decoy_tables_is_refused_and_nothing_is_revoked(
    deployed: Deployment,
) -> None:
    client_id = create_client()["client_id"]
    jkt = new_jkt()
    ok("devices", "enroll", "--client-id", client_id, "--jkt", jkt)
    before = ledger(deployed)
    _decoy(deployed, jkt, client_id)

    line = assert_one_line_error(run("devices", "revoke", "--jkt", jkt), 2)
    assert line == (
        f"Error: /tokenbroker/{STACK}/deployment disagrees with stack '{STACK}' on"
        " CLIENTS_TABLE, DEVICES_TABLE: refusing to use it (was the parameter changed"
        " outside CloudFormation?)"
    )
    assert _status("decoy-DevicesTable", jkt) == "active"
    assert _status(deployed.refs["DevicesTable"], jkt) == "active"
    assert ledger(deployed) == before  # no device_revoked record either
    for command in (("clients", "list"), ("audit", "usage", "--since", "1h")):
        assert_one_line_error(run(*command), 2, "disagrees with stack")


def test_a_decoy_digest_key_or_bucket_is_refused_too(deployed: Deployment) -> None:
    ssm = boto3.client("ssm")
    name = f"/tokenbroker/{STACK}/deployment"
    value = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    decoy_key = boto3.client("kms").create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    value |= {"DIGEST_KEY_ID": decoy_key["KeyMetadata"]["Arn"], "DIGEST_BUCKET": "decoy"}
    ssm.put_parameter(Name=name, Value=json.dumps(value), Type="String", Overwrite=True)
    assert_one_line_error(run("clients", "list"), 2, "on DIGEST_BUCKET, DIGEST_KEY_ID")


def test_a_parameter_without_its_stack_is_refused(deployed: Deployment) -> None:
    boto3.client("cloudformation").delete_stack(StackName=STACK)
    assert_one_line_error(
        run("clients", "list"), 2, f"there is no CloudFormation stack '{STACK}'", "refusing"
    )


def test_the_local_stack_presents_the_outputs_the_cli_checks(deployed: Deployment) -> None:
    (stack,) = boto3.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["ClientsTableName"] == deployed.refs["ClientsTable"]
    assert outputs["SigningKeyArn"] == deployed.attrs[("SigningKey", "Arn")]
    assert outputs["DeploymentParameterName"] == f"/tokenbroker/{STACK}/deployment"
    assert set(cli_deployment.STACK_OUTPUTS.values()) <= set(outputs)
