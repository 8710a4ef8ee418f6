"""Finding the deployment the admin commands operate on.

A deployment (the SAM stack on AWS, or ``tokenbroker dev`` locally) publishes one SSM
parameter, ``/tokenbroker/{stack}/deployment``: a JSON object whose keys are the
functions' environment variable names (``CLIENTS_TABLE``, ``DEVICES_TABLE``,
``TOKENS_TABLE``, ``SIGNING_KEY_ID``...). The CLI reads it with the standard AWS
configuration chain (``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``...),
so the same command works against AWS and against the local stack.
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
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
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


def new_session(region: str | None) -> boto3.Session:
    """A boto3 session from the standard chain; ``region`` overrides the chain's."""
    return boto3.Session(region_name=region) if region else boto3.Session()


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
    except BotoCoreError as exc:  # client construction, e.g. no region configured
        raise _explain(stack, exc) from exc
    if not isinstance(value, dict):
        raise DeploymentError(f"SSM parameter {name} must hold a JSON object")
    return _as_environment(value)


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
    if isinstance(exc, ClientError):
        return DeploymentError(f"cannot read SSM parameter {name}: {error_code(exc)}")
    return DeploymentError(f"cannot read SSM parameter {name}: {_one_line(exc)}")


def caller_arn(session: boto3.Session) -> str:
    """Who is running the command (STS GetCallerIdentity, which needs no permission):
    the actor named in the ledger record of every admin action."""
    try:
        sts = client("sts", config=CLI_CONFIG, session=session)
        arn = sts.get_caller_identity().get("Arn")
    except (ClientError, BotoCoreError) as exc:
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
            f"cannot identify the caller (sts:GetCallerIdentity): {error_code(exc)}"
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
    try:
        return Settings.from_mapping(env)
    except ConfigurationError as exc:
        raise DeploymentError(
            f"deployment '{stack}' ({parameter_name(stack)}) is invalid: {exc.description}"
        ) from exc
