"""template.yaml: lint, least privilege, schemas, names the code reads, and the loader.

The template is the single source of truth; these tests read it only through
``tokenbroker.local.template`` (the loader), and prove the loader on small inline
templates too.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from tokenbroker.domain.ledger import ID_ATTRIBUTE
from tokenbroker.local.template import (
    Route,
    Template,
    TemplateError,
    UnresolvedReference,
    find_template,
    load_template,
    loads,
)
from tokenbroker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
PARAMS = ROOT / "infra" / "params"
ENVIRONMENTS = ("dev", "prod")
TABLES = (
    "ClientsTable",
    "DevicesTable",
    "TokensTable",
    "UsageTable",
    "AggregatesTable",
    "IdpsTable",
    "PeopleTable",
    "RefreshTokensTable",
    "QuotasTable",
    "SharingTable",
)


#: the signing key set parameter (signing key rotation, src/tokenbroker/domain/keyset.py)
KEY_SET_ARN = (
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
    ":parameter/tokenbroker/${AWS::StackName}/signing-keys"
)


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: Template) -> dict[str, Any]:
    resources: dict[str, Any] = template.document()["Resources"]
    return resources


def _inline(text: str, tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return load_template(path)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------ lint


def test_cfn_lint_finds_nothing_in_the_template() -> None:
    assert [str(m) for m in lint_file(TEMPLATE)] == []


def test_cfn_lint_accepts_the_parameter_files() -> None:
    files = [str(PARAMS / f"{env}.json") for env in ENVIRONMENTS]
    assert [str(m) for m in lint_file(TEMPLATE, ManualArgs(parameter_files=files))] == []


def _sam() -> str:
    sam = os.environ.get("TOKENBROKER_SAM")
    if not sam:
        pytest.skip("set TOKENBROKER_SAM to a sam binary to run `sam validate`")
    return sam


def _sam_env() -> dict[str, str]:
    return {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.mark.parametrize(
    "extra", [["--lint"], []], ids=["sam validate --lint", "sam validate (translation)"]
)
def test_sam_validate_accepts_the_template_offline(extra: list[str]) -> None:
    command = [_sam(), "validate", *extra, "--template", str(TEMPLATE), "--region", "us-east-1"]
    result = subprocess.run(
        command, cwd=ROOT, env=_sam_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------ parameters


def test_token_lifetime_defaults_to_five_minutes_and_is_capped_at_fifteen(
    template: Template,
) -> None:
    spec = template.document()["Parameters"]["TokenLifetimeSeconds"]
    assert (spec["Type"], spec["Default"], spec["MinValue"], spec["MaxValue"]) == (
        "Number",
        300,
        60,
        900,
    )
    with pytest.raises(TemplateError, match="MaxValue"):
        template.parameter_values({"TokenLifetimeSeconds": "901"})


def test_parameter_defaults_are_the_documented_ones(template: Template) -> None:
    assert template.parameters_defaults() == {
        "Stage": "prod",
        "IssuerUrl": "",
        "AllowedAudiences": "urn:tokenbroker:api",
        "TokenLifetimeSeconds": "300",
        "ProofMaxAgeSeconds": "60",
        "ClockSkewSeconds": "5",
        "TokenRecordRetentionDays": "30",
        "UsageRetentionDays": "400",
        "HotWindowDays": "30",
        "DigestGraceSeconds": "900",
        "DigestPeriodSeconds": "3600",
        "DefaultRequestsPerMinute": "0",
        "DefaultRequestsPerDay": "0",
        "DefaultUnitsPerDay": "0",
        "QuotaLeaseFold": "always",
        "MaxDevicesPerPerson": "3",
        "RefreshTokenAbsoluteSeconds": "28800",
        "RefreshTokenIdleSeconds": "3600",
        "LogLevel": "INFO",
        "RouteScopes": (
            '{"GET /v1/whoami": "", "POST /v1/models/{model}/invoke": "model:{model}:invoke"}'
        ),
        "AuthorizerInvokerSourceArn": "",
        "EnableHttpApiAuthorizer": "false",
        "EnableWaf": "false",
        "WafTokenRequestsPer5Minutes": "300",
        "RequireDpopNonceAtToken": "false",
        "RequireDpopNonceAtResources": "false",
        "ResourceMetadataUrl": "",
        "DpopNonceStepSeconds": "300",
        "SharingRules": "{}",
        "SharingContainmentDefault": "audit",
    }


def test_a_digest_period_divides_the_hour_and_defaults_to_one_hour(template: Template) -> None:
    spec = template.document()["Parameters"]["DigestPeriodSeconds"]
    assert (spec["Type"], spec["Default"]) == ("Number", 3600)
    assert spec["AllowedValues"] == [60, 300, 900, 3600]
    assert all(3600 % value == 0 for value in spec["AllowedValues"])
    with pytest.raises(TemplateError, match="not one of"):
        template.parameter_values({"DigestPeriodSeconds": "1800"})


def test_the_quota_lease_fold_parameter_reaches_both_authorizers_and_only_them(
    template: Template,
) -> None:
    """QuotaLeaseFold (README, Folded leases): never | single | always, default always,
    passed as QUOTA_LEASE_FOLD to the REST and HTTP API authorizers, each resolving to
    valid settings with the chosen policy; any other value is refused by the template."""
    spec = template.document()["Parameters"]["QuotaLeaseFold"]
    assert (spec["Type"], spec["Default"]) == ("String", "always")
    assert spec["AllowedValues"] == ["never", "single", "always"]
    with pytest.raises(TemplateError, match="not one of"):
        template.parameter_values({"QuotaLeaseFold": "sometimes"})
    authorizers = {"AuthorizerFunction", "HttpApiAuthorizerFunction"}
    fake = _fake_deployment(template)
    for function in template.functions():
        environment = template.environment(function, **fake)
        assert ("QUOTA_LEASE_FOLD" in environment) == (function in authorizers), function
    for function in sorted(authorizers):
        assert Settings.from_mapping(template.environment(function, **fake)).quota_lease_fold == (
            "always"
        )
        chosen = template.environment(function, **fake, parameters={"QuotaLeaseFold": "single"})
        assert Settings.from_mapping(chosen).quota_lease_fold == "single"


def _overrides(env: str) -> dict[str, str]:
    items = json.loads((PARAMS / f"{env}.json").read_text(encoding="utf-8"))
    return {item["ParameterKey"]: item["ParameterValue"] for item in items}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_parameter_file_meets_the_template_constraints(template: Template, env: str) -> None:
    values = template.parameter_values(_overrides(env))
    assert values["Stage"] == env


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_samconfig_deploys_each_environment_with_its_parameter_file(env: str) -> None:
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text(encoding="utf-8"))
    overrides = config[env]["deploy"]["parameters"]["parameter_overrides"]
    assert dict(item.split("=", 1) for item in overrides) == _overrides(env)


def test_a_deployment_must_name_its_environment() -> None:
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text(encoding="utf-8"))
    assert "deploy" not in config["default"]


# ---------------------------------------------------------------- stateful resources


def test_every_table_is_on_demand_recoverable_encrypted_and_retained(
    template: Template, resources: dict[str, Any]
) -> None:
    assert set(template.tables()) == set(TABLES)
    for logical_id, props in template.tables().items():
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id
        assert "TableName" not in props, logical_id
        assert resources[logical_id]["DeletionPolicy"] == "Retain", logical_id
        assert resources[logical_id]["UpdateReplacePolicy"] == "Retain", logical_id


def _indexes(props: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    return {
        index["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]]
        for index in props.get("GlobalSecondaryIndexes", [])
        if index["Projection"] == {"ProjectionType": "ALL"}
    }


def test_tables_have_the_keys_indexes_and_ttl_the_adapters_rely_on(template: Template) -> None:
    tables = template.tables()
    assert tables["ClientsTable"]["KeySchema"] == [
        {"AttributeName": "client_id", "KeyType": "HASH"}
    ]
    assert tables["DevicesTable"]["KeySchema"] == [{"AttributeName": "jkt", "KeyType": "HASH"}]
    assert tables["TokensTable"]["KeySchema"] == [{"AttributeName": "jti", "KeyType": "HASH"}]
    assert _indexes(tables["DevicesTable"]) == {
        "by_client": [("client_id", "HASH"), ("enrolled_at", "RANGE")]
    }
    assert _indexes(tables["TokensTable"]) == {
        "by_client": [("client_id", "HASH"), ("issued_at", "RANGE")],
        "by_device": [("jkt", "HASH"), ("issued_at", "RANGE")],
    }
    assert tables["UsageTable"]["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    # no index: one write unit per request (the hot tier's time index is stream-built)
    assert "GlobalSecondaryIndexes" not in tables["UsageTable"]
    assert tables["UsageTable"]["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert tables["AggregatesTable"]["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert _indexes(tables["AggregatesTable"]) == {}
    assert {t: template.ttl_attribute(t) for t in TABLES} == {
        "ClientsTable": None,
        "DevicesTable": "ttl",
        "TokensTable": "ttl",
        "UsageTable": "ttl",
        "AggregatesTable": "ttl",
        "IdpsTable": None,
        "PeopleTable": None,
        "RefreshTokensTable": "ttl",
        "QuotasTable": "ttl",
        "SharingTable": "ttl",
    }
    assert tables["QuotasTable"]["KeySchema"] == tables["AggregatesTable"]["KeySchema"]


def test_the_usage_table_has_no_index_and_is_keyed_by_the_record_id(template: Template) -> None:
    """No GSI (each was one more write unit and stored copy per request): auditors read
    the hot tier through the stream-built time index (adapters/archive_index.py)."""
    usage = template.tables()["UsageTable"]
    assert _indexes(usage) == {}
    assert usage["KeySchema"] == [{"AttributeName": ID_ATTRIBUTE, "KeyType": "HASH"}]
    types = {d["AttributeName"]: d["AttributeType"] for d in usage["AttributeDefinitions"]}
    assert types == {ID_ATTRIBUTE: "S"}


@pytest.mark.parametrize("key_id", ["SigningKey", "SigningKeyB", "DigestKey"])
def test_the_signing_keys_are_retained_p256_signing_keys(
    resources: dict[str, Any], key_id: str
) -> None:
    key = resources[key_id]
    assert (key["Properties"]["KeySpec"], key["Properties"]["KeyUsage"]) == (
        "ECC_NIST_P256",
        "SIGN_VERIFY",
    )
    assert (key["DeletionPolicy"], key["UpdateReplacePolicy"]) == ("Retain", "Retain")
    # administration through IAM (the default statement), signing by the key policy
    statement = key["Properties"]["KeyPolicy"]["Statement"][0]
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }


def test_the_signing_key_alias_targets_the_signing_key(resources: dict[str, Any]) -> None:
    assert resources["SigningKeyAlias"]["Properties"]["TargetKeyId"] == {"Ref": "SigningKey"}


def test_the_digest_bucket_is_private_versioned_encrypted_and_retained(
    resources: dict[str, Any],
) -> None:
    bucket = resources["DigestBucket"]
    props = bucket["Properties"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert "BucketName" not in props  # named per stack by CloudFormation
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_the_digest_bucket_locks_every_version_in_compliance_mode_as_long_as_usage_lives(
    resources: dict[str, Any], template: Template
) -> None:
    props = resources["DigestBucket"]["Properties"]
    assert props["ObjectLockEnabled"] is True
    lock = props["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    # compliance, not governance: s3:BypassGovernanceRetention cannot shorten it
    assert retention["Mode"] == "COMPLIANCE"
    assert retention == {"Mode": "COMPLIANCE", "Days": {"Ref": "UsageRetentionDays"}}
    # and no function of the stack may delete digests
    for name in template.resources("AWS::Serverless::Function"):
        on_digests = [a for a, r in _grants(template, name) if "DigestBucket" in r]
        assert not any("Delete" in action for action in on_digests), name


# ------------------------------------------------------------ functions and the API


def test_functions_share_the_runtime_layer_and_tracing(resources: dict[str, Any]) -> None:
    spec = load_template(TEMPLATE).document()["Globals"]["Function"]
    assert spec["Runtime"] == "python3.13"
    assert spec["Architectures"] == ["arm64"]
    assert spec["Tracing"] == "Active"
    assert spec["Layers"] == [{"Ref": "SharedLayer"}]
    layer = resources["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "src/"
    assert layer["Metadata"]["BuildMethod"] == "makefile"  # src/Makefile, test_packaging.py


def test_functions_point_at_their_code(template: Template) -> None:
    functions = template.functions()
    assert {name: (spec.code_uri, spec.handler) for name, spec in functions.items()}.items() >= {
        "TokenFunction": (ROOT / "functions" / "token_endpoint", "app.handler"),
        "DiscoveryFunction": (ROOT / "functions" / "discovery", "app.handler"),
    }.items()


def test_routes_are_the_token_endpoint_and_the_discovery_documents(template: Template) -> None:
    assert set(template.routes()) >= {
        Route("POST", "/oauth2/token", "TokenFunction", "BrokerApi", None),
        Route("GET", "/.well-known/oauth-authorization-server", "DiscoveryFunction", "BrokerApi"),
        Route("GET", "/.well-known/jwks.json", "DiscoveryFunction", "BrokerApi"),
    }


def test_the_api_throttles_traces_and_logs_access_without_headers(
    resources: dict[str, Any],
) -> None:
    api = resources["BrokerApi"]["Properties"]
    assert api["StageName"] == {"Ref": "Stage"}
    assert api["TracingEnabled"] is True
    (settings,) = api["MethodSettings"]
    assert (settings["ResourcePath"], settings["HttpMethod"]) == ("/*", "*")
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (100, 200)
    assert settings["DataTraceEnabled"] is False  # data trace would log the headers
    log = api["AccessLogSetting"]
    assert log["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(log["Format"])
    assert {"requestId", "ip", "method", "path", "status"} <= set(fields)
    assert "header" not in log["Format"].lower()
    assert "authorization" not in log["Format"].lower()
    assert resources["ApiAccessLogGroup"]["Properties"]["RetentionInDays"] == 365


def test_outputs_name_the_deployment(template: Template) -> None:
    outputs = template.document()["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${BrokerApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"
    }
    # the outputs other stacks import: tests/test_deploy_template.py
    exported = {"Issuer", "TokenEndpoint", "JwksUrl", "AuthorizerFunctionArn"}
    exported |= {"HttpApiAuthorizerFunctionArn", "AdminPolicyArn"}
    assert {name: outputs[name]["Value"] for name in set(outputs) - exported - {"ApiUrl"}} == {
        "ClientsTableName": {"Ref": "ClientsTable"},
        "DevicesTableName": {"Ref": "DevicesTable"},
        "TokensTableName": {"Ref": "TokensTable"},
        "IdpsTableName": {"Ref": "IdpsTable"},
        "PeopleTableName": {"Ref": "PeopleTable"},
        "RefreshTokensTableName": {"Ref": "RefreshTokensTable"},
        "UsageTableName": {"Ref": "UsageTable"},
        "AggregatesTableName": {"Ref": "AggregatesTable"},
        "QuotasTableName": {"Ref": "QuotasTable"},  # infra/edge.yaml's QuotasTableName
        "DigestBucketName": {"Ref": "DigestBucket"},
        "UsageArchiveDatabaseName": {"Ref": "UsageArchiveDatabase"},
        "DigestKeyArn": {"Fn::GetAtt": ["DigestKey", "Arn"]},
        "AuditorPolicyArn": {"Ref": "AuditorPolicy"},
        "SigningKeyArn": {"Fn::GetAtt": ["SigningKey", "Arn"]},
        "DeploymentParameterName": {"Ref": "DeploymentParameter"},
    }


# ---------------------------------------------------------------------------- IAM


def _statements(template: Template, function: str) -> list[dict[str, Any]]:
    policies = template.resources("AWS::Serverless::Function")[function].get("Policies", [])
    statements = []
    for policy in _as_list(policies):
        # Only inline policy documents: no SAM policy templates, no managed policy names.
        assert isinstance(policy, dict), f"{function}: {policy!r} is not an inline policy"
        assert set(policy) <= {"Version", "Statement"}, f"{function}: {sorted(policy)}"
        statements.extend(_as_list(policy["Statement"]))
    return statements


def _resource_name(resource: dict[str, Any]) -> str:
    """``Logical.Attr`` for GetAtt, ``Logical`` for Ref, the text of a Sub (for example
    ``${UsageTable.Arn}/index/by_hour``)."""
    if "Fn::GetAtt" in resource:
        return ".".join(resource["Fn::GetAtt"])
    if "Fn::Sub" in resource:
        assert isinstance(resource["Fn::Sub"], str), resource
        return str(resource["Fn::Sub"])
    return str(resource["Ref"])


def _statement_grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (action, _resource_name(resource))
        for statement in statements
        for resource in _as_list(statement["Resource"])
        for action in _as_list(statement["Action"])
    }


def _grants(template: Template, function: str) -> set[tuple[str, str]]:
    """(action, resource) pairs, resources written as ``Logical.Attr`` / ``Logical`` /
    the Sub text."""
    return _statement_grants(_statements(template, function))


def _auditor_statements(template: Template) -> list[dict[str, Any]]:
    document = template.resources("AWS::IAM::ManagedPolicy")["AuditorPolicy"]["PolicyDocument"]
    return _as_list(document["Statement"])


def _check_statement(where: str, statement: dict[str, Any], declared: set[str]) -> None:
    assert statement["Effect"] == "Allow"
    assert statement.get("Sid"), f"{where}: every statement says why (Sid + comment)"
    assert not {"NotAction", "NotResource", "Principal"} & set(statement)
    # a condition on an Allow only narrows it; the kinds used: DynamoDB partition keys,
    # and (the protected function's quota writes) the attributes and ReturnValues
    narrowing = {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys"},
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys", "dynamodb:Attributes"},
        "StringEqualsIfExists": {"dynamodb:ReturnValues"},
    }
    for operator, keys in statement.get("Condition", {}).items():
        assert operator in narrowing, where
        assert set(keys) <= narrowing[operator], where
    for action in _as_list(statement["Action"]):
        assert "*" not in action, f"{where}: wildcard action {action}"
    for resource in _as_list(statement["Resource"]):
        assert isinstance(resource, dict), f"{where}: literal resource {resource!r}"
        if "Fn::Sub" in resource:
            # a Sub names template resources (${X.Arn}) or pseudo parameters only
            text = resource["Fn::Sub"]
            names = re.findall(r"\$\{([^}]*)\}", text)
            assert names, f"{where}: {text!r} names nothing"
            for name in names:
                assert name.startswith("AWS::") or name.split(".")[0] in declared, (where, name)
            assert "*" not in text or text.endswith(("/*", "/index/*")), (where, text)
        else:
            (target,) = resource.get("Fn::GetAtt", [resource.get("Ref")])[:1]
            assert target in declared, f"{where}: {resource!r} is not a template resource"


def test_every_iam_statement_allows_exact_actions_on_template_resources(
    template: Template,
) -> None:
    declared = set(template.document()["Resources"])
    for function in template.functions():
        for statement in _statements(template, function):
            _check_statement(function, statement, declared)
    for statement in _auditor_statements(template):
        _check_statement("AuditorPolicy", statement, declared)


def test_the_token_function_may_read_clients_and_devices_record_tokens_and_sign(
    template: Template,
) -> None:
    assert _grants(template, "TokenFunction") == {
        ("dynamodb:GetItem", "ClientsTable.Arn"),
        ("dynamodb:GetItem", "DevicesTable.Arn"),
        # token exchange: the person (in the same TransactGetItems) and the issuer entry
        ("dynamodb:GetItem", "PeopleTable.Arn"),
        ("dynamodb:GetItem", "IdpsTable.Arn"),
        # refresh tokens: read, start a family, rotate, revoke a family
        ("dynamodb:GetItem", "RefreshTokensTable.Arn"),
        ("dynamodb:PutItem", "RefreshTokensTable.Arn"),
        ("dynamodb:UpdateItem", "RefreshTokensTable.Arn"),
        # one TransactWriteItems: the token record and its ledger record
        ("dynamodb:PutItem", "TokensTable.Arn"),
        ("dynamodb:PutItem", "UsageTable.Arn"),
        # which key slot signs (signing key rotation)
        ("ssm:GetParameter", KEY_SET_ARN),
        # a passed token exchange lifts the device's sharing step_up (REMOVE step_up_at)
        ("dynamodb:UpdateItem", "DevicesTable.Arn"),
        # kms:Sign and kms:GetPublicKey: SigningKey's key policy grants them to this role
        # the DPoP nonce secret (RFC 9449 §8)
        ("secretsmanager:GetSecretValue", "DpopNonceSecret"),
    }


def test_the_discovery_function_may_only_read_the_public_key(template: Template) -> None:
    assert _grants(template, "DiscoveryFunction") == {
        ("kms:GetPublicKey", "SigningKey.Arn"),
        ("kms:GetPublicKey", "SigningKeyB.Arn"),
        ("ssm:GetParameter", KEY_SET_ARN),
    }


def test_only_the_token_function_signs_tokens_and_only_the_digest_function_digests(
    template: Template,
) -> None:
    # No IAM statement grants kms:Sign: the key policies do, to one role each
    # (tests/test_deploy_template.py proves their Deny covers everyone else).
    signers = {
        (function, resource)
        for function in template.functions()
        for action, resource in _grants(template, function)
        if action == "kms:Sign"
    }
    assert signers == set()
    assert not {action for action, _ in _statement_grants(_auditor_statements(template))} & {
        "kms:Sign"
    }


def test_the_digest_function_may_only_read_the_archive_keep_digests_and_sign(
    template: Template,
) -> None:
    assert _grants(template, "DigestFunction") == {
        ("s3:GetObject", "${DigestBucket.Arn}/*"),
        ("s3:GetObjectVersion", "${DigestBucket.Arn}/*"),
        ("s3:PutObject", "${DigestBucket.Arn}/*"),
        ("s3:AbortMultipartUpload", "${DigestBucket.Arn}/*"),
        ("s3:ListBucket", "DigestBucket.Arn"),
        ("s3:ListBucketVersions", "DigestBucket.Arn"),
        # kms:Sign and kms:GetPublicKey: DigestKey's key policy grants them to this role
        (
            "lambda:InvokeFunction",
            "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}"
            ":function:${AWS::StackName}-digest",
        ),
    }
    # it dispatches only to itself
    function = template.resources("AWS::Serverless::Function")["DigestFunction"]
    own = {"Fn::Sub": "${AWS::StackName}-digest"}
    assert function["FunctionName"] == own
    assert function["Environment"]["Variables"]["DIGEST_WORKER_FUNCTION"] == own


def test_the_aggregates_function_may_only_count_into_its_table_and_read_the_stream(
    template: Template,
) -> None:
    assert _grants(template, "AggregatesFunction") == {
        # one page per batch, hour and principal shard: a put, no read
        ("dynamodb:PutItem", "AggregatesTable.Arn"),
        ("dynamodb:DescribeStream", "UsageTable.StreamArn"),
        ("dynamodb:GetRecords", "UsageTable.StreamArn"),
        ("dynamodb:GetShardIterator", "UsageTable.StreamArn"),
        ("dynamodb:ListStreams", "UsageTable.StreamArn"),
        # sharing rules in the same batch: window state, the burst rule's own hourly
        # counts (it reads no aggregates) and alerts
        ("dynamodb:GetItem", "SharingTable.Arn"),
        ("dynamodb:PutItem", "SharingTable.Arn"),
        ("dynamodb:UpdateItem", "SharingTable.Arn"),
        # containment: the client's mode, the device revoked or flagged (its slot freed
        # on the client or person item), each with its ledger record
        ("dynamodb:GetItem", "ClientsTable.Arn"),
        ("dynamodb:GetItem", "DevicesTable.Arn"),
        ("dynamodb:UpdateItem", "ClientsTable.Arn"),
        ("dynamodb:UpdateItem", "DevicesTable.Arn"),
        ("dynamodb:UpdateItem", "PeopleTable.Arn"),
        ("dynamodb:PutItem", "UsageTable.Arn"),
        ("sns:Publish", "SharingAlertsTopic"),
        (
            "events:PutEvents",
            "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default",
        ),
    }


def test_the_aggregates_function_reads_inserts_from_the_stream_in_whole_unsplit_batches(
    template: Template,
) -> None:
    events = template.resources("AWS::Serverless::Function")["AggregatesFunction"]["Events"]
    (event,) = events.values()
    props = event["Properties"]
    assert event["Type"] == "DynamoDB"
    assert props["Stream"] == {"Fn::GetAtt": ["UsageTable", "StreamArn"]}
    # bucket deltas are keyed by the batch's records: a retry must be the same batch
    assert "FunctionResponseTypes" not in props
    assert props.get("BisectBatchOnFunctionError", False) is False
    assert props["BatchSize"] >= 1000
    (pattern,) = (f["Pattern"] for f in props["FilterCriteria"]["Filters"])
    assert json.loads(pattern) == {"eventName": ["INSERT"]}


def test_the_digest_function_runs_on_a_schedule_with_its_period_and_grace(
    template: Template,
) -> None:
    function = template.resources("AWS::Serverless::Function")["DigestFunction"]
    assert [event["Type"] for event in function["Events"].values()] == ["Schedule"]
    variables = function["Environment"]["Variables"]
    assert variables["DIGEST_GRACE_SECONDS"] == {"Ref": "DigestGraceSeconds"}
    assert variables["DIGEST_PERIOD_SECONDS"] == {"Ref": "DigestPeriodSeconds"}


_READ_VERBS = ("Get", "Query", "Describe", "List", "BatchGet", "Scan", "Verify")
_WRITE_WORDS = (
    "Put",
    "Update",
    "Delete",
    "BatchWrite",
    "Transact",
    "Create",
    "Restore",
    "Sign",
    "Encrypt",
    "Decrypt",
    "Generate",
    "ReEncrypt",
    "Tag",
)


def test_the_auditor_policy_only_reads_the_ledger_aggregates_digests_and_deployment(
    template: Template,
) -> None:
    grants = _statement_grants(_auditor_statements(template))
    for action, _ in grants:
        verb = action.split(":", 1)[1]
        assert verb.startswith(_READ_VERBS), f"auditors may {action}"
        assert not any(word in verb for word in _WRITE_WORDS), f"auditors may {action}"
    assert {resource for _, resource in grants} == {
        "UsageTable.Arn",
        "AggregatesTable.Arn",
        "${DigestBucket.Arn}/*",
        "DigestBucket.Arn",
        "DigestKey.Arn",
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
        "/tokenbroker/${AWS::StackName}/deployment",
        "${AWS::StackId}",  # cloudformation:DescribeStacks: the CLI checks the parameter
        # Athena over the usage archive: the Glue catalog, read-only
        "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog",
        "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}"
        ":database/${UsageArchiveDatabase}",
        "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}"
        ":table/${UsageArchiveDatabase}/usage",
    }
    assert {a for a, r in grants if r == "UsageTable.Arn"} >= {"dynamodb:BatchGetItem"}
    # the hot tier's time index pages, then the records they name
    assert {a for a, r in grants if r == "AggregatesTable.Arn"} >= {"dynamodb:BatchGetItem"}
    assert {a for a, r in grants if r == "DigestKey.Arn"} == {"kms:Verify", "kms:GetPublicKey"}
    assert {a for a, r in grants if r.startswith("${DigestBucket")} == {
        "s3:GetObject",
        "s3:GetObjectVersion",
    }
    assert {a for a, r in grants if r == "DigestBucket.Arn"} == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
    }
    assert {a for a, r in grants if r.startswith("arn:") and ":ssm:" in r} == {"ssm:GetParameter"}
    assert {a for a, r in grants if r.startswith("arn:") and ":ssm:" not in r} == {
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:GetPartitions",
    }
    assert {a for a, r in grants if r == "${AWS::StackId}"} == {"cloudformation:DescribeStacks"}
    assert {a.split(":")[0] for a, r in grants if "Table" in r} == {"dynamodb"}


def test_the_auditor_policy_names_the_deployment_parameter_it_reads(template: Template) -> None:
    fake = _fake_deployment(template)
    (arn,) = (
        template.resolve(resource, **fake)
        for statement in _auditor_statements(template)
        for resource in _as_list(statement["Resource"])
        if "ssm:GetParameter" in _as_list(statement["Action"])
    )
    name = template.resolve(
        template.resources("AWS::SSM::Parameter")["DeploymentParameter"]["Name"], **fake
    )
    assert arn == f"arn:aws:ssm:eu-west-1:1:parameter{name}"


# ------------------------------------------------------ names the code actually reads


def test_every_environment_variable_is_one_the_code_reads(template: Template) -> None:
    known = set(Settings.env_names().values())
    for function, spec in template.functions().items():
        declared = {
            name for name in spec.environment_template if not name.startswith("POWERTOOLS_")
        }
        assert declared <= known, f"{function} declares {sorted(declared - known)}"


def _fake_deployment(template: Template) -> dict[str, Any]:
    refs = {name: f"physical-{name}" for name in template.document()["Resources"]}
    return {
        "refs": refs,
        "attrs": {(name, "Arn"): f"arn:{name}" for name in refs},
        "pseudo": {"AWS::StackName": "s", "AWS::Region": "eu-west-1", "AWS::AccountId": "1"},
    }


def test_the_deployment_parameter_names_what_the_token_function_uses(template: Template) -> None:
    fake = _fake_deployment(template)
    props = template.resources("AWS::SSM::Parameter")["DeploymentParameter"]
    assert template.resolve(props["Name"], **fake) == "/tokenbroker/s/deployment"
    published = json.loads(template.resolve(props["Value"], **fake))
    assert set(published) == {
        "CLIENTS_TABLE",
        "DEVICES_TABLE",
        "TOKENS_TABLE",
        "IDPS_TABLE",
        "PEOPLE_TABLE",
        "USAGE_TABLE",
        "AGGREGATES_TABLE",
        "QUOTAS_TABLE",
        "SHARING_TABLE",
        "DIGEST_BUCKET",
        "DIGEST_KEY_ID",
        "DIGEST_PERIOD_SECONDS",
        "DIGEST_GRACE_SECONDS",
        "USAGE_HOT_WINDOW_DAYS",
        "SIGNING_KEY_ID",
        "SIGNING_KEY_SLOTS",
        "KEY_SET_PARAMETER",
    }
    assert set(published) <= set(Settings.env_names().values())
    # each published name means what the functions that read it are given
    for function in template.functions():
        environment = template.environment(function, **fake)
        assert {n: published[n] for n in published if n in environment} == {
            n: environment[n] for n in published if n in environment
        }


def test_the_token_function_environment_resolves_to_valid_settings(template: Template) -> None:
    environment = template.environment("TokenFunction", **_fake_deployment(template))
    settings = Settings.from_mapping(environment)
    assert (settings.token_lifetime, settings.proof_max_age, settings.clock_skew) == (300, 60, 5)
    assert settings.audiences == ("urn:tokenbroker:api",)
    assert settings.signing_key_id == "arn:SigningKey"
    assert settings.usage_table == "physical-UsageTable"  # the issuance ledger record
    assert environment["POWERTOOLS_SERVICE_NAME"] == "tokenbroker"


def test_every_function_environment_resolves_to_valid_settings(template: Template) -> None:
    for function in template.functions():
        Settings.from_mapping(template.environment(function, **_fake_deployment(template)))
    digest = Settings.from_mapping(
        template.environment("DigestFunction", **_fake_deployment(template))
    )
    digest.require("usage_table", "digest_bucket", "digest_key_id")
    assert (digest.digest_grace_seconds, digest.digest_period_seconds) == (900, 3600)
    assert digest.digest_key_id == "arn:DigestKey"
    aggregates = Settings.from_mapping(
        template.environment("AggregatesFunction", **_fake_deployment(template))
    )
    aggregates.require("aggregates_table")


# --------------------------------------------------- the SAM-transformed template

_TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform

class NoManagedPolicies:  # the template names no managed policies: nothing to look up
    def load(self):
        return {}

json.dump(transform(json.load(sys.stdin), {}, NoManagedPolicies()), sys.stdout)
"""


