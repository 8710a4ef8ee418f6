"""web/lambda_logging.py: every log line carries its own invocation's Lambda context,
and no key appended during one invocation outlives it (Powertools' clear_state)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

from aws_lambda_powertools import Logger

from tokenbroker.web.lambda_logging import inject_lambda_context


def _context(request_id: str) -> Any:
    return SimpleNamespace(
        function_name="tokenbroker-authorizer",
        function_version="$LATEST",
        memory_limit_in_mb=128,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        aws_request_id=request_id,
    )


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_line_carries_its_own_invocations_request_id() -> None:
    stream = io.StringIO()
    logger = Logger(service="lambda-logging-test-ids", stream=stream)

    @inject_lambda_context(logger)
    def handler(event: Any, context: Any) -> str:
        logger.info("handled", extra={"n": event})
        return str(context.aws_request_id)

    assert [handler(n, _context(f"req-{n}")) for n in range(4)] == [f"req-{n}" for n in range(4)]

    lines = _lines(stream)
    assert [line["function_request_id"] for line in lines] == [f"req-{n}" for n in range(4)]
    assert all(line["function_name"] == "tokenbroker-authorizer" for line in lines)
    assert all(line["function_memory_size"] == 128 for line in lines)
    assert [line["cold_start"] for line in lines[1:]] == [False] * 3


def test_a_key_appended_in_one_invocation_is_gone_in_the_next() -> None:
    stream = io.StringIO()
    logger = Logger(service="lambda-logging-test-clear", stream=stream)

    @inject_lambda_context(logger)
    def handler(event: Any, context: Any) -> None:
        if event == "append":
            logger.append_keys(principal="alice")
        logger.info("handled")

    handler("plain", _context("req-1"))
    handler("append", _context("req-2"))
    handler("plain", _context("req-3"))
    handler("plain", _context("req-4"))

    lines = _lines(stream)
    assert [line.get("principal") for line in lines] == [None, "alice", None, None]
    assert [line["function_request_id"] for line in lines] == ["req-1", "req-2", "req-3", "req-4"]
