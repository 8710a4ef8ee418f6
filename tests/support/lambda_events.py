"""What every handler test needs from Lambda and API Gateway, written once: the Lambda
context object, a function's ``app.py`` loaded under a name of its own, and the parts
of a REST API (v1) event API Gateway fills in (headers as it delivers them, the
request context)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
API_ID = "abc123"
STAGE = "prod"
HOST = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
ISSUER = f"https://{HOST}/{STAGE}"

_modules = itertools.count()


@dataclass
class LambdaContext:
    """The attributes Powertools reads from the Lambda context object; the ARN and log
    group follow from ``function_name`` unless given."""

    function_name: str = "Function"
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "2030/01/01/[$LATEST]0123456789abcdef"

    def __post_init__(self) -> None:
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"
        self.invoked_function_arn = self.invoked_function_arn or arn
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def load_function(path: Path, prefix: str = "_tb_fn") -> ModuleType:
    """A Lambda ``app.py`` as a fresh module under a unique name (every function folder
    has its own ``app.py``; they must not shadow each other)."""
    name = f"{prefix}_{path.parent.name}_{next(_modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def header_maps(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``headers`` and ``multiValueHeaders`` as API Gateway builds them: the last value
    of a repeated header in the first, every value in the second."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def rest_request_context(
    method: str,
    resource: str,
    path: str,
    *,
    source_ip: str,
    user_agent: str,
    request_time: str = "01/Jan/2030:00:00:00 +0000",
    epoch_ms: int = 1_893_456_000_000,
) -> dict[str, Any]:
    """``requestContext`` of a REST API event for ``https://{HOST}/{STAGE}{path}``."""
    request_id = str(uuid.uuid4())
    return {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "resourceId": "r3s0urc3",
        "resourcePath": resource,
        "httpMethod": method,
        "path": f"/{STAGE}{path}",
        "stage": STAGE,
        "domainName": HOST,
        "domainPrefix": API_ID,
        "protocol": "HTTP/1.1",
        "requestId": request_id,
        "extendedRequestId": request_id[:16],
        "requestTime": request_time,
        "requestTimeEpoch": epoch_ms,
        "identity": {"sourceIp": source_ip, "userAgent": user_agent},
    }
