"""What the usage ledger costs per million allowed requests, at on-demand list prices.

Measured, not estimated, where the code decides:

- the usage item: built by the real ``ledger_items.to_item`` for requests shaped like
  the edge's (ids, hashes, client ids, a real-looking User-Agent), sized by DynamoDB's
  rules (attribute names + values), and multiplied by the table and every GSI of
  ``template.yaml`` whose key the item carries (``ProjectionType`` decides the copy's
  size);
- the aggregates: the real ``AggregatesService.count_batch`` over Zipf-skewed traffic
  (``benchmarks/ledger_partitions.py``'s load) in batches of the template's
  ``BatchSize``, against moto; every PutItem/UpdateItem/GetItem it makes is counted and
  sized (write units are the larger of the item before and after, per 1 KB); the pages
  it keeps are stored for ``UsageRetentionDays`` (their TTL is the records'), and the
  real reader's pass over every principal of the range is counted (eventually
  consistent Query, 4 KB units) and priced as ``--auditor-reads`` passes per page (an
  assumption: e.g. daily anomaly runs over a week plus ad hoc summaries);
- hot storage: the usage item's TTL is the end of ``HotWindowDays`` (``to_item`` with
  the template default), so DynamoDB keeps each copy (100 bytes of overhead per item
  per copy) for the hot window only;
- the archive tier: the batch's records as the stream's NewImage plain values, gzip
  JSONL, one object per batch and UTC hour (``usage/hour=YYYY-MM-DDTHH/...``); the
  compressed size is measured by gzip of real ``to_item`` records in batches of
  ``BatchSize``, stored over ``UsageRetentionDays``; one PUT per (batch, hour) object;
  priced object by object from ``template.yaml``'s lifecycle rule on ``usage/`` (S3
  Standard until the transition, then the rule's storage class with its minimum days and
  bytes; objects under the rule's size stay in Standard), plus one lifecycle request per
  tiered object and the retrieval fee for ``--archive-reads`` reads of each tiered byte
  (an assumption: how often auditors read old periods);
- the sealing: reads the archive objects (one S3 GET per object) and hashes the records
  (``record_hash``, timed here).

- the hot tier's time index (the usage table keeps no GSI): the real
  ``ArchiveWriter`` + ``HotIndexWriter`` write the index pages of every batch and hour
  into moto's AggregatesTable; every PutItem is counted and sized (write units per 1 KB)
  and the pages are stored for the hot window plus a day.

Assumptions (stated, not measured): a stream shard is busy enough to fill its batches
to BatchSize within the batching window (~100 requests/s per shard at a 10 s window;
quieter shards send smaller batches, hence more aggregate writes per request); Lambda
wall time per DynamoDB round trip is ``--round-trip-ms``; the digest function hashes
records at the rate measured here (``record_hash``).

Prices (us-east-1, on-demand): DynamoDB $0.625 per million write units, $0.125 per
million read units, $0.25 per GB-month; S3 Standard $0.023 per GB-month, PUT $0.005 per
1,000; Lambda $0.0000166667 per GB-second. Compared with CloudTrail data events
($1.00 per million) and API Gateway REST ($3.50 per million).

The second table prices design options with the SAME measured item and aggregate
counts (what each lever would save); it is arithmetic on those measurements, not what
the template deploys, and says so.

Run: ``.venv/bin/python -m benchmarks.ledger_cost [--requests 10000] [--json]``.
Exit status 0 if the deployed design meets both targets ($1.00/M all-in, 1.5 write units
per allowed request on the request path), else 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import math
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer
from moto import mock_aws

from benchmarks.ledger_partitions import build_load, generate_second, to_record
from tokenbroker import bootstrap
from tokenbroker.adapters.archive import PREFIX as ARCHIVE_PREFIX
from tokenbroker.adapters.ledger_items import to_item
from tokenbroker.domain.ledger import hour_of, record_hash
from tokenbroker.domain.models import UsageRecord
from tokenbroker.local.provision import provision
from tokenbroker.local.template import load_template

WRITE_UNIT = 0.625 / 1e6
READ_UNIT = 0.125 / 1e6
GB_MONTH = 0.25
S3_GB_MONTH = 0.023
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
GLACIER_IR_GB_MONTH = 0.004
GLACIER_IR_PUT = 0.02 / 1000
# the storage classes a lifecycle rule may move the archive to: $ per GB-month, $ per
# transition (lifecycle request), $ per GB retrieved, minimum days billed, minimum bytes
# billed per object (us-east-1 list prices)
STORAGE_CLASSES: dict[str, tuple[float, float, float, int, int]] = {
    "STANDARD_IA": (0.0125, 0.01 / 1000, 0.01, 30, 128 * 1024),
    "GLACIER_IR": (GLACIER_IR_GB_MONTH, GLACIER_IR_PUT, 0.03, 90, 128 * 1024),
}
LAMBDA_GB_S = 0.0000166667
CLOUDTRAIL = 1.00  # $ per million data events
API_GATEWAY = 3.50  # $ per million REST requests
ITEM_OVERHEAD = 100  # bytes DynamoDB adds per item (and per index copy) for storage
DAYS_PER_MONTH = 30.4375
GB = 1e9
TARGET_DOLLARS = 1.00
TARGET_WCU = 1.5
REGION = "us-east-1"
USER_AGENT = "tokenbroker-sdk/0.1 python-httpx/0.27.2 CPython/3.13.1"
_des = TypeDeserializer()


# ---- DynamoDB item size (the documented rules) ---------------------------------------


def value_size(value: Mapping[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "B":
        return len(v)
    if kind == "N":
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(value_size({"N": n}) for n in v)
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_size(e) for k, e in v.items())
    raise ValueError(kind)


def item_size(item: Mapping[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(v) for name, v in item.items())


def units(size: int, per: int) -> int:
    return max(1, math.ceil(size / per))


# ---- the traffic ---------------------------------------------------------------------


def edge_records(n: int, seed: int) -> list[UsageRecord]:
    """``n`` allowed requests as the edge records them (ledger_partitions' Zipf load),
    with production-shaped client ids, request ids, addresses and User-Agent."""
    rng = random.Random(seed)
    load = build_load(10_000, 1.1, 20, 1.0, rng)
    out: list[UsageRecord] = []
    second = 0
    while len(out) < n:
        for request in generate_second(load, second, min(1000, n - len(out)), rng):
            client = "tbc_" + hashlib.sha256(request.principal.encode()).hexdigest()[:24]
            ip = hashlib.sha256(request.jkt.encode()).digest()[:3]
            out.append(
                dataclasses.replace(
                    to_record(request),
                    principal=client,
                    client_id=client,
                    source_ip="198." + ".".join(str(b) for b in ip),
                    user_agent=USER_AGENT,
                    request_id=str(uuid.UUID(int=rng.getrandbits(128))),
                )
            )
        second += 1
    return out


# ---- the usage table -----------------------------------------------------------------


@dataclasses.dataclass
class Table:
    key: set[str]
    indexes: list[tuple[str, set[str], str, list[str]]]  # name, keys, projection, include

    @classmethod
    def of(cls, props: Mapping[str, Any]) -> Table:
        indexes = []
        for gsi in props.get("GlobalSecondaryIndexes", []):
            keys = {k["AttributeName"] for k in gsi["KeySchema"]}
            projection = gsi["Projection"]
            indexes.append(
                (
                    gsi["IndexName"],
                    keys,
                    projection["ProjectionType"],
                    projection.get("NonKeyAttributes", []),
                )
            )
        return cls({k["AttributeName"] for k in props["KeySchema"]}, indexes)

    def without(self, index: str) -> Table:
        """This table without the GSI ``index`` (what it costs is the difference)."""
        return Table(self.key, [i for i in self.indexes if i[0] != index])

    def copies(self, item: Mapping[str, Any]) -> list[tuple[str, int]]:
        """(where, bytes) of every copy DynamoDB keeps of ``item``: the table, and each
        index whose keys the item has (sparse indexes skip the rest)."""
        out = [("table", item_size(item))]
        for name, keys, projection, include in self.indexes:
            if not keys <= set(item):
                continue
            if projection == "ALL":
                kept = dict(item)
            else:
                wanted = self.key | keys | (set(include) if projection == "INCLUDE" else set())
                kept = {k: v for k, v in item.items() if k in wanted}
            out.append((name, item_size(kept)))
        return out


# ---- the aggregates, counted ---------------------------------------------------------


@dataclasses.dataclass
class Counted:
    write_units: int = 0
    read_units: int = 0
    writes: int = 0
    reads: int = 0
    calls: Counter[str] = dataclasses.field(default_factory=Counter)


@contextmanager
def counting(client: Any, sizes: dict[tuple[str, str], int]) -> Iterator[Counted]:
    """Counts and sizes the aggregates' DynamoDB calls (write units: the larger of the
    item's size before and after; reads: 4 KB units, consistent)."""
    counted = Counted()
    table_of: dict[str, str] = {}

    def key_of(params: Mapping[str, Any]) -> tuple[str, str]:
        k = params.get("Key") or params["Item"]
        return (k["pk"]["S"], k["sk"]["S"])

    def before(params: Mapping[str, Any], model: Any, **kw: Any) -> None:
        name = model.name
        counted.calls[name] += 1
        table_of["last"] = params["TableName"]
        if name == "PutItem":
            key = key_of(params)
            new = item_size(params["Item"])
            counted.write_units += units(max(new, sizes.get(key, 0)), 1024)
            counted.writes += 1
            sizes[key] = new

    def after(http_response: Any, parsed: Mapping[str, Any], model: Any, **kw: Any) -> None:
        name = model.name
        if name == "GetItem":
            item = parsed.get("Item") or {}
            counted.reads += 1
            counted.read_units += units(item_size(item), 4096)
        if name == "UpdateItem":
            counted.writes += 1
        if name == "Query":
            # eventually consistent: half a unit per 4 KB of the items read, per call
            size = sum(item_size(i) for i in parsed.get("Items", []))
            counted.reads += 1
            counted.read_units += units(size, 4096)

    def update_size(params: Mapping[str, Any], **kw: Any) -> None:
        key = key_of(params)
        before_size = sizes.get(key, 0)
        added = sum(value_size(v) for v in params["ExpressionAttributeValues"].values())
        after_size = before_size + added if before_size else item_size(params["Key"]) + added + 6
        counted.write_units += units(max(before_size, after_size), 1024)
        sizes[key] = after_size

    events = client.meta.events
    events.register("provide-client-params.dynamodb.*", before)
    events.register("provide-client-params.dynamodb.UpdateItem", update_size)
    events.register("after-call.dynamodb.*", after)
    try:
        yield counted
    finally:  # a later counting (the auditor's pass) must not count into this one
        events.unregister("provide-client-params.dynamodb.*", before)
        events.unregister("provide-client-params.dynamodb.UpdateItem", update_size)
        events.unregister("after-call.dynamodb.*", after)


@dataclasses.dataclass
class Aggregates:
    """The aggregates' counted writes, the bytes of the pages they keep, and what one
    auditor pass over every principal of the whole range reads."""

    counted: Counted
    cpu_seconds: float
    stored: dict[tuple[str, str], int]
    auditor: Counted


def count_aggregates(records: list[UsageRecord], batch_size: int) -> Aggregates:
    """Runs the real stream-side service over the records in batches, on moto, then the
    real reader once over the range (``audit summary`` of every principal)."""
    from tokenbroker.adapters.aggregates import AggregatesReader

    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            load_template(), session_or_clients=session, stack_name="cost", region=REGION
        )
        client = session.client("dynamodb")
        env = deployment.environment("AggregatesFunction")
        settings = bootstrap.Settings.from_mapping(env)
        container = bootstrap.build(settings, aws=lambda name: client)
        service = container.aggregates
        images = [{k: _des.deserialize(v) for k, v in to_item(r).items()} for r in records]
        sizes: dict[tuple[str, str], int] = {}
        with counting(client, sizes) as counted:
            started = time.process_time()
            for start in range(0, len(images), batch_size):
                service.count_batch(images[start : start + batch_size])
            cpu = time.process_time() - started
        reader = AggregatesReader(client, table=settings.aggregates_table)
        since = min(r.at_ms for r in records)
        until = max(r.at_ms for r in records) + 1
        with counting(client, {}) as auditor:
            reader.summaries(since, until)
    return Aggregates(counted, cpu, sizes, auditor)


