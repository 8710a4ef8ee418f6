"""Usage ledger stream -> per-principal hour aggregates, one batch at a time.

The whole batch is folded in memory into one compressed page per UTC hour and
principal shard, each written once with no read (``AggregatesService.count_batch``).
A store failure raises, so Lambda delivers the same batch again; the pages written
before the failure are recognised and skipped, so nothing counts twice. A record that
is not a ledger record is skipped and logged by its sequence number (the ledger holds
ids and hashes only), never retried: one bad item must not stop a stream shard.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap

if TYPE_CHECKING:
    from tokenbroker.domain.aggregates import Page

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = list(DynamoDBStreamEvent(event).records)
    images = [(r.dynamodb.new_image if r.dynamodb else None) or {} for r in records]
    try:
        result = bootstrap.default().aggregates.count_batch(images)
    except Exception:
        logger.exception(
            "batch not counted; Lambda delivers it again", extra={"records": len(records)}
        )
        metrics.add_metric(name="BatchesFailed", unit=MetricUnit.Count, value=1)
        raise
    for position in result.malformed:
        stream = records[position].dynamodb
        logger.error(
            "stream record is not a ledger record; skipped",
            extra={"sequence_number": stream.sequence_number if stream else None},
        )
    metrics.add_metric(name="RecordsCounted", unit=MetricUnit.Count, value=result.counted)
    metrics.add_metric(name="RecordsMalformed", unit=MetricUnit.Count, value=len(result.malformed))
    metrics.add_metric(name="PagesWritten", unit=MetricUnit.Count, value=result.written)
    metrics.add_metric(name="PagesRedelivered", unit=MetricUnit.Count, value=result.skipped)
    _detect_sharing(images, len(records), result.new_pages)
    return {"batchItemFailures": []}


def _detect_sharing(
    images: list[dict[str, Any]], records: int, new_pages: "Sequence[Page]"
) -> None:
    """The sharing rules on the same batch, after the aggregates (the burst rule counts
    the requests of the pages written now). A failure fails the batch: its redelivery
    skips the pages already written and finishes the alerts (services/sharing.py)."""
    try:
        sharing = bootstrap.default().sharing
        if sharing is None:
            return
        result = sharing.evaluate_batch(images, new_pages=new_pages)
    except Exception:
        logger.exception(
            "sharing rules failed; Lambda delivers the batch again", extra={"records": records}
        )
        metrics.add_metric(name="SharingBatchesFailed", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name="SharingWindowsWritten", unit=MetricUnit.Count, value=result.windows)
    metrics.add_metric(name="SharingAlerts", unit=MetricUnit.Count, value=result.alerts_new)
    if result.alerts_new:
        logger.warning("sharing alerts raised", extra={"alerts": result.alerts_new})