def _sam_python() -> str | None:
    sam = os.environ.get("TOKENBROKER_SAM")
    if not sam:
        return None
    python = Path(sam).resolve().parent / "python"
    return str(python) if python.exists() else None


@pytest.fixture(scope="module")
def transformed(template: Template) -> dict[str, Any]:
    """The template as CloudFormation receives it, from samtranslator (in this
    interpreter if installed, else in the SAM CLI's)."""
    document = template.document()
    for resource in document["Resources"].values():  # the translator wants S3 code URIs
        for key in ("CodeUri", "ContentUri"):
            if isinstance(resource.get("Properties", {}).get(key), str):
                resource["Properties"][key] = f"s3://bucket/{resource['Properties'][key]}.zip"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    if importlib.util.find_spec("samtranslator") is not None:
        python = sys.executable
    elif (sam_python := _sam_python()) is not None:
        python = sam_python
    else:
        pytest.skip("needs samtranslator (aws-sam-translator) or TOKENBROKER_SAM")
    result = subprocess.run(
        [python, "-c", _TRANSLATE],
        input=json.dumps(document),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def _of_type(document: dict[str, Any], type_: str) -> dict[str, Any]:
    return {k: v["Properties"] for k, v in document["Resources"].items() if v["Type"] == type_}


def test_sam_builds_arm64_python_functions_with_tracing(transformed: dict[str, Any]) -> None:
    functions = _of_type(transformed, "AWS::Lambda::Function")
    assert {"TokenFunction", "DiscoveryFunction"} <= set(functions)
    for props in functions.values():
        assert (props["Runtime"], props["Architectures"], props["Handler"]) == (
            "python3.13",
            ["arm64"],
            "app.handler",
        )
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert len(props["Layers"]) == 1


def test_sam_builds_the_routes_into_the_rest_api(transformed: dict[str, Any]) -> None:
    body = _of_type(transformed, "AWS::ApiGateway::RestApi")["BrokerApi"]["Body"]
    routes = {(path, method) for path, methods in body["paths"].items() for method in methods}
    assert routes >= {
        ("/oauth2/token", "post"),
        ("/.well-known/oauth-authorization-server", "get"),
        ("/.well-known/jwks.json", "get"),
    }
    (stage,) = _of_type(transformed, "AWS::ApiGateway::Stage").values()
    assert stage["TracingEnabled"] is True
    assert stage["MethodSettings"][0]["ThrottlingRateLimit"] == 100
    assert "AccessLogSetting" in stage


def _failure_queue(resource: Any) -> bool:
    name = resource.get("Fn::GetAtt", [""])[0] if isinstance(resource, dict) else ""
    return name in ("DigestDeadLetterQueue", "UsageStreamFailureQueue")


def test_sam_roles_hold_only_the_inline_statements_and_the_basic_managed_policies(
    transformed: dict[str, Any], template: Template
) -> None:
    roles = _of_type(transformed, "AWS::IAM::Role")
    basic = {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }
    # SAM adds this one for a DynamoDB event source (stream read + logs, on "*")
    stream_reader = "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"
    for function in template.functions():
        role = roles[f"{function}Role"]
        stream_functions = ("AggregatesFunction", "ArchiveFunction")
        allowed = basic | ({stream_reader} if function in stream_functions else set())
        assert set(role["ManagedPolicyArns"]) <= allowed, function
        # SAM adds sqs:SendMessage on the function's own failure queue (DeadLetterQueue,
        # DestinationConfig.OnFailure): nothing else beyond the inline statements
        statements = [
            s
            for p in role.get("Policies", [])
            for s in p["PolicyDocument"]["Statement"]
            if not (s.get("Action") == "sqs:SendMessage" and _failure_queue(s["Resource"]))
        ]
        assert statements == _statements(template, function)


def test_sam_wires_the_stream_with_whole_batches_and_the_insert_filter(
    transformed: dict[str, Any],
) -> None:
    mappings = _of_type(transformed, "AWS::Lambda::EventSourceMapping").values()
    # a DynamoDB stream serves at most two consumers: the aggregates and the archive
    assert sorted(m["FunctionName"]["Ref"] for m in mappings) == [
        "AggregatesFunction",
        "ArchiveFunction",
    ]
    for mapping in mappings:
        assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["UsageTable", "StreamArn"]}
        assert "FunctionResponseTypes" not in mapping
        assert not mapping.get("BisectBatchOnFunctionError")
        (pattern,) = (f["Pattern"] for f in mapping["FilterCriteria"]["Filters"])
        assert json.loads(pattern) == {"eventName": ["INSERT"]}