def count_index(
    plain: list[dict[str, Any]], batch_size: int
) -> tuple[Counted, dict[tuple[str, str], int]]:
    """The hot-tier time index pages the archive function writes for these records
    (stream images), in batches, on moto: (counted PutItems, bytes per item kept)."""
    from tokenbroker.adapters.archive import SUFFIX, StreamImage, hour_prefix, plan_batch
    from tokenbroker.adapters.archive_index import HotIndexWriter

    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            load_template(), session_or_clients=session, stack_name="cost", region=REGION
        )
        client = session.client("dynamodb")
        settings = bootstrap.Settings.from_mapping(deployment.environment("ArchiveFunction"))
        writer = HotIndexWriter(
            client,
            table=settings.aggregates_table,
            hot_window_days=settings.usage_hot_window_days,
        )
        sizes: dict[tuple[str, str], int] = {}
        with counting(client, sizes) as counted:
            for start in range(0, len(plain), batch_size):
                batch = [
                    StreamImage(f"{start + n:021d}", f"ev-{start + n}", image)
                    for n, image in enumerate(plain[start : start + batch_size])
                ]
                for key, (hour, images) in plan_batch(batch).items():
                    name = key[len(hour_prefix(hour)) : -len(SUFFIX)]
                    writer.write_page(hour, name, images)
    return counted, sizes


