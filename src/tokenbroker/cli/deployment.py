"""Finding the deployment the admin commands operate on.

A deployment (the SAM stack on AWS, or ``tokenbroker dev`` locally) publishes one SSM
parameter, ``/tokenbroker/{stack}/deployment``: a JSON object whose keys are the
functions' environment variable names (``CLIENTS_TABLE``, ``DEVICES_TABLE``,
``TOKENS_TABLE``, ``SIGNING_KEY_ID``...). The CLI reads it with the standard AWS
configuration chain (``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``...),
so the same command works against AWS and against the local stack.

The parameter is only a pointer, and whoever may ``ssm:PutParameter`` could point it at
decoy tables, keys or buckets. So before using it the CLI checks it against the
CloudFormation stack of the same name: every table, bucket and key it names must be the
one the stack's Outputs name (only a deployer can change those). On a mismatch, or with
no such stack, the command stops with a one-line error (exit code 2) before touching any
table. ``tokenbroker dev`` publishes the same stack locally (tokenbroker.local.cloudformation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from tokenbroker.adapters.aws import CLI_CONFIG, client, error_code
from tokenbroker.bootstrap import Container, build
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.settings import Settings

DEFAULT_STACK = "tokenbroker"
# SSM parameter names allow a-zA-Z0-9_.-/ ; a stack name is one path segment.
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class DeploymentError(Exception):
    """The deployment cannot be found or read (a configuration problem: exit code 2)."""


def parameter_name(stack: str) -> str:
    return f"/tokenbroker/{stack}/deployment"


#: deployment parameter key -> the stack output that must name the same resource
STACK_OUTPUTS = {
    "CLIENTS_TABLE": "ClientsTableName",
    "DEVICES_TABLE": "DevicesTableName",
    "TOKENS_TABLE": "TokensTableName",
    "USAGE_TABLE": "UsageTableName",
    "AGGREGATES_TABLE": "AggregatesTableName",
    "DIGEST_BUCKET": "DigestBucketName",
    "DIGEST_KEY_ID": "DigestKeyArn",
    "SIGNING_KEY_ID": "SigningKeyArn",
}


def new_session(region: str | None) -> boto3.Session:
    """A boto3 session from the standard chain; ``region`` overrides the chain's."""
    try:
        return boto3.Session(region_name=region) if region else boto3.Session()
    except ProfileNotFound as exc:
        raise DeploymentError(
            f"AWS profile {exc.kwargs.get('profile', '')!r} not found in the AWS config"
            " files; check AWS_PROFILE or `aws configure list-profiles`"
        ) from exc
    except BotoCoreError as exc:
        raise DeploymentError(f"invalid AWS configuration: {_one_line(exc)}") from exc