def test_the_auditor_policy_is_a_managed_policy_attached_to_nothing(
    transformed: dict[str, Any],
) -> None:
    policy = _of_type(transformed, "AWS::IAM::ManagedPolicy")["AuditorPolicy"]
    assert not {"Roles", "Users", "Groups"} & set(policy)  # attached by the account owner


# ----------------------------------------------------------------------- the loader


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("!Ref Stage", {"Ref": "Stage"}),
        ("!Condition IsProd", {"Condition": "IsProd"}),
        ("!GetAtt Table.Arn", {"Fn::GetAtt": ["Table", "Arn"]}),
        ("!GetAtt Db.Endpoint.Address", {"Fn::GetAtt": ["Db", "Endpoint.Address"]}),
        ("!GetAtt [Table, Arn]", {"Fn::GetAtt": ["Table", "Arn"]}),
        ("!Sub 'a-${AWS::Region}'", {"Fn::Sub": "a-${AWS::Region}"}),
        ("!Sub ['${X}', {X: !Ref Y}]", {"Fn::Sub": ["${X}", {"X": {"Ref": "Y"}}]}),
        ("!Join [',', [a, b]]", {"Fn::Join": [",", ["a", "b"]]}),
        ("!Select [0, !Split [',', 'a,b']]", {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}),
        ("!If [C, a, !Ref AWS::NoValue]", {"Fn::If": ["C", "a", {"Ref": "AWS::NoValue"}]}),
        ("!Equals [a, b]", {"Fn::Equals": ["a", "b"]}),
        ("!Not [!Condition C]", {"Fn::Not": [{"Condition": "C"}]}),
        (
            "!And [!Condition A, !Condition B]",
            {"Fn::And": [{"Condition": "A"}, {"Condition": "B"}]},
        ),
        ("!Or [!Condition A, !Condition B]", {"Fn::Or": [{"Condition": "A"}, {"Condition": "B"}]}),
        ("!FindInMap [M, k, v]", {"Fn::FindInMap": ["M", "k", "v"]}),
        ("!Base64 text", {"Fn::Base64": "text"}),
        ("!GetAZs ''", {"Fn::GetAZs": ""}),
        ("!ImportValue shared-vpc", {"Fn::ImportValue": "shared-vpc"}),
    ],
)
def test_short_form_tags_load_as_long_form_intrinsics(yaml_text: str, expected: Any) -> None:
    assert loads(f"value: {yaml_text}\n") == {"value": expected}