# ---- the bill ------------------------------------------------------------------------


def template_defaults(template: Any) -> dict[str, Any]:
    fn = "AWS::Serverless::Function"
    aggregates = template.sam_properties("AggregatesFunction", fn)
    digest = template.sam_properties("DigestFunction", fn)
    stream = next(iter(aggregates["Events"].values()))["Properties"]
    return {
        "retention_days": int(template.parameters_defaults()["UsageRetentionDays"]),
        "hot_window_days": int(template.parameters_defaults()["HotWindowDays"]),
        "batch_size": int(stream["BatchSize"]),
        "aggregates_memory_mb": int(aggregates.get("MemorySize", 128)),
        "digest_memory_mb": int(digest.get("MemorySize", 128)),
        "usage": Table.of(template.tables()["UsageTable"]),
    }


def archive_objects(plain: list[dict[str, Any]], batch_size: int) -> list[int]:
    """The gzip size of each archive object for these records: per stream batch, one
    gzip JSONL object per UTC hour the batch touches (as the stream writes them)."""
    sizes: list[int] = []
    for start in range(0, len(plain), batch_size):
        hours: dict[str, list[dict[str, Any]]] = {}
        for p in plain[start : start + batch_size]:
            hours.setdefault(hour_of(int(p["at"])), []).append(p)
        for members in hours.values():
            body = "\n".join(json.dumps(p, sort_keys=True, default=str) for p in members)
            sizes.append(len(gzip.compress(body.encode(), 6)))
    return sizes


