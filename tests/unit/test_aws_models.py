"""The authorizers' cut botocore data (adapters/aws_models.py): exactly the operations
their adapters call, the full model's shapes for them, the same signed requests, the
same retries, and never used stale."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore
import botocore.auth
import botocore.session
import pytest
from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.loaders import Loader

from tokenbroker import bootstrap
from tokenbroker.adapters import aws_models
from tokenbroker.adapters.aws import LAMBDA_CONFIG, client, edge_session
from tokenbroker.adapters.aws_models import EDGE_OPERATIONS, generate, trim_service_model
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.settings import Settings

ADAPTERS = Path(aws_models.__file__).resolve().parent

#: the adapters bootstrap builds for the authorizers (Container.usage, .liveness,
#: .key_cache, .keyset_view, .quota_gate, .resource_nonces) and the lean PutItem;
#: test_cold_imports.py checks no other client-calling adapter loads on their path
AUTHORIZER_ADAPTERS = (
    "usage",
    "put_item",
    "kms",
    "keyset",
    "quotas",
    "quota_rules",  # the gate's rules read (a Query); the rest of it is the admin plane's
    "nonce_secret",
)
#: calls of those modules made by the admin plane only (`tokenbroker quotas migrate`)
ADMIN_ONLY_CALLS = {"quota_rules": {"scan"}}
#: adapters the authorizers load that call no client themselves: dynamodb is imported
#: for attribute names and ledger_put (a request body); its calls are the directory's
NO_CALLS = ("aws", "aws_models", "attribute_values", "ledger_items", "dynamodb")


@pytest.fixture(scope="module")
def full() -> Loader:
    return Loader()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("botocore-data")
    generate(target)
    return target


def _called_operations(full: Loader) -> dict[str, set[str]]:
    """service -> the operations the authorizers' adapters call: every ``.method(`` of
    their source that is an operation of a service the data holds, and put_item's
    OPERATION (the lean PutItem names it)."""
    called: dict[str, set[str]] = {s: set() for s in EDGE_OPERATIONS}
    names = {
        s: {xform_name(op): op for op in full.load_service_model(s, "service-2")["operations"]}
        for s in EDGE_OPERATIONS
    }
    for module in AUTHORIZER_ADAPTERS:
        source = (ADAPTERS / f"{module}.py").read_text(encoding="utf-8")
        calls = set(re.findall(r"\.([a-z][a-z0-9_]*)\(", source))
        calls -= ADMIN_ONLY_CALLS.get(module, set())
        for service, ops in names.items():
            called[service] |= {ops[c] for c in calls if c in ops}
    from tokenbroker.adapters.put_item import OPERATION

    called["dynamodb"].add(OPERATION)
    return called


def test_the_data_holds_exactly_the_operations_the_authorizers_adapters_call(
    full: Loader,
) -> None:
    called = _called_operations(full)
    assert {s: set(ops) for s, ops in EDGE_OPERATIONS.items()} == called


def test_the_authorizers_load_no_other_client_calling_adapter() -> None:
    from tests.unit.test_cold_imports import serve_cold

    loaded = serve_cold("authorizer", "rest")["adapters"]
    modules = {m.rsplit(".", 1)[1] for m in loaded}
    assert modules <= set(AUTHORIZER_ADAPTERS) | set(NO_CALLS)


def test_every_cut_model_has_the_full_models_operations_and_shapes(
    full: Loader, data: Path
) -> None:
    for service, ops in EDGE_OPERATIONS.items():
        version = full.determine_latest_version(service, "service-2")
        complete = full.load_service_model(service, "service-2", version)
        cut = json.loads((data / service / version / "service-2.json").read_text())
        discovery = {n for n, op in complete["operations"].items() if op.get("endpointoperation")}
        assert set(cut["operations"]) == set(ops) | discovery
        for name, op in cut["operations"].items():
            assert op == complete["operations"][name]
        for name, shape in cut["shapes"].items():
            assert shape == complete["shapes"][name]
        assert {k: v for k, v in cut.items() if k not in ("operations", "shapes")} == {
            k: v for k, v in complete.items() if k not in ("operations", "shapes")
        }
        # nothing beyond what the operations reach: the cut's own closure is itself
        assert trim_service_model(cut, ops)["shapes"].keys() == cut["shapes"].keys()
        rules = full.load_service_model(service, "endpoint-rule-set-1", version)
        assert json.loads((data / service / version / "endpoint-rule-set-1.json").read_text()) == (
            rules
        )


def test_cutting_refuses_an_operation_the_model_lacks(full: Loader) -> None:
    model = full.load_service_model("kms", "service-2")
    with pytest.raises(ValueError, match="NoSuchOperation"):
        trim_service_model(model, ["GetPublicKey", "NoSuchOperation"])


def test_the_endpoints_keep_every_partition_with_only_the_data_services(
    full: Loader, data: Path
) -> None:
    complete = full.load_data("endpoints")
    cut = json.loads((data / "endpoints.json").read_text())
    assert len(cut["partitions"]) == len(complete["partitions"])
    for mine, theirs in zip(cut["partitions"], complete["partitions"], strict=True):
        assert {k: v for k, v in mine.items() if k != "services"} == {
            k: v for k, v in theirs.items() if k != "services"
        }
        assert mine["services"] == {
            k: v for k, v in theirs["services"].items() if k in EDGE_OPERATIONS
        }


#: one call per operation of the data (a new operation needs its sample here)
SAMPLES: dict[str, dict[str, dict[str, Any]]] = {
    "dynamodb": {
        "BatchGetItem": {"RequestItems": {"t": {"Keys": [{"k": {"S": "v"}}]}}},
        "GetItem": {"TableName": "t", "Key": {"k": {"S": "v"}}, "ConsistentRead": True},
        "PutItem": {
            "TableName": "t",
            "Item": {"k": {"S": "v"}, "n": {"N": "1"}, "m": {"M": {"a": {"SS": ["x"]}}}},
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": "k"},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
        "Query": {
            "TableName": "t",
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": "pk"},
            "ExpressionAttributeValues": {":pk": {"S": "rule#c"}},
            "ConsistentRead": True,
            "ExclusiveStartKey": {"pk": {"S": "rule#c"}, "sk": {"S": "*"}},
        },
        "TransactWriteItems": {
            "TransactItems": [
                {"Put": {"TableName": "t", "Item": {"k": {"S": "v"}}}},
                {
                    "Update": {
                        "TableName": "u",
                        "Key": {"k": {"S": "w"}},
                        "UpdateExpression": "ADD c :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ],
            "ClientRequestToken": "token-1",  # else a fresh uuid4 (the idempotency token)
        },
        "UpdateItem": {
            "TableName": "t",
            "Key": {"k": {"S": "v"}},
            "UpdateExpression": "SET a = :a",
            "ExpressionAttributeValues": {":a": {"N": "1"}},
            "ReturnValues": "ALL_NEW",
        },
    },
    "kms": {
        "GetPublicKey": {"KeyId": "arn:aws:kms:us-east-1:1:key/k"},
        "Sign": {
            "KeyId": "k",
            "Message": b"m",
            "MessageType": "RAW",
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
    },
    "ssm": {
        "GetParameter": {"Name": "/tokenbroker/s/signing-keys"},
        "PutParameter": {"Name": "/p", "Value": "{}", "Type": "String", "Overwrite": True},
    },
    "secretsmanager": {"GetSecretValue": {"SecretId": "arn:s", "VersionStage": "AWSCURRENT"}},
}


def test_every_operation_has_a_sample() -> None:
    assert {s: set(ops) for s, ops in SAMPLES.items()} == {
        s: set(ops) for s, ops in EDGE_OPERATIONS.items()
    }


class _Body:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b"{}"


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime.datetime(2027, 1, 15, 8, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def _sent(session: botocore.session.Session, service: str, region: str, op: str) -> Any:
    made = client(service, session=session, region=region)
    seen: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        seen.append(request)
        return AWSResponse(request.url, 200, {"content-type": "application/json"}, _Body())

    made.meta.events.register("before-send", answer)
    getattr(made, xform_name(op))(**SAMPLES[service][op])
    (request,) = seen
    headers = {k: v for k, v in request.headers.items() if k.lower() != "amz-sdk-invocation-id"}
    return request.method, request.url, request.body, headers


@pytest.mark.usefixtures("frozen_clock", "credentials")
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"])
def test_a_request_through_the_cut_data_is_the_one_the_full_models_sign(
    data: Path, region: str
) -> None:
    # both sessions new (a session's first credential resolution shows in its user agent)
    cut = edge_session.__wrapped__(str(data))
    assert cut is not None
    complete = botocore.session.Session()
    for service, ops in SAMPLES.items():
        for op in ops:
            theirs = _sent(complete, service, region, op)
            mine = _sent(cut, service, region, op)
            assert mine == theirs, f"{service}:{op} in {region}"
            assert b"Signature=" in mine[3]["Authorization"]
            assert mine[3]["X-Amz-Date"] == b"20270115T080000Z"  # the frozen clock


def test_stale_or_absent_data_is_never_used(data: Path, tmp_path: Path) -> None:
    assert aws_models.edge_loader(tmp_path / "absent") is None
    stale = tmp_path / "stale"
    generate(stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    manifest["botocore"] = "0.0.1"
    (stale / "manifest.json").write_text(json.dumps(manifest))
    assert aws_models.edge_loader(stale) is None
    (stale / "manifest.json").write_text("not json")
    assert aws_models.edge_loader(stale) is None
    # review: cut by an older build for fewer operations (the same botocore): a client
    # of it lacks a method the code calls (AttributeError); the full models instead
    fewer = {**EDGE_OPERATIONS, "dynamodb": ("BatchGetItem", "GetItem", "PutItem")}
    generate(tmp_path / "fewer", fewer)
    assert aws_models.edge_loader(tmp_path / "fewer") is None
    loader = aws_models.edge_loader(data)
    assert loader is not None
    assert loader.search_paths == [str(data)]
    assert botocore.__version__ == json.loads((data / "manifest.json").read_text())["botocore"]


def test_unused_cut_data_says_why_once_in_the_functions_log(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = tmp_path / "stale"
    generate(stale)
    manifest = json.loads((stale / "manifest.json").read_text())
    (stale / "manifest.json").write_text(json.dumps({**manifest, "botocore": "0.0.1"}))
    fewer = tmp_path / "fewer"
    generate(fewer, {**EDGE_OPERATIONS, "dynamodb": ("GetItem",)})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("[1]")
    assert aws_models.edge_data(tmp_path / "absent") == (None, "absent")
    assert aws_models.edge_data(stale) == (
        None,
        f"cut from botocore 0.0.1, running {botocore.__version__}",
    )
    assert aws_models.edge_data(fewer) == (None, "cut for other operations")
    assert aws_models.edge_data(bad) == (None, "unreadable manifest")
    loader, why = aws_models.edge_data(data)
    assert loader is not None
    assert why == ""

    with caplog.at_level("WARNING", logger="tokenbroker"):
        assert edge_session(str(stale)) is None
        assert edge_session(str(stale)) is None  # asked again: said once per process
        assert edge_session.__wrapped__(str(data)) is not None  # used: nothing to say
    (line,) = [r for r in caplog.records if r.name == "tokenbroker"]
    assert line.getMessage() == "cut botocore data not used: full models instead"
    assert line.reason == "cut from botocore 0.0.1, running " + botocore.__version__  # type: ignore[attr-defined]
    assert line.botocore_data == str(stale)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("credentials")
def test_the_container_reads_the_cut_data_only_for_its_services_and_only_when_set(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cut = bootstrap.edge_clients(str(data))
    ddb = cut("dynamodb")
    assert ddb._loader.search_paths == [str(data)]
    assert set(ddb.meta.service_model.operation_names) == {
        *EDGE_OPERATIONS["dynamodb"],
        "DescribeEndpoints",
    }
    s3 = cut("s3")  # not in the data: botocore's full models
    assert str(data) not in s3._loader.search_paths
    assert "GetObject" in s3.meta.service_model.operation_names
    # stale data: the full models, never a half-cut client
    assert (
        "Query"
        in bootstrap.edge_clients(str(tmp_path / "absent"))(
            "dynamodb"
        ).meta.service_model.operation_names
    )
    # without BOTOCORE_DATA, the full models (the other functions)
    monkeypatch.delenv("BOTOCORE_DATA", raising=False)
    assert Settings.from_mapping({}).botocore_data == ""
    assert "Query" in bootstrap.lambda_clients("dynamodb").meta.service_model.operation_names
    # "edge": the layer's copy beside the package
    assert Settings.from_mapping({"BOTOCORE_DATA": "edge"}).botocore_data == "edge"


@pytest.mark.usefixtures("credentials")
def test_the_cut_clients_keep_lambdas_timeouts_and_retries(data: Path) -> None:
    ddb = client("dynamodb", session=edge_session(str(data)), region="us-east-1")
    config = ddb.meta.config
    assert config.retries == LAMBDA_CONFIG.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (config.connect_timeout, config.read_timeout) == (1, 2)
    assert config.tcp_keepalive is True
    full = client("dynamodb", region="us-east-1").meta.config
    names = ("retries", "connect_timeout", "read_timeout", "tcp_keepalive", "parameter_validation")
    assert {n: getattr(config, n) for n in names} == {n: getattr(full, n) for n in names}


@pytest.mark.usefixtures("credentials")
@pytest.mark.parametrize("fault", ["throttled", "timeout"])
def test_the_cut_clients_fail_closed_after_the_same_two_attempts(
    data: Path, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import botocore.endpoint

    from tokenbroker.adapters.usage import DynamoLiveness

    sleeps: list[float] = []  # botocore's back-off, recorded instead of slept
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=sleeps.append))

    ddb = client("dynamodb", session=edge_session(str(data)), region="us-east-1")
    attempts: list[str] = []

    def inject(request: Any, **_: Any) -> AWSResponse:
        attempts.append(request.url)
        if fault == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        body = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow"}'

        class Body:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield body

        return AWSResponse(request.url, 400, {"content-type": "application/x-amz-json-1.0"}, Body())

    ddb.meta.events.register("before-send.dynamodb.BatchGetItem", inject)
    liveness = DynamoLiveness(ddb, clients_table="c", devices_table="d")
    with pytest.raises(TemporarilyUnavailable) as caught:
        liveness.fetch("client-1", "jkt-1")
    expected = "ThrottlingException" if fault == "throttled" else "ReadTimeoutError"
    assert expected in str(caught.value)
    assert len(attempts) == 2
    assert len(sleeps) == 1


class _Answer:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@pytest.mark.usefixtures("credentials")
def test_the_gates_rules_query_runs_on_a_cut_data_client(data: Path) -> None:
    # review: the rules read of a table not yet migrated (and of a gate whose rules
    # outlived the liveness view) is a Query; a cut client without it raised
    # AttributeError ('DynamoDB' object has no attribute 'query') on every such request
    from tokenbroker.adapters.quota_rules import DynamoQuotaRules
    from tokenbroker.domain.quotas import QuotaLimits

    ddb = bootstrap.edge_clients(str(data))("dynamodb")
    assert ddb._loader.search_paths == [str(data)]
    page = {
        "Items": [
            {"pk": {"S": "rule#c"}, "sk": {"S": "rules"}, "rpm:m": {"N": "5"}},
            {"pk": {"S": "rule#c"}, "sk": {"S": "m"}, "rpd": {"N": "7"}},
        ]
    }
    sent: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(json.loads(request.body))
        body = json.dumps(page).encode()
        return AWSResponse(
            request.url, 200, {"content-type": "application/x-amz-json-1.0"}, _Answer(body)
        )

    ddb.meta.events.register("before-send.dynamodb.Query", answer)
    rules = DynamoQuotaRules(ddb, table="q").rules("c")
    assert rules == {"m": QuotaLimits(requests_per_minute=5, requests_per_day=7)}
    assert sent[0]["KeyConditionExpression"] == "#pk = :pk"