def test_loaded_values_are_plain_python_and_dates_stay_text() -> None:
    document = loads("AWSTemplateFormatVersion: 2010-09-09\nResources: {A: {Type: T}}\n")
    assert document["AWSTemplateFormatVersion"] == "2010-09-09"
    assert type(next(iter(document["Resources"]))) is str


def test_duplicate_keys_and_unsupported_globals_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="Duplicate found 'A'"):
        loads("Resources:\n  A: {Type: T}\n  A: {Type: T}\n")
    with pytest.raises(TemplateError, match="FunctionName"):
        _inline("Globals: {Function: {FunctionName: x}}\nResources: {A: {Type: T}}\n", tmp_path)


def test_a_get_att_without_an_attribute_is_rejected() -> None:
    with pytest.raises(TemplateError, match=r"Resource\.Attribute"):
        loads("value: !GetAtt Table\n")


_SMALL = """
Parameters:
  Env: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Size: {Type: Number, Default: 3, MinValue: 1, MaxValue: 5}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  NotProd: !Not [!Condition IsProd]
  Both: !And [!Condition NotProd, !Equals [!Ref Size, 3]]
Mappings:
  Sizes: {dev: {memory: 128}, prod: {memory: 1024}}
Globals:
  Function:
    Runtime: python3.13
    Environment:
      Variables: {SHARED: one, OVERRIDDEN: global}
  Api:
    Auth: {DefaultAuthorizer: GlobalAuth}
Resources:
  Table: {Type: AWS::DynamoDB::Table, Properties: {}}
  Key: {Type: AWS::KMS::Key, Properties: {}}
  Api:
    Type: AWS::Serverless::Api
    Properties: {StageName: v1, Auth: {DefaultAuthorizer: Lambda}}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/fn/
      Handler: app.handler
      Environment:
        Variables:
          OVERRIDDEN: local
          TABLE: !Ref Table
          KEY_ARN: !GetAtt Key.Arn
          SIZE: !Ref Size
          FLAG: true
          OPTIONAL: !If [IsProd, yes-prod, !Ref AWS::NoValue]
      Events:
        Open: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /open, Method: get,
               Auth: {Authorizer: NONE}}}
        Closed: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /closed, Method: post}}
        Own: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /own, Method: any,
              Auth: {Authorizer: Other}}}
        Implicit: {Type: Api, Properties: {Path: /implicit, Method: get}}
        Queue: {Type: SQS, Properties: {Queue: arn}}
"""

