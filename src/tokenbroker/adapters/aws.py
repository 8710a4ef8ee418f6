"""boto3 client construction and the one place AWS failures become domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tokenbroker.domain.errors import TemporarilyUnavailable

# Short timeouts and botocore's standard retry mode (exponential backoff with jitter,
# retry quotas). A Lambda behind API Gateway has 29 s; a stuck call must fail closed fast.
LAMBDA_CONFIG = Config(
    connect_timeout=2,
    read_timeout=3,
    retries={"mode": "standard", "max_attempts": 3},
    tcp_keepalive=True,
)
CLI_CONFIG = Config(
    connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 5}
)


def client(
    service: str, *, session: boto3.Session | None = None, config: Config = LAMBDA_CONFIG
) -> Any:
    """A boto3 client from the standard configuration chain (AWS_ENDPOINT_URL included)."""
    return (session or boto3.Session()).client(service, config=config)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def failing_closed(what: str) -> Iterator[None]:
    """Turn any AWS failure into TemporarilyUnavailable (the edge fails closed on it).

    Adapters catch the ClientError codes they expect (conditional check failures) inside
    this block themselves; everything else (throttling after retries, timeouts, missing
    tables, access denied, KMS disabled) ends here.
    """
    try:
        yield
    except ClientError as exc:
        raise TemporarilyUnavailable(f"{what} failed ({error_code(exc)})") from exc
    except BotoCoreError as exc:
        raise TemporarilyUnavailable(f"{what} failed ({type(exc).__name__})") from exc
