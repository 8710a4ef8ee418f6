"""botocore client construction and the one place AWS failures become domain errors.

Clients come from a botocore session, not boto3: a boto3 client *is* a botocore client
(for the services the functions call boto3 adds nothing to it), and ``import boto3`` costs
~77M instructions of the authorizer's cold init (benchmarks/authorizer_callgrind.py).
Callers that hold a ``boto3.Session`` (the CLI, the local stack) pass it as ``session``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tokenbroker.domain.errors import TemporarilyUnavailable

# Short timeouts and botocore's standard retry mode (exponential backoff with jitter,
# retry quotas). A Lambda behind API Gateway has 29 s; a stuck call must fail closed fast.
LAMBDA_CONFIG = Config(
    # our requests are built by code, not users: skip botocore's ~0.1 ms/call validation
    parameter_validation=False,
    connect_timeout=1,
    read_timeout=2,
    # two attempts in all: a hung call fails closed in ~6 s, inside the 10 s function
    # timeout (a Lambda timeout would surface as a 502 instead of our 503 / Deny)
    retries={"mode": "standard", "total_max_attempts": 2},
    tcp_keepalive=True,
)
CLI_CONFIG = Config(
    connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 5}
)


def client(
    service: str,
    *,
    session: Any = None,
    config: Config = LAMBDA_CONFIG,
    region: str | None = None,
) -> Any:
    """A client from the standard configuration chain (AWS_ENDPOINT_URL included), in
    ``region`` if given (else the chain's region). ``session``: a botocore session (the
    process's own by default) or a ``boto3.Session``."""
    chosen = _default_session() if session is None else session
    with _CLIENT_LOCK:  # creating clients from one session is not thread-safe
        if isinstance(chosen, botocore.session.Session):
            return chosen.create_client(service, config=config, region_name=region)
        return chosen.client(service, config=config, region_name=region)


_CLIENT_LOCK = threading.Lock()


@functools.cache
def _default_session() -> botocore.session.Session:
    """One session per process: its loaders and endpoint data are shared by every client
    (a second client then costs ~9 ms instead of ~50 ms at cold start)."""
    return botocore.session.Session()


@functools.cache
def edge_session(directory: str) -> botocore.session.Session | None:
    """A session whose loader reads only the authorizer's cut botocore data in
    ``directory`` (adapters/aws_models.py); None when that data is absent or was cut
    from another botocore version (the caller then uses the full models)."""
    from pathlib import Path

    from tokenbroker.adapters.aws_models import edge_data

    loader, why = edge_data(Path(directory))
    if loader is None:
        # once per process (cached): the function works, its clients just load slower
        logging.getLogger("tokenbroker").warning(
            "cut botocore data not used: full models instead",
            extra={"botocore_data": directory, "reason": why},
        )
        return None
    session = botocore.session.Session()
    session.register_component("data_loader", loader)
    return session


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


def new_item(table: str, item: dict[str, Any], key: str) -> dict[str, Any]:
    """A put of ``item`` that fails if an item with its key ``key`` already exists: the
    keyword arguments of ``put_item``, or the body of a transaction's ``Put``."""
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(#key)",
        "ExpressionAttributeNames": {"#key": key},
    }