_REFS = {"Table": "tbl", "Key": "key-id"}
_ATTRS = {("Table", "Arn"): "arn:table", ("Key", "Arn"): "arn:key"}
_PSEUDO = {"AWS::Region": "eu-west-1", "AWS::StackName": "stk", "AWS::AccountId": "111"}


@pytest.fixture
def small(tmp_path: Path) -> Template:
    return _inline(_SMALL, tmp_path)


def test_environment_merges_globals_and_resolves_every_value_to_text(small: Template) -> None:
    assert small.environment("Fn", _REFS, _ATTRS) == {
        "SHARED": "one",
        "OVERRIDDEN": "local",
        "TABLE": "tbl",
        "KEY_ARN": "arn:key",
        "SIZE": "3",
        "FLAG": "true",
    }


def test_environment_applies_parameter_overrides_and_conditions(small: Template) -> None:
    environment = small.environment("Fn", _REFS, _ATTRS, parameters={"Env": "prod", "Size": "5"})
    assert (environment["SIZE"], environment["OPTIONAL"]) == ("5", "yes-prod")


def test_a_resource_without_a_physical_id_is_a_key_error_naming_it(small: Template) -> None:
    with pytest.raises(KeyError, match="Table"):
        small.environment("Fn", {"Key": "key-id"}, _ATTRS)
    with pytest.raises(UnresolvedReference, match=r"Key\.Arn"):
        small.environment("Fn", _REFS, {})


