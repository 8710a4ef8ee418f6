"""The local stack's event sources: DynamoDB stream mappings and schedules, from
template.yaml, invoking the functions in this process.

moto keeps a table's stream but runs no event source mapping and no EventBridge rule,
so this module does their job, generically, for every function of the template:

- ``Type: DynamoDB`` events on a table's ``StreamArn``: the stream is polled (about every
  ``poll_interval`` seconds) through the ``dynamodbstreams`` API, records matching the
  ``FilterCriteria`` are batched (``BatchSize``) into a genuine Lambda DynamoDB stream
  event; with ``ReportBatchItemFailures`` the batch is re-delivered from the first failed
  sequence number, a raised error re-delivers the whole batch (halved first with
  ``BisectBatchOnFunctionError``), and after ``MaximumRetryAttempts`` retries the batch is
  dropped with a log line, as Lambda does without an on-failure destination.
- ``Type: Schedule`` events: the function gets a genuine EventBridge scheduled event (or
  the event's ``Input``) every ``rate(...)``, capped by ``schedule_interval`` (a
  ``cron(...)`` schedule runs every ``schedule_interval``).

Differences from AWS, on purpose: ``MaximumBatchingWindowInSeconds`` is not waited for
(records go out on the next poll); an unlimited retry count (-1) stops at
LOCAL_MAX_RETRIES so a poison record cannot spin forever; a failing scheduled invocation
is logged, not retried (the next tick runs anyway). ``drain()`` processes everything in
the streams synchronously, for tests.

    sources = EventSources(template, deployment, host.invoke, schedule_interval=60)
    sources.start()
    ...
    sources.drain()
    sources.stop()
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from tokenbroker.local.provision import Deployment
from tokenbroker.local.server import DEFAULT_ACCOUNT_ID, Invoke, LocalConfigError, log_to_stderr
from tokenbroker.local.template import SAM_FUNCTION, Template

POLL_SECONDS = 0.5
DEFAULT_SCHEDULE_SECONDS = 60.0
#: what MaximumRetryAttempts -1 (until the record expires, 24 hours) becomes locally
LOCAL_MAX_RETRIES = 100
#: Lambda's default BatchSize for DynamoDB streams
DEFAULT_BATCH_SIZE = 100
#: drain() gives up after this many rounds (a function that feeds its own stream)
_MAX_DRAIN_ROUNDS = 1000

Log = Callable[[str], None]


# --------------------------------------------------------------------------- model


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


@dataclass(frozen=True)
class Schedule:
    """One ``Type: Schedule`` event of a function, resolved."""

    function: str
    event: str
    rule_name: str
    rule_arn: str
    region: str
    account_id: str
    interval: float  # seconds
    input: Any = None  # the event's Input (parsed JSON) instead of the scheduled event

    @property
    def name(self) -> str:
        return f"{self.function}.{self.event}"


def stream_mappings(template: Template, deployment: Deployment) -> list[StreamMapping]:
    """The template's enabled ``Type: DynamoDB`` events (LocalConfigError if one cannot
    be emulated)."""
    mappings = []
    for function, name, props in _events(template, deployment, "DynamoDB"):
        where = f"{function}.Events.{name}"
        if not _enabled(props):
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
                bisect=_truthy(props.get("BisectBatchOnFunctionError", False)),
                filters=tuple(_pattern(f.get("Pattern"), where) for f in filters),
            )
        )
    return mappings


def schedules(
    template: Template, deployment: Deployment, *, cap: float = DEFAULT_SCHEDULE_SECONDS
) -> list[Schedule]:
    """The template's enabled ``Type: Schedule`` events, each running every
    ``min(its rate, cap)`` seconds (``cap`` for cron expressions)."""
    account = deployment.account_id or DEFAULT_ACCOUNT_ID
    found = []
    for function, name, props in _events(template, deployment, "Schedule"):
        if not _enabled(props) or str(props.get("State", "ENABLED")).upper() == "DISABLED":
            continue
        where = f"{function}.Events.{name}"
        expression = str(props.get("Schedule", ""))
        rate = rate_seconds(expression)
        if rate is None and not expression.startswith("cron("):
            raise LocalConfigError(f"{where}: Schedule {expression!r} is not rate() or cron()")
        rule = str(props.get("Name") or f"{deployment.stack_name}-{function}{name}")[:64]
        raw_input = props.get("Input")
        try:
            parsed_input = None if raw_input is None else json.loads(str(raw_input))
        except ValueError as exc:
            raise LocalConfigError(f"{where}: Input is not JSON") from exc
        found.append(
            Schedule(
                function=function,
                event=name,
                rule_name=rule,
                rule_arn=f"arn:aws:events:{deployment.region}:{account}:rule/{rule}",
                region=deployment.region,
                account_id=account,
                interval=min(rate, cap) if rate is not None else cap,
                input=parsed_input,
            )
        )
    return found


def _events(
    template: Template, deployment: Deployment, kind: str
) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for function in template.functions():
        events = template.sam_properties(function, SAM_FUNCTION).get("Events") or {}
        for name, event in events.items():
            if isinstance(event, dict) and event.get("Type") == kind:
                props = deployment.resolve(event.get("Properties") or {})
                found.append((function, str(name), props))
    return found


def _enabled(props: Mapping[str, Any]) -> bool:
    return props.get("Enabled", True) not in (False, "false", "False")


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of ``rate(N unit)``; None for anything else."""
    match = _RATE.fullmatch(expression.strip())
    if match is None:
        return None
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")])


# ---------------------------------------------------------------- event filtering