@dataclasses.dataclass(frozen=True)
class Tiering:
    """The template's lifecycle transition of the archive (``usage/`` in DigestBucket):
    objects larger than ``min_bytes`` move to ``storage_class`` after ``after_days``."""

    storage_class: str
    after_days: int
    min_bytes: int


def archive_tiering(template: Any) -> Tiering | None:
    """The one transition rule on the archive's prefix, as template.yaml declares it
    (``Ref`` s resolved to the parameters' defaults); None if the archive stays put."""
    defaults = template.parameters_defaults()

    def value(v: Any) -> int:
        return int(defaults[v["Ref"]]) if isinstance(v, dict) else int(v)

    bucket = template.resources("AWS::S3::Bucket")["DigestBucket"]
    rules = [
        r
        for r in bucket.get("LifecycleConfiguration", {}).get("Rules", [])
        if r.get("Status") == "Enabled"
        and r.get("Prefix") == ARCHIVE_PREFIX
        and r.get("Transitions")
    ]
    if not rules:
        return None
    [rule] = rules
    [transition] = rule["Transitions"]
    return Tiering(
        storage_class=transition["StorageClass"],
        after_days=value(transition["TransitionInDays"]),
        min_bytes=value(rule.get("ObjectSizeGreaterThan", 0)),
    )


