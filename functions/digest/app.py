"""Scheduled (every 15 minutes): seal the usage ledger's digest for every closed period."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap

logger = Logger()
metrics = Metrics()

#: stop starting new periods when less than this is left of the function's timeout
_RESERVE_MS = 60_000


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    sealed = bootstrap.default().digests.seal_due(
        keep_going=lambda: context.get_remaining_time_in_millis() > _RESERVE_MS
    )
    metrics.add_metric(name="DigestsSealed", unit=MetricUnit.Count, value=len(sealed))
    logger.info("digests sealed", extra={"sealed": sealed, "scheduled_at": event.time})
    return {"sealed": sealed}