# Lambda event filtering (EventBridge pattern syntax): a pattern is an object whose
# leaves are arrays of allowed values; keys must all match; an array matches if any of
# its entries matches any of the values. The operators below are the ones Lambda
# documents for filtering; anything else is rejected when the stack starts.
_OPERATORS = frozenset(
    {"prefix", "suffix", "anything-but", "exists", "numeric", "equals-ignore-case"}
)
_MISSING = object()


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


def matches(pattern: Mapping[str, Any], value: Any) -> bool:
    """Whether a record (as the function would receive it) matches a filter pattern."""
    for key, rule in pattern.items():
        field = value.get(key, _MISSING) if isinstance(value, Mapping) else _MISSING
        if isinstance(rule, Mapping):
            if not matches(rule, field if field is not _MISSING else {}):
                return False
        elif not _matches_any(rule, field):
            return False
    return True


def _matches_any(rules: Sequence[Any], field: Any) -> bool:
    if field is _MISSING:
        return any(isinstance(r, Mapping) and r.get("exists") is False for r in rules)
    values = field if isinstance(field, list) else [field]
    return any(_matches(rule, v) for rule in rules for v in values)


def _matches(rule: Any, value: Any) -> bool:
    if not isinstance(rule, Mapping):
        if isinstance(rule, int | float) and not isinstance(rule, bool):
            return _number(value) == rule
        return bool(rule == value)
    (operator, argument), *_ = rule.items()
    if operator == "exists":
        return argument is True
    if operator == "prefix":
        return isinstance(value, str) and value.startswith(str(argument))
    if operator == "suffix":
        return isinstance(value, str) and value.endswith(str(argument))
    if operator == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(argument).lower()
    if operator == "anything-but":
        excluded = argument if isinstance(argument, list) else [argument]
        return not any(_matches(e, value) for e in excluded)
    return _numeric(argument, _number(value))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _numeric(conditions: Sequence[Any], number: float | None) -> bool:
    if number is None:
        return False
    compare = {
        "=": number.__eq__,
        "<": number.__lt__,
        "<=": number.__le__,
        ">": number.__gt__,
        ">=": number.__ge__,
    }
    pairs = zip(conditions[::2], conditions[1::2], strict=True)
    return all(bool(compare[op](float(limit))) for op, limit in pairs)


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


def scheduled_event(schedule: Schedule, now: dt.datetime) -> Any:
    """What EventBridge sends the function for one run of the rule."""
    if schedule.input is not None:
        return schedule.input
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": schedule.account_id,
        "time": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": schedule.region,
        "resources": [schedule.rule_arn],
        "detail": {},
    }


# ----------------------------------------------------------------- stream polling


class _StreamPoller:
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


class EventSources:
    """Every stream mapping and schedule of the template, started and stopped together."""

    def __init__(
        self,
        template: Template,
        deployment: Deployment,
        invoke: Invoke,
        *,
        streams_client: Any = None,
        schedule_interval: float = DEFAULT_SCHEDULE_SECONDS,
        poll_interval: float = POLL_SECONDS,
        log: Log = log_to_stderr,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """``streams_client``: a ``dynamodbstreams`` client on the deployment's endpoint
        (default: one from the standard configuration chain). LocalConfigError if the
        template asks for something that cannot be emulated."""
        if schedule_interval <= 0 or poll_interval <= 0:
            raise ValueError("intervals must be positive")
        client = streams_client or make_streams_client(deployment.region)
        self._invoke = invoke
        self._log = log
        self._now = now
        self._poll_interval = poll_interval
        self.pollers = [
            _StreamPoller(m, client, invoke, deployment.region, log)
            for m in stream_mappings(template, deployment)
        ]
        self.schedules = schedules(template, deployment, cap=schedule_interval)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Fix the streams' starting positions, then poll and tick in daemon threads."""
        if self._threads:
            return
        self._stop.clear()
        for poller in self.pollers:
            with poller.lock:
                poller.prime()
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"stream {p.mapping.name}", functools.partial(self._poll_forever, p))
            for p in self.pollers
        ]
        targets += [
            (f"schedule {s.name}", functools.partial(self._tick_forever, s)) for s in self.schedules
        ]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads (an invocation in progress finishes first). Safe twice."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def drain(self) -> None:
        """Deliver every record now in the streams, retries included, before returning."""
        for poller in self.pollers:
            with poller.lock:
                for _ in range(_MAX_DRAIN_ROUNDS):
                    if poller.poll() == 0:
                        break

    def run_schedules(self) -> None:
        """Run every scheduled function once, now (what a tick does)."""
        for schedule in self.schedules:
            self._run(schedule)

    # ---- threads ----------------------------------------------------------------------
    def _poll_forever(self, poller: _StreamPoller) -> None:
        reported = ""
        while not self._stop.wait(self._poll_interval):
            try:
                with poller.lock:
                    poller.poll()
                reported = ""
            except Exception as exc:  # noqa: BLE001 - the stack keeps running; say it once
                message = f"{poller.mapping.name}: polling failed: {type(exc).__name__}: {exc}"
                if message != reported:
                    self._log(message)
                    reported = message

    def _tick_forever(self, schedule: Schedule) -> None:
        while not self._stop.wait(schedule.interval):
            self._run(schedule)

    def _run(self, schedule: Schedule) -> None:
        try:
            self._invoke(schedule.function, scheduled_event(schedule, self._now()))
        except Exception as exc:  # noqa: BLE001 - logged; the next tick runs anyway
            self._log(f"{schedule.name}: the function failed: {type(exc).__name__}: {exc}")
