"""Seals the usage ledger's digests (tokenbroker.services.digests).

Scheduled (every 15 minutes): seal every due period in order, within WORK_BUDGET_MS
(a segment is started only if it should end in time); what is left of an hour goes to
other invocations of this function (``{"digest_work": ...}`` events), each sealing a
batch of segments that fits the same budget, the last of them writing the statements.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.adapters.digest_dispatch import parse_work
from tokenbroker.services.digests import WORK_BUDGET_MS

logger = Logger()
metrics = Metrics()

#: never start a segment with less than this left of the function's timeout (120 s)
_RESERVE_MS = 60_000


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    container = bootstrap.default()
    try:
        work = parse_work(event)
    except ValueError as exc:  # not retried: the same event would fail again
        logger.error("digest work event refused", extra={"reason": str(exc)})
        metrics.add_metric(name="DigestWorkRefused", unit=MetricUnit.Count, value=1)
        return {"sealed": [], "error": str(exc)}
    if work is not None:
        periods, segments = work
        sealed = container.digests.seal_segments(periods, segments)
        logger.info("digest segments sealed", extra={"segments": len(segments), "sealed": sealed})
    else:
        sealed = container.digests.seal_due(
            keep_going=lambda: context.get_remaining_time_in_millis() > _RESERVE_MS,
            dispatcher=container.digest_dispatcher,
            budget_ms=WORK_BUDGET_MS,
        )
        scheduled = EventBridgeEvent(event)
        logger.info("digests sealed", extra={"sealed": sealed, "scheduled_at": scheduled.time})
    metrics.add_metric(name="DigestsSealed", unit=MetricUnit.Count, value=len(sealed))
    return {"sealed": sealed}