def test_overrides_are_checked_against_the_parameter_constraints(small: Template) -> None:
    with pytest.raises(TemplateError, match="not one of"):
        small.parameter_values({"Env": "test"})
    with pytest.raises(TemplateError, match="MaxValue"):
        small.parameter_values({"Size": "6"})
    with pytest.raises(TemplateError, match="unknown parameter"):
        small.parameter_values({"Nope": "x"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"Fn::Sub": "${AWS::StackName}-${AWS::Region}-${Table}"}, "stk-eu-west-1-tbl"),
        (
            {"Fn::Sub": "${Key.Arn}/${AWS::URLSuffix}/${!Literal}"},
            "arn:key/amazonaws.com/${Literal}",
        ),
        ({"Fn::Sub": ["${A}-${Env}", {"A": {"Ref": "AWS::AccountId"}}]}, "111-dev"),
        ({"Fn::Join": ["/", ["a", {"Ref": "Table"}, {"Ref": "Size"}]]}, "a/tbl/3"),
        ({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}, "y"),
        ({"Fn::Select": ["2", {"Ref": "Names"}]}, "c"),
        ({"Fn::Join": ["", {"Ref": "Names"}]}, "abc"),
        ({"Fn::If": ["IsProd", "p", "d"]}, "d"),
        ({"Fn::If": ["Both", "both", "neither"]}, "both"),
        ({"Fn::Or": [{"Condition": "IsProd"}, {"Fn::Equals": ["a", "a"]}]}, True),
        ({"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "memory"]}, 128),
        ({"Fn::Base64": {"Ref": "Env"}}, base64.b64encode(b"dev").decode()),
        ({"k": {"Ref": "AWS::NoValue"}, "l": [1, {"Ref": "AWS::NoValue"}]}, {"l": [1]}),
        ({"Ref": "AWS::Partition"}, "aws"),
    ],
)
def test_intrinsics_resolve_like_cloudformation(small: Template, value: Any, expected: Any) -> None:
    assert small.resolve(value, _REFS, _ATTRS, pseudo=_PSEUDO) == expected


