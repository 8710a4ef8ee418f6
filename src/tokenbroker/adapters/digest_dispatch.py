"""Fan-out of digest sealing: segments handed to another invocation of the digest
function (``lambda:InvokeFunction``, asynchronous, so Lambda queues and retries it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tokenbroker.adapters.aws import failing_closed

#: the key of a worker's event (the scheduled event has none)
WORK = "digest_work"


def work_event(periods: Sequence[int], segments: Sequence[str]) -> dict[str, Any]:
    return {WORK: {"periods": list(periods), "segments": list(segments)}}


def parse_work(event: Any) -> tuple[list[int], list[str]] | None:
    """(periods, segments) of a worker event; None for any other event. Raises
    ValueError for a malformed one."""
    if not isinstance(event, dict) or WORK not in event:
        return None
    work = event[WORK]
    periods = work.get("periods") if isinstance(work, dict) else None
    segments = work.get("segments") if isinstance(work, dict) else None
    if (
        not isinstance(periods, list)
        or not periods
        or not all(type(p) is int for p in periods)
        or not isinstance(segments, list)
        or not all(isinstance(x, str) for x in segments)
    ):
        raise ValueError("malformed digest work event")
    return periods, segments


class LambdaDispatcher:
    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._lambda = lambda_client
        self.function_name = function_name

    def dispatch(self, periods: Sequence[int], segments: Sequence[str]) -> None:
        with failing_closed("lambda:InvokeFunction"):
            self._lambda.invoke(
                FunctionName=self.function_name,
                InvocationType="Event",
                Payload=json.dumps(work_event(periods, segments)).encode(),
            )