def archive_bill(
    sizes: list[int], tiering: Tiering | None, retention_days: int, reads: float
) -> tuple[float, float, float]:
    """$ (storage, transitions, retrievals) of these archive objects over the retention,
    object by object: S3 Standard until the transition, then the class's price for the
    rest (at least its minimum days, each object at least its minimum bytes); objects
    at or under the rule's size stay in Standard. ``reads``: how many times an auditor
    reads each tiered byte (an assumption, stated in the report)."""
    storage = transitions = retrievals = 0.0
    for size in sizes:
        moves = (
            tiering is not None and size > tiering.min_bytes and tiering.after_days < retention_days
        )
        if not moves:
            storage += size / GB * S3_GB_MONTH * retention_days / DAYS_PER_MONTH
            continue
        assert tiering is not None
        price, transition, retrieval, min_days, min_bytes = STORAGE_CLASSES[tiering.storage_class]
        rest = max(retention_days - tiering.after_days, min_days)
        storage += size / GB * S3_GB_MONTH * tiering.after_days / DAYS_PER_MONTH
        storage += max(size, min_bytes) / GB * price * rest / DAYS_PER_MONTH
        transitions += transition
        retrievals += size / GB * retrieval * reads
    return storage, transitions, retrievals


def bill(args: argparse.Namespace) -> dict[str, Any]:
    template = load_template()
    d = template_defaults(template)
    records = edge_records(args.requests, args.seed)
    n = len(records)
    per_million = 1e6 / n
    items = [to_item(r, hot_window_days=d["hot_window_days"]) for r in records]
    hot_months = d["hot_window_days"] / DAYS_PER_MONTH
    months = d["retention_days"] / DAYS_PER_MONTH

    def usage(table: Table) -> tuple[float, float, list[tuple[str, float]]]:
        """(write units per request, $/M writes, $/M hot storage) and per-copy costs."""
        copies = [table.copies(item) for item in items]
        wu = sum(units(size, 1024) for c in copies for _, size in c) / n
        stored = sum(size + ITEM_OVERHEAD for c in copies for _, size in c) / n
        per_copy: dict[str, list[int]] = {}
        for c in copies:
            for where, size in c:
                per_copy.setdefault(where, []).append(size)
        costs = [
            (
                where,
                sum(units(z, 1024) for z in sizes) * per_million * WRITE_UNIT
                + sum(z + ITEM_OVERHEAD for z in sizes) / n / GB * GB_MONTH * hot_months * 1e6,
            )
            for where, sizes in per_copy.items()
        ]
        return wu, stored, costs

    deployed = d["usage"]
    request_wu, stored, index_costs = usage(deployed)
    base_bytes = sum(item_size(i) for i in items) / n

    aggregates = count_aggregates(records, d["batch_size"])
    counted, agg_cpu = aggregates.counted, aggregates.cpu_seconds
    round_trips = counted.calls["GetItem"] + counted.calls["PutItem"] + counted.calls["UpdateItem"]
    agg_seconds = agg_cpu + round_trips * args.round_trip_ms / 1000
    agg_stored = sum(z + ITEM_OVERHEAD for z in aggregates.stored.values()) / n

    plain = [{k: _des.deserialize(v) for k, v in i.items()} for i in items]
    started = time.process_time()
    for item in plain:
        record_hash(item)
    hash_seconds = time.process_time() - started
    object_sizes = archive_objects(plain, d["batch_size"])
    objects, gz_bytes = len(object_sizes), sum(object_sizes)
    gz_per_record = gz_bytes / n
    tiering = archive_tiering(template)
    tier_storage, tier_moves, tier_reads = archive_bill(
        object_sizes, tiering, d["retention_days"], args.archive_reads
    )
    tier_name = (
        f"S3 Standard {tiering.after_days} days, then {tiering.storage_class} "
        f"(objects > {tiering.min_bytes // 1024} KB)"
        if tiering
        else "S3 Standard"
    )
    indexed, page_sizes = count_index(plain, d["batch_size"])
    index_stored = sum(z + ITEM_OVERHEAD for z in page_sizes.values()) / n
    index_months = (d["hot_window_days"] + 1) / DAYS_PER_MONTH

    shared = {
        "aggregates writes (counted)": counted.write_units * per_million * WRITE_UNIT,
        "aggregates reads (counted)": counted.read_units * per_million * READ_UNIT,
        "aggregates compute": agg_seconds
        * d["aggregates_memory_mb"]
        / 1024
        * per_million
        * LAMBDA_GB_S,
        "aggregates storage (pages, retention)": agg_stored / GB * GB_MONTH * months * 1e6,
        f"aggregates auditor reads (every page read {args.auditor_reads} times)": (
            aggregates.auditor.read_units / 2 * args.auditor_reads * per_million * READ_UNIT
        ),
        f"archive storage (gzip, retention: {tier_name})": tier_storage * per_million,
        "archive PUTs (one per batch and hour)": objects * per_million * S3_PUT,
        "archive lifecycle transitions (one per tiered object)": tier_moves * per_million,
        f"archive retrievals (each tiered byte read {args.archive_reads:g} times)": tier_reads
        * per_million,
        "hot time index writes (counted, off the request path)": indexed.write_units
        * per_million
        * WRITE_UNIT,
        "hot time index storage (hot window + 1 day)": index_stored
        / GB
        * GB_MONTH
        * index_months
        * 1e6,
        "sealing reads (S3 GET per archive object)": objects * per_million * S3_GET,
        "sealing compute": hash_seconds * d["digest_memory_mb"] / 1024 * per_million * LAMBDA_GB_S,
    }
    rows = {
        "usage writes (table, no GSI, as deployed)": request_wu * WRITE_UNIT * 1e6,
        "usage hot storage (table, hot window)": stored / GB * GB_MONTH * hot_months * 1e6,
        **shared,
    }
    total = sum(rows.values())

    # levers: the same measurements priced with and without each one (arithmetic)
    full_store = (base_bytes + ITEM_OVERHEAD) / GB * GB_MONTH * 1e6
    legacy_gsis = 5  # the four per-record GSIs removed, plus by_hour (issue 9)
    before = (1 + legacy_gsis) * WRITE_UNIT * 1e6 + (1 + legacy_gsis) * full_store * months
    no_gsis = WRITE_UNIT * 1e6 + full_store * months
    standard_archive = archive_bill(object_sizes, None, d["retention_days"], 0)[0] * per_million
    hot = (
        WRITE_UNIT * 1e6
        + full_store * hot_months
        + standard_archive
        + shared["archive PUTs (one per batch and hour)"]
    )
    glacier = (
        gz_per_record / GB * GLACIER_IR_GB_MONTH * months * 1e6
        + objects * per_million * GLACIER_IR_PUT
    )
    # aggregates and sealing are the same in every lever row
    rest = sum(v for k, v in shared.items() if k.startswith(("aggregates", "sealing")))
    levers = {
        "usage table, 6 full copies for the retention (issue 9 start)": before + rest,
        "- per-record GSIs (5 copies) off the request path": no_gsis + rest,
        "- 30-day hot window, gzip archive in S3 Standard for the retention": hot + rest,
        "- archive in Glacier Instant Retrieval from the first day": hot
        - standard_archive
        - shared["archive PUTs (one per batch and hour)"]
        + glacier
        + rest,
    }
    return {
        "requests_simulated": n,
        "retention_days": d["retention_days"],
        "hot_window_days": d["hot_window_days"],
        "batch_size": d["batch_size"],
        "usage_item_bytes": round(base_bytes, 1),
        "usage_copies_per_record": round(len(deployed.indexes) + 1, 2),
        "usage_bytes_stored_per_record": round(stored, 1),
        "write_units_per_request_on_request_path": round(request_wu, 3),
        "index_write_units_per_record": round(indexed.write_units / n, 4),
        "index_items": indexed.writes,
        "index_bytes_stored_per_record": round(index_stored, 1),
        "usage_cost_per_copy": {k: round(v, 4) for k, v in index_costs},
        "aggregates_write_units_per_request": round(counted.write_units / n, 4),
        "aggregates_calls": dict(counted.calls),
        "aggregates_items": len(aggregates.stored),
        "aggregates_bytes_stored_per_record": round(agg_stored, 1),
        "aggregates_auditor_pass": {
            "queries": aggregates.auditor.reads,
            "read_units": aggregates.auditor.read_units / 2,
        },
        "archive_objects": objects,
        "archive_gzip_bytes_per_record": round(gz_per_record, 1),
        "dollars_per_million": {k: round(v, 4) for k, v in rows.items()},
        "total_dollars_per_million": round(total, 4),
        "levers_dollars_per_million": {k: round(v, 4) for k, v in levers.items()},
        "meets_targets": total <= TARGET_DOLLARS and request_wu <= TARGET_WCU,
    }