@pytest.mark.parametrize(
    "value",
    [{"Fn::ImportValue": "x"}, {"Fn::GetAZs": ""}, {"Ref": "Missing"}, {"Ref": "AWS::AccountId"}],
)
def test_what_cannot_be_known_locally_is_an_error_not_a_guess(small: Template, value: Any) -> None:
    with pytest.raises(TemplateError):
        small.resolve(value, _REFS, _ATTRS)


def test_routes_take_the_event_authorizer_else_the_api_default(small: Template) -> None:
    assert small.routes() == [
        Route("GET", "/open", "Fn", "Api", None),
        Route("POST", "/closed", "Fn", "Api", "Lambda"),
        Route("ANY", "/own", "Fn", "Api", "Other"),
        Route("GET", "/implicit", "Fn", "ServerlessRestApi", "GlobalAuth"),
    ]


def test_function_specs_carry_absolute_code_paths(small: Template, tmp_path: Path) -> None:
    spec = small.functions()["Fn"]
    assert spec.code_uri == (tmp_path / "code" / "fn").resolve()
    assert spec.handler == "app.handler"
    assert spec.environment_template["TABLE"] == {"Ref": "Table"}
    assert [route.path for route in spec.events] == ["/open", "/closed", "/own", "/implicit"]


def test_accessors_return_copies_so_the_template_cannot_drift(small: Template) -> None:
    small.resources("AWS::Serverless::Function")["Fn"]["Handler"] = "changed"
    small.document()["Resources"].clear()
    assert small.functions()["Fn"].handler == "app.handler"


_TABLE = """
Resources:
  Events:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: fixed-name
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: g
          KeySchema: [{AttributeName: pk, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
          ContributorInsightsSpecification: {Enabled: true}
      StreamSpecification: {StreamViewType: NEW_IMAGE}
      SSESpecification: {SSEEnabled: true, SSEType: KMS}
      PointInTimeRecoverySpecification: {PointInTimeRecoveryEnabled: true}
      TimeToLiveSpecification: {AttributeName: expires, Enabled: true}
      DeletionProtectionEnabled: true
      Tags: [{Key: a, Value: b}]
"""


def test_table_properties_become_create_table_arguments(tmp_path: Path) -> None:
    template = _inline(_TABLE, tmp_path)
    assert template.create_table_kwargs("Events", "stk-Events") == {
        "TableName": "stk-Events",
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "g",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        "SSESpecification": {"Enabled": True, "SSEType": "KMS"},
    }
    assert template.ttl_attribute("Events") == "expires"
    assert template.point_in_time_recovery("Events") is True


def test_an_unknown_table_property_fails_loudly(tmp_path: Path) -> None:
    template = _inline(_TABLE.replace("Tags:", "SomethingNew: 1\n      Tags:"), tmp_path)
    with pytest.raises(TemplateError, match="SomethingNew"):
        template.create_table_kwargs("Events", "t")


def test_the_template_is_found_by_walking_up_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "template.yaml").write_text(_TABLE, encoding="utf-8")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert find_template() == (tmp_path / "template.yaml").resolve()
    assert set(load_template().tables()) == {"Events"}


def test_without_a_local_template_the_checkout_one_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_template() == TEMPLATE


# ------------------------------------------------------------- the edge (authorizer)


