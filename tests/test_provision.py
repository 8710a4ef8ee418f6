"""The real template.yaml, provisioned into moto: what the local stack and tests run on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from moto import mock_aws

from tokenbroker.local.provision import SERVICES, Deployment, provision
from tokenbroker.local.template import Template, TemplateError, load_template
from tokenbroker.settings import Settings

STACK = "tb-test"
REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        yield {
            name: boto3.client(name, region_name=REGION)
            for name in ("dynamodb", "kms", "ssm", "s3")
        }


@pytest.fixture
def deployment(template: Template, aws: dict[str, Any]) -> Deployment:
    return provision(template, session_or_clients=aws, stack_name=STACK, region=REGION)


def _key_schema(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def test_every_template_table_exists_with_its_key_schema_and_indexes(
    template: Template, aws: dict[str, Any], deployment: Deployment
) -> None:
    for logical_id, props in template.tables().items():
        name = f"{STACK}-{logical_id}"
        assert deployment.refs[logical_id] == name
        table = aws["dynamodb"].describe_table(TableName=name)["Table"]
        assert deployment.attrs[(logical_id, "Arn")] == table["TableArn"]
        assert _key_schema(table["KeySchema"]) == _key_schema(props["KeySchema"])
        assert {
            (d["AttributeName"], d["AttributeType"]) for d in table["AttributeDefinitions"]
        } == {(d["AttributeName"], d["AttributeType"]) for d in props["AttributeDefinitions"]}
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["SSEDescription"]["Status"] == "ENABLED"
        actual = {
            index["IndexName"]: (_key_schema(index["KeySchema"]), index["Projection"])
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        assert actual == {
            index["IndexName"]: (_key_schema(index["KeySchema"]), index["Projection"])
            for index in props.get("GlobalSecondaryIndexes", [])
        }


def test_ttl_and_point_in_time_recovery_are_on_where_the_template_says(
    template: Template, aws: dict[str, Any], deployment: Deployment
) -> None:
    ddb = aws["dynamodb"]
    for logical_id in template.tables():
        name = deployment.refs[logical_id]
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        expected = template.ttl_attribute(logical_id)
        if expected is None:
            assert ttl["TimeToLiveStatus"] == "DISABLED", logical_id
        else:
            assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", expected)
        backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        pitr = backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
        assert pitr == "ENABLED", logical_id


@pytest.mark.parametrize(
    ("logical_id", "description"),
    [
        ("SigningKey", f"{STACK}: ES256 access token signing key"),
        ("DigestKey", f"{STACK}: usage ledger digest signing key"),
    ],
)
def test_the_signing_keys_are_p256_and_sign_raw_messages(
    aws: dict[str, Any], deployment: Deployment, logical_id: str, description: str
) -> None:
    kms = aws["kms"]
    key_id = deployment.refs[logical_id]
    metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    assert metadata["Arn"] == deployment.attrs[(logical_id, "Arn")]
    assert metadata["Description"] == description
    message = b"header.payload"
    signature = kms.sign(
        KeyId=metadata["Arn"],
        Message=message,
        MessageType="RAW",
        SigningAlgorithm="ECDSA_SHA_256",
    )["Signature"]
    public_key = load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # raises if wrong


def test_the_signing_key_alias_points_at_the_key(
    aws: dict[str, Any], deployment: Deployment
) -> None:
    alias = f"alias/{STACK}-signing"
    assert deployment.refs["SigningKeyAlias"] == alias
    assert (
        aws["kms"].describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
        == (deployment.refs["SigningKey"])
    )


def test_the_deployment_parameter_names_the_real_tables_and_key(
    aws: dict[str, Any], deployment: Deployment
) -> None:
    name = f"/tokenbroker/{STACK}/deployment"
    assert deployment.refs["DeploymentParameter"] == name
    published = json.loads(aws["ssm"].get_parameter(Name=name)["Parameter"]["Value"])
    assert published == {
        "CLIENTS_TABLE": f"{STACK}-ClientsTable",
        "DEVICES_TABLE": f"{STACK}-DevicesTable",
        "TOKENS_TABLE": f"{STACK}-TokensTable",
        "IDPS_TABLE": f"{STACK}-IdpsTable",
        "PEOPLE_TABLE": f"{STACK}-PeopleTable",
        "USAGE_TABLE": f"{STACK}-UsageTable",
        "AGGREGATES_TABLE": f"{STACK}-AggregatesTable",
        "SHARING_TABLE": f"{STACK}-SharingTable",
        "QUOTAS_TABLE": f"{STACK}-QuotasTable",
        "USAGE_HOT_WINDOW_DAYS": "30",
        "DIGEST_BUCKET": f"{STACK}-digestbucket",
        "DIGEST_KEY_ID": deployment.attrs[("DigestKey", "Arn")],
        "DIGEST_PERIOD_SECONDS": "3600",
        "DIGEST_GRACE_SECONDS": "900",
        "SIGNING_KEY_ID": deployment.attrs[("SigningKey", "Arn")],
        "SIGNING_KEY_SLOTS": ",".join(
            deployment.attrs[(key, "Arn")] for key in ("SigningKey", "SigningKeyB")
        ),
        "KEY_SET_PARAMETER": f"/tokenbroker/{STACK}/signing-keys",
    }
    for table in (
        "CLIENTS_TABLE",
        "DEVICES_TABLE",
        "TOKENS_TABLE",
        "USAGE_TABLE",
        "AGGREGATES_TABLE",
    ):
        aws["dynamodb"].describe_table(TableName=published[table])  # exists
    aws["s3"].head_bucket(Bucket=published["DIGEST_BUCKET"])  # exists
    Settings.from_mapping(published).require(
        "clients_table", "usage_table", "aggregates_table", "digest_bucket", "digest_key_id"
    )


def test_the_usage_table_has_its_stream_and_the_aggregates_event_source_resolves_to_it(
    template: Template, aws: dict[str, Any], deployment: Deployment
) -> None:
    table = aws["dynamodb"].describe_table(TableName=f"{STACK}-UsageTable")["Table"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert deployment.attrs[("UsageTable", "StreamArn")] == table["LatestStreamArn"]
    function = template.resources("AWS::Serverless::Function")["AggregatesFunction"]
    (event,) = function["Events"].values()
    assert deployment.resolve(event["Properties"]["Stream"]) == table["LatestStreamArn"]
    streams = aws["dynamodb"].describe_table(TableName=f"{STACK}-AggregatesTable")["Table"]
    assert "LatestStreamArn" not in streams
    assert ("AggregatesTable", "StreamArn") not in deployment.attrs


def test_the_digest_bucket_is_created_private_versioned_and_encrypted(
    aws: dict[str, Any], deployment: Deployment
) -> None:
    s3 = aws["s3"]
    name = f"{STACK}-digestbucket"
    assert deployment.refs["DigestBucket"] == name
    assert deployment.attrs[("DigestBucket", "Arn")] == f"arn:aws:s3:::{name}"
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
    }
    # the digest function's resolved policy resources name this bucket
    assert deployment.resolve({"Fn::Sub": "${DigestBucket.Arn}/*"}) == f"arn:aws:s3:::{name}/*"


def test_the_digest_function_can_write_and_sign_with_what_was_provisioned(
    aws: dict[str, Any], deployment: Deployment
) -> None:
    settings = Settings.from_mapping(deployment.environment("DigestFunction"))
    aws["s3"].put_object(Bucket=settings.digest_bucket, Key="digests/x.json", Body=b"{}")
    signature = aws["kms"].sign(
        KeyId=settings.digest_key_id,
        Message=b"digest",
        MessageType="RAW",
        SigningAlgorithm="ECDSA_SHA_256",
    )["Signature"]
    assert aws["kms"].verify(
        KeyId=settings.digest_key_id,
        Message=b"digest",
        MessageType="RAW",
        Signature=signature,
        SigningAlgorithm="ECDSA_SHA_256",
    )["SignatureValid"]


def test_every_function_environment_resolves_to_valid_settings(
    template: Template, deployment: Deployment
) -> None:
    environments = {function: deployment.environment(function) for function in template.functions()}
    assert {"AggregatesFunction", "DigestFunction"} <= set(environments)
    for environment in environments.values():
        Settings.from_mapping(environment)
    aggregates = Settings.from_mapping(environments["AggregatesFunction"])
    assert aggregates.aggregates_table == f"{STACK}-AggregatesTable"
    digest = Settings.from_mapping(environments["DigestFunction"])
    assert (digest.usage_table, digest.digest_bucket, digest.digest_key_id) == (
        f"{STACK}-UsageTable",
        f"{STACK}-digestbucket",
        deployment.attrs[("DigestKey", "Arn")],
    )
    assert (digest.digest_grace_seconds, digest.digest_period_seconds) == (900, 3600)
    token = Settings.from_mapping(environments["TokenFunction"])
    assert token.usage_table == f"{STACK}-UsageTable"  # the issuance ledger record


def test_the_token_function_environment_has_the_provisioned_names(
    deployment: Deployment,
) -> None:
    environment = deployment.environment("TokenFunction")
    assert environment["CLIENTS_TABLE"] == f"{STACK}-ClientsTable"
    assert environment["DEVICES_TABLE"] == f"{STACK}-DevicesTable"
    assert environment["TOKENS_TABLE"] == f"{STACK}-TokensTable"
    assert environment["SIGNING_KEY_ID"] == deployment.attrs[("SigningKey", "Arn")]
    settings = Settings.from_mapping(environment)
    settings.require("clients_table", "devices_table", "tokens_table", "signing_key_id")
    assert settings.token_lifetime == 300


def test_the_discovery_function_environment_points_at_the_same_key(
    deployment: Deployment,
) -> None:
    environment = deployment.environment("DiscoveryFunction")
    assert (
        environment["SIGNING_KEY_ID"] == deployment.environment("TokenFunction")["SIGNING_KEY_ID"]
    )
    assert (environment["TOKEN_ENDPOINT_PATH"], environment["JWKS_PATH"]) == (
        "/oauth2/token",
        "/.well-known/jwks.json",
    )


def test_parameter_overrides_reach_the_environment(template: Template, aws: dict[str, Any]) -> None:
    deployment = provision(
        template,
        session_or_clients=aws,
        stack_name=STACK,
        region=REGION,
        parameters={
            "TokenLifetimeSeconds": "600",
            "LogLevel": "DEBUG",
            "DigestPeriodSeconds": "300",
        },
    )
    environment = deployment.environment("TokenFunction")
    assert (environment["TOKEN_LIFETIME_SECONDS"], environment["POWERTOOLS_LOG_LEVEL"]) == (
        "600",
        "DEBUG",
    )
    assert deployment.environment("DigestFunction")["DIGEST_PERIOD_SECONDS"] == "300"


def test_an_invalid_override_creates_nothing(template: Template, aws: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match="MaxValue"):
        provision(
            template,
            session_or_clients=aws,
            stack_name=STACK,
            region=REGION,
            parameters={"TokenLifetimeSeconds": "3600"},
        )
    assert aws["dynamodb"].list_tables()["TableNames"] == []
    assert aws["s3"].list_buckets()["Buckets"] == []


def test_a_boto3_session_works_as_well_as_clients(template: Template) -> None:
    with mock_aws():
        deployment = provision(
            template, session_or_clients=boto3.Session(), stack_name="other", region="eu-west-1"
        )
        assert deployment.attrs[("ClientsTable", "Arn")].startswith("arn:aws:dynamodb:eu-west-1:")
        assert deployment.pseudo["AWS::AccountId"] == deployment.account_id
        tables = boto3.client("dynamodb", region_name="eu-west-1").list_tables()["TableNames"]
        assert sorted(tables) == [
            "other-AggregatesTable",
            "other-ClientsTable",
            "other-DevicesTable",
            "other-IdpsTable",
            "other-PeopleTable",
            "other-QuotasTable",
            "other-RefreshTokensTable",
            "other-SharingTable",
            "other-TokensTable",
            "other-UsageTable",
        ]
        buckets = boto3.client("s3", region_name="eu-west-1").list_buckets()["Buckets"]
        assert [b["Name"] for b in buckets] == ["other-digestbucket"]
        location = boto3.client("s3", region_name="eu-west-1").get_bucket_location(
            Bucket="other-digestbucket"
        )
        assert location["LocationConstraint"] == "eu-west-1"


def test_clients_without_s3_get_one_on_the_same_backend(template: Template) -> None:
    """The local stack and older callers pass only the dynamodb, kms and ssm clients."""
    with mock_aws():
        clients = {name: boto3.client(name, region_name=REGION) for name in SERVICES}
        deployment = provision(
            template, session_or_clients=clients, stack_name=STACK, region=REGION
        )
        s3 = boto3.client("s3", region_name=REGION)
        s3.head_bucket(Bucket=deployment.refs["DigestBucket"])


@pytest.mark.parametrize(
    "stack_name",
    ["Upper-Case-Stack", "s" + "-x" * 60, "a" * 128, "ends-with-hyphen-"],
)
def test_bucket_names_are_valid_for_s3_whatever_the_stack_name(
    template: Template, aws: dict[str, Any], stack_name: str
) -> None:
    deployment = provision(template, session_or_clients=aws, stack_name=stack_name, region=REGION)
    name = deployment.refs["DigestBucket"]
    assert 3 <= len(name) <= 63
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name), name
    assert name.startswith(stack_name.lower()[:20])
    aws["s3"].head_bucket(Bucket=name)


def test_functions_and_the_api_are_left_to_the_local_stack(deployment: Deployment) -> None:
    assert {
        "TokenFunction",
        "DiscoveryFunction",
        "AggregatesFunction",
        "DigestFunction",
        "BrokerApi",
        "SharedLayer",
        "AuditorPolicy",  # IAM: nothing local evaluates it
    } <= set(deployment.skipped)
    assert "TokenFunction" not in deployment.refs
    assert "AuditorPolicy" not in deployment.refs


def test_a_stack_name_cloudformation_would_reject_is_rejected(
    template: Template, aws: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="stack name"):
        provision(template, session_or_clients=aws, stack_name="bad_name", region=REGION)
