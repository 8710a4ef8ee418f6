"""DynamoDB stream event source mappings (``Type: DynamoDB`` events), emulated.

moto keeps a table's stream but runs no event source mapping, so this module does its
job: the stream is polled through the ``dynamodbstreams`` API, records matching the
``FilterCriteria`` (Lambda event filtering, EventBridge pattern syntax, matched by moto's
own EventBridge pattern matcher) are batched (``BatchSize``) into a genuine Lambda
DynamoDB stream event; with ``ReportBatchItemFailures`` the batch is re-delivered from
the first failed sequence number, a raised error re-delivers the whole batch (halved
first with ``BisectBatchOnFunctionError``), and after ``MaximumRetryAttempts`` retries
the batch is dropped with a log line, as Lambda does without an on-failure destination.

Differences from AWS, on purpose: ``MaximumBatchingWindowInSeconds`` is not waited for
(records go out on the next poll); an unlimited retry count (-1) stops at
LOCAL_MAX_RETRIES so a poison record cannot spin forever.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from moto.events.models import EventPattern

from tokenbroker.local.errors import LocalConfigError
from tokenbroker.local.intrinsics import truthy
from tokenbroker.local.lambda_host import Invoke
from tokenbroker.local.provision import Deployment
from tokenbroker.local.template import Template

#: what MaximumRetryAttempts -1 (until the record expires, 24 hours) becomes locally
LOCAL_MAX_RETRIES = 100
#: Lambda's default BatchSize for DynamoDB streams
DEFAULT_BATCH_SIZE = 100

Log = Callable[[str], None]


@dataclass(frozen=True)
class StreamMapping:
    """One ``Type: DynamoDB`` event of a function, resolved."""

    function: str  # logical id
    event: str  # the key under Events
    stream_arn: str
    starting_position: str = "LATEST"  # or TRIM_HORIZON
    batch_size: int = DEFAULT_BATCH_SIZE
    report_failures: bool = False  # FunctionResponseTypes: [ReportBatchItemFailures]
    max_retries: int = LOCAL_MAX_RETRIES
    bisect: bool = False
    filters: tuple[Mapping[str, Any], ...] = ()  # parsed patterns; none: every record

    @property
    def name(self) -> str:
        return f"{self.function}.{self.event}"

    def wants(self, record: Mapping[str, Any]) -> bool:
        return not self.filters or any(matches(p, record) for p in self.filters)


def stream_mappings(template: Template, deployment: Deployment) -> list[StreamMapping]:
    """The template's enabled ``Type: DynamoDB`` events (LocalConfigError if one cannot
    be emulated)."""
    mappings = []
    for function, name, raw in template.events("DynamoDB"):
        props = deployment.resolve(raw)
        where = f"{function}.Events.{name}"
        if not enabled(props):
            continue
        stream = props.get("Stream")
        if not isinstance(stream, str) or ":dynamodb:" not in stream:
            raise LocalConfigError(f"{where}: Stream must be a DynamoDB table's StreamArn")
        position = str(props.get("StartingPosition", "LATEST"))
        if position not in ("LATEST", "TRIM_HORIZON"):
            raise LocalConfigError(f"{where}: StartingPosition {position} is not emulated")
        retries = int(props.get("MaximumRetryAttempts", -1))
        filters = (props.get("FilterCriteria") or {}).get("Filters") or []
        mappings.append(
            StreamMapping(
                function=function,
                event=name,
                stream_arn=stream,
                starting_position=position,
                batch_size=int(props.get("BatchSize", DEFAULT_BATCH_SIZE)),
                report_failures="ReportBatchItemFailures"
                in (props.get("FunctionResponseTypes") or []),
                max_retries=LOCAL_MAX_RETRIES if retries < 0 else retries,
                bisect=truthy(props.get("BisectBatchOnFunctionError", False)),
                filters=tuple(_pattern(f.get("Pattern"), where) for f in filters),
            )
        )
    return mappings


def enabled(props: Mapping[str, Any]) -> bool:
    return props.get("Enabled", True) not in (False, "false", "False")


# ---------------------------------------------------------------- event filtering

# Lambda event filtering: a pattern is an object whose leaves are arrays of allowed
# values; keys must all match; an array matches if any of its entries matches any of the
# values. The operators below are the ones Lambda documents for filtering; anything
# else is rejected when the stack starts.
_OPERATORS = frozenset(
    {"prefix", "suffix", "anything-but", "exists", "numeric", "equals-ignore-case"}
)


def _pattern(raw: Any, where: str) -> dict[str, Any]:
    try:
        pattern = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise LocalConfigError(f"{where}: FilterCriteria pattern is not JSON") from exc
    if not isinstance(pattern, dict):
        raise LocalConfigError(f"{where}: a FilterCriteria pattern must be an object")
    _check_pattern(pattern, where)
    return pattern


def _check_pattern(pattern: Mapping[str, Any], where: str) -> None:
    for key, rule in pattern.items():
        if isinstance(rule, dict):
            _check_pattern(rule, where)
        elif isinstance(rule, list):
            for entry in rule:
                if isinstance(entry, dict) and (len(entry) != 1 or set(entry) - _OPERATORS):
                    raise LocalConfigError(f"{where}: filter operator {entry} is not emulated")
        else:
            raise LocalConfigError(f"{where}: filter {key!r} must be an object or an array")


def matches(pattern: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether a record (as the function would receive it) matches a filter pattern."""
    event: Any = dict(record)  # moto types it as an EventBridge event; any object works
    return bool(EventPattern(None, dict(pattern)).matches_event(event))


