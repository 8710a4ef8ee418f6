"""The local stack's event sources, from template.yaml: DynamoDB stream mappings
(``streams``) and schedules (``schedules``), run together by ``EventSources``."""

from tokenbroker.local.sources.runner import POLL_SECONDS, EventSources
from tokenbroker.local.sources.schedules import (
    DEFAULT_SCHEDULE_SECONDS,
    Schedule,
    rate_seconds,
    scheduled_event,
    schedules,
)
from tokenbroker.local.sources.streams import (
    LOCAL_MAX_RETRIES,
    StreamMapping,
    lambda_record,
    make_streams_client,
    matches,
    stream_mappings,
)

__all__ = [
    "DEFAULT_SCHEDULE_SECONDS",
    "LOCAL_MAX_RETRIES",
    "POLL_SECONDS",
    "EventSources",
    "Schedule",
    "StreamMapping",
    "lambda_record",
    "make_streams_client",
    "matches",
    "rate_seconds",
    "scheduled_event",
    "schedules",
    "stream_mappings",
]
