"""Usage ledger stream -> per-principal day and hour aggregates.

Powertools batch processing: each record is counted on its own; the ones that fail
(malformed, or DynamoDB failed) are reported in ``batchItemFailures`` so the event
source mapping re-delivers from the first of them, and the records already counted are
skipped by their idempotency markers.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def count(record: DynamoDBRecord) -> None:
    stream = record.dynamodb
    try:
        counted = bootstrap.default().aggregates.count(stream.new_image if stream else {})
    except Exception:
        # the ledger holds ids and hashes only: the sequence number is enough to find it
        logger.exception(
            "stream record not counted",
            extra={"sequence_number": stream.sequence_number if stream else None},
        )
        metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(
        name="RecordsCounted" if counted else "RecordsRedelivered", unit=MetricUnit.Count, value=1
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(
        event=event, record_handler=count, processor=processor, context=context
    )