def print_report(report: dict[str, Any]) -> None:
    print(
        f"Ledger cost per million allowed requests ({report['requests_simulated']:,} simulated, "
        f"hot window {report['hot_window_days']} days, retention {report['retention_days']} "
        f"days, stream batches of {report['batch_size']})"
    )
    print(
        f"usage item {report['usage_item_bytes']} B, {report['usage_copies_per_record']} copies "
        f"per record as deployed; archive {report['archive_gzip_bytes_per_record']} B gzip per "
        f"record in {report['archive_objects']} objects"
    )
    print("usage table cost per copy, as deployed ($/M: writes + hot storage):")
    for where, dollars in report["usage_cost_per_copy"].items():
        print(f"  {where:<20}{dollars:>10.4f}")
    rows = report["dollars_per_million"]
    print("AS DEPLOYED (usage table without GSI; stream-built hot time index)")
    width = max(len(k) for k in rows) + 2
    for name, dollars in rows.items():
        print(f"  {name:<{width}}{dollars:>10.4f}")
    print(f"  {'TOTAL (ledger, all-in)':<{width}}{report['total_dollars_per_million']:>10.4f}")
    print(f"CloudTrail data events {CLOUDTRAIL:.4f}; API Gateway REST requests {API_GATEWAY:.4f}")
    print(
        f"write units per allowed request on the request path: "
        f"{report['write_units_per_request_on_request_path']} as deployed "
        f"(target <= {TARGET_WCU}); off the path: aggregates "
        f"{report['aggregates_write_units_per_request']}, time index "
        f"{report['index_write_units_per_record']} ({report['index_items']} items, "
        f"{report['index_bytes_stored_per_record']} B stored per record)"
    )
    auditor = report["aggregates_auditor_pass"]
    print(
        f"aggregates: {report['aggregates_items']} page items, "
        f"{report['aggregates_bytes_stored_per_record']} B stored per record; one auditor "
        f"pass over every principal of the range: {auditor['queries']} queries, "
        f"{auditor['read_units']} read units"
    )
    print("levers, all-in (same measured item, archive, aggregates, sealing; arithmetic, $/M):")
    previous = None
    for name, dollars in report["levers_dollars_per_million"].items():
        saved = "" if previous is None else f"  (saves {previous - dollars:.4f})"
        print(f"  {name:<70}{dollars:>10.4f}{saved}")
        previous = dollars
    verdict = "meets" if report["meets_targets"] else "MISSES"
    print(f"deployed design {verdict} the targets (<= ${TARGET_DOLLARS:.2f}/M, <= {TARGET_WCU} WU)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--round-trip-ms", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--auditor-reads",
        type=int,
        default=30,
        help="times an auditor (summary, anomalies) reads each aggregates page over its life",
    )
    parser.add_argument(
        "--archive-reads",
        type=float,
        default=1.0,
        help="times an auditor reads each archived byte after it left S3 Standard "
        "(audit usage/export/verify over old periods, Athena scans); retrievals are billed",
    )
    args = parser.parse_args(argv)
    report = bill(args)
    if args.json:
        print(json.dumps(report, indent=2, default=_json))
    else:
        print_report(report)
    return 0 if report["meets_targets"] else 1


def _json(value: Any) -> Any:
    return int(value) if isinstance(value, Decimal) else str(value)


if __name__ == "__main__":
    sys.exit(main())