def read_deployment(stack: str, session: boto3.Session) -> dict[str, str]:
    """The deployment's environment variables, from its SSM parameter."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider
    from aws_lambda_powertools.utilities.parameters.exceptions import (
        GetParameterError,
        TransformParameterError,
    )

    if not _STACK_NAME.fullmatch(stack):
        raise DeploymentError(
            f"invalid stack name {stack!r}: use 1-128 letters, digits, '.', '-' or '_'"
        )
    name = parameter_name(stack)
    try:
        ssm = client("ssm", config=CLI_CONFIG, session=session)
        # A provider per call: its cache must not outlive this command (or a test).
        value = SSMProvider(boto3_client=ssm).get(name, transform="json", force_fetch=True)
    except GetParameterError as exc:
        # Powertools wraps every failure; the original is the implicit context.
        raise _explain(stack, exc.__context__ or exc) from exc
    except TransformParameterError as exc:
        raise DeploymentError(f"SSM parameter {name} is not valid JSON") from exc
    except (BotoCoreError, ValueError) as exc:  # client construction: region, endpoint
        raise _explain(stack, exc) from exc
    if not isinstance(value, dict):
        raise DeploymentError(f"SSM parameter {name} must hold a JSON object")
    return _as_environment(value)


def verify_stack(stack: str, env: Mapping[str, str], session: boto3.Session) -> None:
    """The deployment parameter must name exactly the stack's own resources (see the
    module docstring); raises DeploymentError otherwise."""
    name = parameter_name(stack)
    try:
        cfn = client("cloudformation", config=CLI_CONFIG, session=session)
        found = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        if error_code(exc) == "ValidationError":  # "Stack with id X does not exist"
            raise DeploymentError(
                f"{name} names deployment '{stack}' but there is no CloudFormation stack"
                f" '{stack}' to check it against: refusing to use it"
            ) from exc
        raise DeploymentError(
            f"cannot check {name} against stack '{stack}' (cloudformation:DescribeStacks):"
            f" {_aws_error(exc)}"
        ) from exc
    except (BotoCoreError, ValueError) as exc:
        raise _explain(stack, exc) from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found[0].get("Outputs") or []}
    wrong = sorted(
        key
        for key, out in STACK_OUTPUTS.items()
        if env.get(key, outputs.get(out)) != outputs.get(out)
    )
    if outputs.get("DeploymentParameterName", name) != name:
        wrong.insert(0, "its name")
    if wrong:
        raise DeploymentError(
            f"{name} disagrees with stack '{stack}' on {', '.join(wrong)}: refusing to use"
            " it (was the parameter changed outside CloudFormation?)"
        )


def _explain(stack: str, exc: BaseException) -> DeploymentError:
    name = parameter_name(stack)
    if isinstance(exc, ClientError) and error_code(exc) == "ParameterNotFound":
        return DeploymentError(
            f"deployment '{stack}' not found (no SSM parameter {name}); deploy the stack"
            " or run `tokenbroker dev` and export its variables"
        )
    if isinstance(exc, NoRegionError):
        return DeploymentError("no AWS region configured; pass --region or set AWS_DEFAULT_REGION")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return DeploymentError(
            "no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (for `tokenbroker dev`, export the variables it prints)"
        )
    if isinstance(exc, EndpointConnectionError):
        return DeploymentError(f"cannot reach AWS to read {name}: {_one_line(exc)}")
    if isinstance(exc, InvalidRegionError):
        return DeploymentError(
            f"invalid AWS region {exc.kwargs.get('region_name', '')!r}: use a region name"
            " such as eu-west-1 (--region or AWS_DEFAULT_REGION)"
        )
    if isinstance(exc, ValueError) and "endpoint" in str(exc).lower():
        return DeploymentError(
            f"invalid AWS endpoint URL ({_one_line(exc)}): AWS_ENDPOINT_URL must be a URL"
            " such as http://127.0.0.1:4566 (what `tokenbroker dev` prints)"
        )
    if isinstance(exc, ClientError):
        return DeploymentError(f"cannot read SSM parameter {name}: {_aws_error(exc)}")
    return DeploymentError(f"cannot read SSM parameter {name}: {_one_line(exc)}")


def _aws_error(exc: ClientError) -> str:
    """An AWS error code, or for a bare HTTP status what it means."""
    code = error_code(exc)
    if code.isdigit():
        return (
            f"the endpoint answered HTTP {code} without an AWS error; is AWS_ENDPOINT_URL"
            " an AWS API (or the local stack `tokenbroker dev` prints)?"
        )
    return code


def caller_arn(session: boto3.Session) -> str:
    """Who is running the command (STS GetCallerIdentity, which needs no permission):
    the actor named in the ledger record of every admin action."""
    try:
        sts = client("sts", config=CLI_CONFIG, session=session)
        arn = sts.get_caller_identity().get("Arn")
    except (ClientError, BotoCoreError, ValueError) as exc:
        raise _explain_identity(exc) from exc
    if not isinstance(arn, str) or not arn:
        raise DeploymentError("sts:GetCallerIdentity returned no ARN")
    return arn


def _explain_identity(exc: BaseException) -> DeploymentError:
    if isinstance(exc, NoRegionError):
        return DeploymentError("no AWS region configured; pass --region or set AWS_DEFAULT_REGION")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return DeploymentError(
            "no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ClientError):
        return DeploymentError(
            f"cannot identify the caller (sts:GetCallerIdentity): {_aws_error(exc)}"
        )
    return DeploymentError(f"cannot identify the caller (sts:GetCallerIdentity): {_one_line(exc)}")


def _as_environment(value: Mapping[str, Any]) -> dict[str, str]:
    """JSON values as environment variable strings (lists become comma-separated)."""
    env: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, bool):
            env[key] = "true" if item else "false"
        elif isinstance(item, list):
            env[key] = ",".join(str(v) for v in item)
        elif isinstance(item, dict):
            env[key] = json.dumps(item)
        else:
            env[key] = str(item)
    return env


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass
class CliState:
    """What the global options chose; the container is built on first use only, so
    ``--help`` and usage errors never touch AWS."""

    stack: str = DEFAULT_STACK
    region: str | None = None
    output: str = "table"
    debug: bool = False
    _container: Container | None = field(default=None, repr=False)

    def container(self) -> Container:
        if self._container is None:
            session = new_session(self.region)
            settings = load_settings(self.stack, session)

            actor = caller_arn(session)

            def aws(service: str) -> Any:
                return client(service, config=CLI_CONFIG, session=session)

            self._container = build(settings, aws=aws, actor=actor)
        return self._container


def load_settings(stack: str, session: boto3.Session) -> Settings:
    env = read_deployment(stack, session)
    verify_stack(stack, env, session)
    try:
        return Settings.from_mapping(env)
    except ConfigurationError as exc:
        raise DeploymentError(
            f"deployment '{stack}' ({parameter_name(stack)}) is invalid: {exc.description}"
        ) from exc
