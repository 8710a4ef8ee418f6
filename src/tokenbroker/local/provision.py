"""Build template.yaml's stateful resources with boto3, on moto or any AWS endpoint.

Why not deploy the template into moto's CloudFormation: moto ignores TTL and PITR on
tables, builds every KMS key as a symmetric key, and skips ``AWS::Serverless::*``. So the
tables (with their streams), keys, aliases, S3 buckets and SSM parameters are created here
from their ``Properties``, and the functions' environments are resolved from the template
against what was created. Everything else (functions, the API, the layer, log groups, IAM
policies: nothing local evaluates IAM) is the local stack's job or has no local meaning,
and is skipped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenbroker.local.template import DYNAMODB_TABLE, S3_BUCKET, Template, TemplateError

KMS_KEY = "AWS::KMS::Key"
KMS_ALIAS = "AWS::KMS::Alias"
SSM_PARAMETER = "AWS::SSM::Parameter"
SECRET = "AWS::SecretsManager::Secret"
PROVISIONED_TYPES = frozenset(
    {DYNAMODB_TABLE, KMS_KEY, KMS_ALIAS, S3_BUCKET, SSM_PARAMETER, SECRET}
)
#: the clients a mapping must hold; ``s3`` may be left out (see ``_clients``)
SERVICES = ("dynamodb", "kms", "ssm")
ALL_SERVICES = (*SERVICES, "s3")

_STACK_NAME = re.compile(r"[A-Za-z][-A-Za-z0-9]{0,127}")
# what an endpoint answers for an operation it does not implement
_UNSUPPORTED = frozenset({"UnknownOperationException", "NotImplemented", "InvalidAction"})


@dataclass(frozen=True)
class Deployment:
    """What was created: ``refs`` maps logical id -> physical id (what ``Ref`` returns:
    table name, KMS key id, alias name, bucket name, parameter name); ``attrs`` maps
    (logical id, attribute) -> value (``Arn`` of tables, keys and buckets, ``StreamArn``
    of tables with a stream, ``KeyId`` of keys, ``DomainName`` and
    ``RegionalDomainName`` of buckets)."""

    template: Template = field(repr=False)
    stack_name: str
    region: str
    #: from the ARNs the services returned (None if nothing with an ARN was created)
    account_id: str | None
    refs: Mapping[str, str]
    attrs: Mapping[tuple[str, str], str]
    parameters: Mapping[str, str] = field(default_factory=dict)
    #: resources of other types, left to the local stack (or meaningless locally)
    skipped: tuple[str, ...] = ()

    @property
    def pseudo(self) -> dict[str, str]:
        return _pseudo(self.stack_name, self.region, self.account_id)

    def resolve(self, value: Any) -> Any:
        """``value`` with intrinsics resolved against this deployment."""
        return self.template.resolve(value, self.refs, self.attrs, self.parameters, self.pseudo)

    def environment(self, function_logical_id: str) -> dict[str, str]:
        """The environment variables the function gets in this deployment."""
        return self.template.environment(
            function_logical_id, self.refs, self.attrs, self.parameters, self.pseudo
        )


def provision(
    template: Template,
    *,
    session_or_clients: Any,
    stack_name: str,
    region: str,
    parameters: Mapping[str, str] | None = None,
) -> Deployment:
    """Create the template's tables, KMS keys and aliases, S3 buckets and SSM parameters.

    ``session_or_clients`` is a boto3 ``Session`` or a mapping with ``dynamodb``, ``kms``,
    ``ssm`` (and ``s3``) clients, already pointed at moto (``mock_aws()`` or a moto
    server) or another endpoint; without ``s3`` one is made on the ``dynamodb`` client's
    endpoint and credentials. Tables are named ``{stack_name}-{LogicalId}``, buckets the
    same lower-cased (and shortened to S3's 63 characters with a hash if need be). Not
    idempotent: a second run against the same backend fails on the existing tables.
    """
    if not _STACK_NAME.fullmatch(stack_name):
        raise ValueError(f"invalid stack name {stack_name!r}")
    clients = _clients(session_or_clients, region)
    parameter_values = template.parameter_values(parameters)
    refs: dict[str, str] = {}
    attrs: dict[tuple[str, str], str] = {}
    account: list[str] = []  # known from the first ARN a service returns

    def resolve(value: Any) -> Any:
        pseudo = _pseudo(stack_name, region, account[0] if account else None)
        return template.resolve(value, refs, attrs, parameter_values, pseudo)

    def created(logical_id: str, physical_id: str, arn: str | None = None) -> None:
        refs[logical_id] = physical_id
        if arn is not None:
            attrs[(logical_id, "Arn")] = arn
            if not account and arn.split(":")[4]:  # S3 ARNs name no account
                account.append(arn.split(":")[4])

    ddb, kms, ssm, s3 = (clients[name] for name in ALL_SERVICES)
    for logical_id in template.tables():
        name = f"{stack_name}-{logical_id}"
        kwargs = template.create_table_kwargs(logical_id, name)
        table = ddb.create_table(**kwargs)
        created(logical_id, name, table["TableDescription"]["TableArn"])
        if kwargs.get("StreamSpecification", {}).get("StreamEnabled"):
            description = ddb.describe_table(TableName=name)["Table"]
            if not description.get("LatestStreamArn"):
                raise TemplateError(f"{logical_id}: the table was created without its stream")
            attrs[(logical_id, "StreamArn")] = description["LatestStreamArn"]
        if attribute := template.ttl_attribute(logical_id):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": attribute, "Enabled": True},
            )
        if template.point_in_time_recovery(logical_id):
            _if_supported(
                ddb,
                ddb.update_continuous_backups,
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )

    if "QuotasTable" in refs:
        # A table created just now holds no quota rule of the previous format: mark it
        # migrated, as `tokenbroker quotas migrate` would (it finds nothing to move).
        from tokenbroker.adapters.quota_rules import DynamoQuotaRules

        DynamoQuotaRules(ddb, table=refs["QuotasTable"]).mark_migrated(0)

    for logical_id, props in template.resources(KMS_KEY).items():
        # The key policy is not applied: nothing local evaluates IAM, and the template's
        # policy is the default one (the account root, so IAM policies decide).
        kwargs = {
            "KeySpec": str(resolve(props.get("KeySpec", "SYMMETRIC_DEFAULT"))),
            "KeyUsage": str(resolve(props.get("KeyUsage", "ENCRYPT_DECRYPT"))),
        }
        if "Description" in props:
            kwargs["Description"] = str(resolve(props["Description"]))
        key = kms.create_key(**kwargs)["KeyMetadata"]
        created(logical_id, key["KeyId"], key["Arn"])
        attrs[(logical_id, "KeyId")] = key["KeyId"]

    for logical_id, props in template.resources(KMS_ALIAS).items():
        alias = str(resolve(props["AliasName"]))
        kms.create_alias(AliasName=alias, TargetKeyId=str(resolve(props["TargetKeyId"])))
        created(logical_id, alias)

    for logical_id in template.resources(S3_BUCKET):
        name = template.bucket_name(logical_id, _bucket_name(stack_name, logical_id))
        for operation, kwargs in template.bucket_requests(logical_id, name, region):
            if operation == "create_bucket":
                s3.create_bucket(**kwargs)
            else:  # configuration an endpoint may lack: best effort, as moto allows
                _if_supported(s3, getattr(s3, operation), **kwargs)
        created(logical_id, name, f"arn:aws:s3:::{name}")
        attrs[(logical_id, "DomainName")] = f"{name}.s3.amazonaws.com"
        attrs[(logical_id, "RegionalDomainName")] = f"{name}.s3.{region}.amazonaws.com"

    for logical_id, props in template.resources(SSM_PARAMETER).items():
        if "Name" not in props:
            raise TemplateError(f"{logical_id}: an SSM parameter needs a Name to be found")
        kwargs = {k: str(resolve(v)) for k, v in props.items() if k in _SSM_PASSED}
        ssm.put_parameter(**kwargs)
        created(logical_id, kwargs["Name"])

    # Secrets (the DPoP nonce secret): a random value, as GenerateSecretString makes one
    secrets_client = None
    for logical_id, props in template.resources(SECRET).items():
        if secrets_client is None:
            secrets_client = clients.get("secretsmanager") or _s3_like(
                ddb, region, "secretsmanager"
            )
        arn = _create_secret(secrets_client, f"{stack_name}-{logical_id}", props, resolve)
        created(logical_id, arn, arn)  # Ref of a secret is its ARN

    # Queues are only named locally (the stream's OnFailure destination, the digest
    # function's DLQ): their ARNs resolve, but nothing local sends to them.
    for logical_id in template.resources("AWS::SQS::Queue"):
        name = f"{stack_name}-{logical_id}"
        arn = f"arn:aws:sqs:{region}:{account[0] if account else '000000000000'}:{name}"
        refs[logical_id], attrs[(logical_id, "Arn")] = name, arn

    # SNS topics (the sharing alerts): created on the same endpoint, so what the stream
    # function publishes can be read back (moto keeps published messages).
    topics = template.resources("AWS::SNS::Topic")
    if topics:
        sns = clients.get("sns") or _s3_like(ddb, region, "sns")
        for logical_id in topics:
            arn = sns.create_topic(Name=f"{stack_name}-{logical_id}")["TopicArn"]
            refs[logical_id], attrs[(logical_id, "TopicArn")] = arn, arn

    deployment = Deployment(
        template=template,
        stack_name=stack_name,
        region=region,
        account_id=account[0] if account else None,
        refs=dict(refs),
        attrs=dict(attrs),
        parameters=parameter_values,
        skipped=tuple(
            logical_id
            for logical_id, resource in template.document()["Resources"].items()
            if resource.get("Type") not in PROVISIONED_TYPES
        ),
    )
    # what the admin CLI checks the deployment parameter against (as on AWS)
    from tokenbroker.local.cloudformation import publish_stack

    publish_stack(
        deployment, clients.get("cloudformation") or _s3_like(ddb, region, "cloudformation")
    )
    return deployment


def _create_secret(
    client: Any, name: str, props: Mapping[str, Any], resolve: Callable[[Any], Any]
) -> str:
    import secrets as random_source

    generate = resolve(props.get("GenerateSecretString") or {})
    length = int(generate.get("PasswordLength", 32))
    value = random_source.token_urlsafe(length)[:length]
    return str(client.create_secret(Name=name, SecretString=value)["ARN"])


_SSM_PASSED = frozenset({"Name", "Type", "Value", "Description", "AllowedPattern", "Tier"})


def _pseudo(stack_name: str, region: str, account_id: str | None) -> dict[str, str]:
    pseudo = {
        "AWS::StackName": stack_name,
        "AWS::Region": region,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    if account_id is not None:
        pseudo["AWS::AccountId"] = account_id
    return pseudo


_BUCKET_NAME_MAX = 63


def _bucket_name(stack_name: str, logical_id: str) -> str:
    """``{stack_name}-{logicalid}`` lower-cased, valid for S3 (3..63 of ``[a-z0-9-]``,
    starting and ending with a letter or digit); shortened with a hash if too long."""
    name = re.sub(r"[^a-z0-9-]", "-", f"{stack_name}-{logical_id}".lower()).strip("-")
    if len(name) > _BUCKET_NAME_MAX:
        suffix = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: _BUCKET_NAME_MAX - len(suffix) - 1].rstrip('-')}-{suffix}"
    return name


def _clients(session_or_clients: Any, region: str) -> Mapping[str, Any]:
    if isinstance(session_or_clients, Mapping):
        missing = [name for name in SERVICES if name not in session_or_clients]
        if missing:
            raise ValueError(f"session_or_clients lacks clients for {', '.join(missing)}")
        if "s3" in session_or_clients:
            return session_or_clients
        return {**session_or_clients, "s3": _s3_like(session_or_clients["dynamodb"], region)}
    names = (*ALL_SERVICES, "cloudformation")
    return {name: session_or_clients.client(name, region_name=region) for name in names}


def _s3_like(client: Any, region: str, service: str = "s3") -> Any:
    """An S3 client on ``client``'s endpoint (a moto server serves every service on one
    port; AWS endpoints are per service) with its credentials."""
    import boto3  # here: this module needs no boto3 when given clients
    from botocore.config import Config

    endpoint: str | None = client.meta.endpoint_url
    if endpoint is not None and re.search(r"\.amazonaws\.com(\.cn)?/?$", endpoint):
        endpoint = None  # the AWS (or mock_aws) endpoint of another service
    credentials = client._request_signer._credentials  # no public accessor
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    session = boto3.Session(
        aws_access_key_id=frozen.access_key if frozen else None,
        aws_secret_access_key=frozen.secret_key if frozen else None,
        aws_session_token=frozen.token if frozen else None,
        region_name=region,
    )
    return session.client(
        service, endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"})
    )


def _if_supported(client: Any, operation: Callable[..., object], **kwargs: Any) -> None:
    """Call an optional operation, tolerating an endpoint that does not implement it."""
    try:
        operation(**kwargs)
    except NotImplementedError:  # moto in-process, an operation it lacks
        return
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in _UNSUPPORTED:
            raise