# ---------------------------------------------------------------- event shapes


def lambda_record(raw: Mapping[str, Any], *, region: str, stream_arn: str) -> dict[str, Any]:
    """A record from ``dynamodbstreams.get_records`` (boto3's parsed form) as Lambda
    delivers it: JSON values, ``ApproximateCreationDateTime`` in epoch seconds, binary
    attributes in base64, and ``eventSourceARN``."""
    stream = dict(raw["dynamodb"])
    when = stream.get("ApproximateCreationDateTime")
    if isinstance(when, dt.datetime):
        stream["ApproximateCreationDateTime"] = int(when.timestamp())
    for image in ("Keys", "NewImage", "OldImage"):
        if image in stream:
            stream[image] = {k: _json_attribute(v) for k, v in stream[image].items()}
    record = {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": stream,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in raw:  # TTL deletions
        record["userIdentity"] = dict(raw["userIdentity"])
    return record


def _json_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    (kind, inner), *_ = value.items()
    if kind == "B":
        return {"B": base64.b64encode(inner).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(b).decode("ascii") for b in inner]}
    if kind == "M":
        return {"M": {k: _json_attribute(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_json_attribute(v) for v in inner]}
    return {kind: inner}


# ----------------------------------------------------------------- stream polling


class StreamPoller:
    """One event source mapping: where it is in each shard, and the records fetched
    but not yet processed. Not thread-safe: EventSources holds ``lock`` around it."""

    def __init__(
        self, mapping: StreamMapping, client: Any, invoke: Invoke, region: str, log: Log
    ) -> None:
        self.mapping = mapping
        self.lock = threading.Lock()
        self._client = client
        self._invoke = invoke
        self._region = region
        self._log = log
        #: shard id -> last sequence number read (None: from the starting position)
        self._positions: dict[str, str | None] | None = None
        self._pending: list[dict[str, Any]] = []
        self._attempts = 0
        self._limit = mapping.batch_size

    def prime(self) -> None:
        """Fix the starting position (LATEST: what the stream holds now is skipped)."""
        if self._positions is not None:
            return
        self._positions = {}
        if self.mapping.starting_position == "LATEST":
            for shard in self._shards():
                self._positions[shard] = None
                for _ in self._read(shard):
                    pass

    def poll(self) -> int:
        """Fetch what is new, then process every pending record; returns how many
        records were fetched."""
        fetched = self.fetch()
        self.process()
        return fetched

    def fetch(self) -> int:
        self.prime()
        fetched = 0
        for shard in self._shards():
            for raw in self._read(shard):
                fetched += 1
                record = lambda_record(raw, region=self._region, stream_arn=self.mapping.stream_arn)
                if self.mapping.wants(record):
                    self._pending.append(record)
        return fetched

    def _shards(self) -> list[str]:
        shards: list[str] = []
        kwargs: dict[str, Any] = {"StreamArn": self.mapping.stream_arn}
        while True:
            description = self._client.describe_stream(**kwargs)["StreamDescription"]
            shards += [s["ShardId"] for s in description.get("Shards", [])]
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def _read(self, shard: str) -> list[dict[str, Any]]:
        """The shard's records after the last one read, advancing the position. A
        fresh iterator each time: moto's iterators hold the shard object, which a
        rolled-back transaction replaces (an old iterator would never see new records)."""
        assert self._positions is not None
        position = self._positions.setdefault(shard, None)
        kwargs: dict[str, Any] = {"StreamArn": self.mapping.stream_arn, "ShardId": shard}
        if position is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=position)
        iterator = self._client.get_shard_iterator(**kwargs)["ShardIterator"]
        records: list[dict[str, Any]] = []
        while iterator:
            page = self._client.get_records(ShardIterator=iterator, Limit=1000)
            if not page.get("Records"):
                break
            records += page["Records"]
            iterator = page.get("NextShardIterator")
        if records:
            self._positions[shard] = records[-1]["dynamodb"]["SequenceNumber"]
        return records

    def process(self) -> None:
        while self._pending:
            batch = self._pending[: min(self.mapping.batch_size, self._limit)]
            failed_from = self._deliver(batch)
            if failed_from is None:
                del self._pending[: len(batch)]
                self._attempts, self._limit = 0, self.mapping.batch_size
                continue
            del self._pending[:failed_from]  # Lambda checkpoints before the first failure
            # retries count for the record at the head: progress starts a new count
            self._attempts = 1 if failed_from else self._attempts + 1
            if self._attempts > self.mapping.max_retries:
                dropped = len(batch) - failed_from
                first = self._pending[0]["dynamodb"]["SequenceNumber"]
                self._log(
                    f"{self.mapping.name}: dropped {dropped} record(s) from sequence number "
                    f"{first} after {self.mapping.max_retries} retries"
                )
                del self._pending[:dropped]
                self._attempts, self._limit = 0, self.mapping.batch_size

    def _deliver(self, batch: list[dict[str, Any]]) -> int | None:
        """Invoke the function; None if the batch succeeded, else the index of the first
        record to deliver again."""
        try:
            response = self._invoke(self.mapping.function, {"Records": batch})
        except Exception as exc:  # noqa: BLE001 - a function error: Lambda retries the batch
            self._log(f"{self.mapping.name}: the function failed: {type(exc).__name__}: {exc}")
            if self.mapping.bisect and len(batch) > 1:
                self._limit = max(1, len(batch) // 2)
            return 0
        if not self.mapping.report_failures:
            return None
        return _first_failure(response, batch)


def _first_failure(response: Any, batch: Sequence[Mapping[str, Any]]) -> int | None:
    """Lambda's reading of a partial batch response: no failures -> success; a failure
    without a valid ``itemIdentifier`` of this batch -> the whole batch failed."""
    failures = response.get("batchItemFailures") if isinstance(response, Mapping) else None
    if not failures:
        return None
    sequence = [r["dynamodb"]["SequenceNumber"] for r in batch]
    indexes = []
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if item not in sequence:
            return 0
        indexes.append(sequence.index(item))
    return min(indexes)


# --------------------------------------------------------------------- the sources


def make_streams_client(region: str, **kwargs: Any) -> Any:
    """A ``dynamodbstreams`` client moto can answer in-process too: botocore sends
    stream calls to account endpoints (``ACCOUNT.streams-ddb.REGION...``, from the
    stream ARN) that moto's in-process mock does not route; the regional endpoint it
    does. ``kwargs`` go to ``boto3.client`` (``endpoint_url`` for a moto server)."""
    config = Config(account_id_endpoint_mode="disabled")
    return boto3.client("dynamodbstreams", region_name=region, config=config, **kwargs)
