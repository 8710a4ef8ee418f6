"""Usage ledger stream -> the cold tier: one gzip JSONL object per batch and UTC hour
(tokenbroker.adapters.archive), under S3 Object Lock in the digest bucket.

A failed put raises, so Lambda delivers the same batch again (whole, unsplit, like the
aggregates function): the retry rewrites the same object names, so no record is lost
and none is archived twice. A stream record that is not a ledger record (no ``id`` or
no integer ``at``) is skipped and logged by its sequence number, never retried.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.adapters.archive import StreamImage

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = [
        StreamImage(
            sequence_number=(r.dynamodb.sequence_number or "") if r.dynamodb else "",
            event_id=r.event_id or "",
            image=(r.dynamodb.new_image if r.dynamodb else None) or {},
        )
        for r in DynamoDBStreamEvent(event).records
    ]
    try:
        result = bootstrap.default().archive_writer.archive(records)
    except Exception:
        logger.exception(
            "batch not archived; Lambda delivers it again", extra={"records": len(records)}
        )
        metrics.add_metric(name="ArchiveBatchesFailed", unit=MetricUnit.Count, value=1)
        raise
    for position in result.skipped:
        logger.error(
            "stream record is not a ledger record; not archived",
            extra={"sequence_number": records[position].sequence_number},
        )
    metrics.add_metric(name="RecordsArchived", unit=MetricUnit.Count, value=result.archived)
    metrics.add_metric(name="ArchiveObjectsWritten", unit=MetricUnit.Count, value=len(result.keys))
    return {"batchItemFailures": []}