def test_protected_routes_use_the_dpop_authorizer_and_public_ones_none(
    template: Template,
) -> None:
    routes = {(r.method, r.path): r for r in template.routes()}
    assert routes[("GET", "/v1/whoami")].auth == "DpopAuthorizer"
    assert routes[("POST", "/v1/models/{model}/invoke")].auth == "DpopAuthorizer"
    for public in (
        ("POST", "/oauth2/token"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("GET", "/.well-known/jwks.json"),
    ):
        assert routes[public].auth is None


def test_every_protected_route_has_a_required_scope_and_no_scope_names_a_missing_route(
    template: Template,
) -> None:
    environment = template.environment("AuthorizerFunction", **_fake_deployment(template))
    scopes = json.loads(environment["ROUTE_SCOPES"])
    protected = {f"{r.method} {r.path}" for r in template.routes() if r.auth}
    assert set(scopes) == protected
    assert scopes["POST /v1/models/{model}/invoke"] == "model:{model}:invoke"


def test_the_authorizer_environment_resolves_to_valid_settings(template: Template) -> None:
    environment = template.environment("AuthorizerFunction", **_fake_deployment(template))
    settings = Settings.from_mapping(environment)
    assert settings.audience == "urn:tokenbroker:api"
    assert settings.usage_retention_days == 400
    assert dict(settings.route_scopes)["GET /v1/whoami"] == ""


def test_the_authorizer_may_only_check_liveness_record_usage_and_read_the_key(
    template: Template,
) -> None:
    assert _grants(template, "AuthorizerFunction") == {
        ("dynamodb:BatchGetItem", "ClientsTable.Arn"),
        ("dynamodb:BatchGetItem", "DevicesTable.Arn"),
        ("dynamodb:PutItem", "UsageTable.Arn"),
        ("kms:GetPublicKey", "SigningKey.Arn"),
        ("kms:GetPublicKey", "SigningKeyB.Arn"),
        ("ssm:GetParameter", KEY_SET_ARN),
        ("secretsmanager:GetSecretValue", "DpopNonceSecret"),
        # quotas: the rules ride in the liveness read (Query of the client's rule#
        # partition: its fallback, and the read of both formats before the migration)
        # and one conditional UpdateItem per lease
        ("dynamodb:BatchGetItem", "QuotasTable.Arn"),
        ("dynamodb:Query", "QuotasTable.Arn"),
        ("dynamodb:UpdateItem", "QuotasTable.Arn"),
    }


def test_the_sample_protected_functions_have_no_aws_permissions(template: Template) -> None:
    assert _grants(template, "WhoamiFunction") == set()
    # report_usage alone: a units report and the counter's units, on the quota table
    assert _grants(template, "ModelInvokeFunction") == {
        ("dynamodb:PutItem", "QuotasTable.Arn"),
        ("dynamodb:UpdateItem", "QuotasTable.Arn"),
        # the report's ledger event (services/quotas.py::UnitsReporter)
        ("dynamodb:PutItem", "UsageTable.Arn"),
    }


def test_authorizer_caching_is_off_in_the_transformed_template(
    transformed: dict[str, Any],
) -> None:
    """The SAM default (300 s) would answer a replayed proof from API Gateway's cache
    without running the replay check."""
    authorizers = {
        k: v["Properties"]
        for k, v in transformed["Resources"].items()
        if v["Type"] == "AWS::ApiGateway::Authorizer"
    }
    body = _of_type(transformed, "AWS::ApiGateway::RestApi")["BrokerApi"]["Body"]
    schemes = body.get("components", {}).get("securitySchemes", {})
    ttls = [s["x-amazon-apigateway-authorizer"] for s in schemes.values()]
    ttls += list(authorizers.values())
    assert ttls, "the transformed template declares no authorizer"
    for authorizer in ttls:
        assert (
            authorizer.get(
                "authorizerResultTtlInSeconds", authorizer.get("AuthorizerResultTtlInSeconds")
            )
            == 0
        )
        assert authorizer.get("type", authorizer.get("Type", "")).lower() == "request"


def test_gateway_responses_carry_dpop_challenges(template: Template) -> None:
    api = template.resources("AWS::Serverless::Api")["BrokerApi"]
    responses = api.get("GatewayResponses") or {}
    # both are standalone (an intrinsic header value, a conditional status)
    assert "ACCESS_DENIED" not in responses
    assert "UNAUTHORIZED" not in responses
    standalone = template.resources("AWS::ApiGateway::GatewayResponse")
    access_denied = standalone["AccessDeniedGatewayResponse"]
    params = access_denied["ResponseParameters"]
    # the authorizer's Deny context carries the challenge and, for nonces, the nonce
    assert params["gatewayresponse.header.WWW-Authenticate"] == "context.authorizer.challenge"
    assert params["gatewayresponse.header.DPoP-Nonce"] == "context.authorizer.dpop_nonce"
    assert access_denied["StatusCode"] == {"Fn::If": ["NoncesAtResources", "401", "403"]}
    unauthorized = standalone["UnauthorizedGatewayResponse"]
    assert unauthorized["ResponseType"] == "UNAUTHORIZED"
    assert unauthorized["RestApiId"] == {"Ref": "BrokerApi"}
    params = unauthorized["ResponseParameters"]
    assert params["gatewayresponse.header.Cache-Control"] == "'no-store'"
    # RFC 9728 §5.1 on API Gateway's own 401 (no Authorization header): the configured
    # metadata URL, else beside IssuerUrl, else beside this API's URL (the ApiUrl output)
    condition, derived, configured = params["gatewayresponse.header.WWW-Authenticate"]["Fn::If"]
    assert condition == "ResourceMetadataUrlIsDerived"
    by_api, by_issuer = derived["Fn::If"][1:]
    assert derived["Fn::If"][0] == "IssuerIsDerived"
    api_url = template.document()["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"]
    expected = {
        by_api["Fn::Sub"]: f"{api_url}/.well-known/oauth-protected-resource",
        by_issuer["Fn::Sub"]: "${IssuerUrl}/.well-known/oauth-protected-resource",
        configured["Fn::Sub"]: "${ResourceMetadataUrl}",
    }
    for value, url in expected.items():
        assert value == (
            f'\'DPoP error="invalid_token", algs="ES256 ES384 EdDSA", resource_metadata="{url}"\''
        )


def _string_like(pattern: str, value: str) -> bool:
    """IAM's StringLike: ``*`` any run of characters, ``?`` any one, case-sensitive."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def test_the_archive_function_may_put_only_time_index_pages_in_the_aggregates_table(
    resources: dict[str, Any],
) -> None:
    """``dynamodb:LeadingKeys`` is the partition key of the item put: every key the index
    writer uses matches, an aggregate's (``P#<principal>``) or any other does not."""
    from tokenbroker.adapters.archive_index import directory_key, page_key

    statements = resources["ArchiveFunction"]["Properties"]["Policies"][0]["Statement"]
    [put] = [s for s in statements if "dynamodb:PutItem" in _as_list(s["Action"])]
    assert put["Resource"] == {"Fn::GetAtt": ["AggregatesTable", "Arn"]}
    # ForAllValues: every leading key of the request must match one pattern
    # (a PutItem always has exactly one: the item's partition key)
    [(operator, condition)] = put["Condition"].items()
    assert operator == "ForAllValues:StringLike"
    patterns = _as_list(condition["dynamodb:LeadingKeys"])

    def allowed(key: str) -> bool:
        return any(_string_like(p, key) for p in patterns)

    hours = ["2026-11-27T04", "2027-01-01T00", "2026-12-31T23"]
    written = [directory_key(h) for h in hours] + [
        page_key(h, f"{n:021d}-abc") for h in hours for n in range(50)
    ]
    assert all(allowed(key) for key in written)
    for other in ["P#alice", "P#IX#x", "ix#2026-11", "XIX#2026-11", "IX", "Q#IXP#1", ""]:
        assert not allowed(other), other
