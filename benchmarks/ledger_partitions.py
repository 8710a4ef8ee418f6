"""Hot-partition simulation of the usage ledger's key design (issue 4, item 2).

    .venv/bin/python -m benchmarks.ledger_partitions [--rate 100000] [--seconds 5]
        [--principals 2000] [--zipf 1.1] [--models 20] [--model-zipf 2.0] [--seed 1] [--json]

Question: at ``--rate`` allowed requests/s of skewed traffic, does any partition of the
usage table (no GSI) or of the stream-built hot time index (adapters/archive_index.py)
take more than 1,000 writes/s (DynamoDB's per-partition write limit, 1 KB items)?

Load model (seeded, reproducible), all requests in one UTC hour (starting at its top):

* principals: Zipf(``--zipf``) over ``--principals``; each request picks its principal
  independently, so per-second counts fluctuate as real (Poisson-like) traffic does;
* devices: 1-4 per principal, used evenly, except the hottest principal, which has 5
  devices and sends 80% of its traffic from one of them;
* tokens: each device renews its token every 300 s (a random phase per device), so a
  token carries ~300 s of its device's traffic; the token jti is ``replay_key`` of the
  device key and the issuance proof, as the issuance service derives it;
* models (the ``resource`` attribute): Zipf(``--model-zipf``) over ``--models``; at the
  default 2.0 the top model takes ~63% of all traffic ("one model gets most traffic").

Method: every request is simulated, none is sampled. A request's record id is the real
``replay_key(jkt, random proof jti)``. Writes are counted per partition key and per
second: the base table per distinct ``id`` (DynamoDB spreads items by the hash of the
key), the time index per page partition (each stream batch of ``STREAM_BATCH`` writes
its real encoded page into ``page_key(hour, name)`` and a pointer into the month's
directory partition). The real write path is checked, not assumed: a 1-in-100 sample of
requests is rebuilt as ``UsageRecord`` objects and keyed through
``adapters.usage.usage_item``; an item whose ``id`` differs is a violation (exit 1).
Exit status: 0 if the table and the time index pass and nothing was violated, else 1.
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import hashlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from tokenbroker.adapters.archive_index import directory_key, encode_entries, entry_of, page_key
from tokenbroker.adapters.ledger_items import ATTRIBUTES as ITEM_NAMES
from tokenbroker.adapters.usage import usage_item
from tokenbroker.domain.jose import b64url_encode
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.domain.rfc9449 import replay_key
from tokenbroker.services.authorization import request_hash

LIMIT = 1000  # writes/s per DynamoDB partition (1 KB items)
#: the archive stream function's BatchSize (template.yaml): at this rate its batches fill
STREAM_BATCH = 2500
TOKEN_LIFETIME = 300  # s: each device renews its token this often
HOT_DEVICE_SHARE = 0.8  # the hottest principal sends 80% of its requests from one device
START_MS = calendar.timegm((2026, 11, 27, 4, 0, 0)) * 1000  # top of a UTC hour
RETAIN_UNTIL = START_MS // 1000 + 400 * 86_400
VERIFY_SAMPLE = 100  # re-key 1 request in this many through usage_item


class Request(NamedTuple):
    """One simulated allowed request: everything its ledger record is built from."""

    record_id: str
    at_ms: int
    principal: str
    client_id: str
    jkt: str
    token_jti: str
    proof_jti: str
    resource: str
    hour: str


@dataclass(frozen=True)
class Load:
    principals: list[str]
    principal_cum: list[float]  # cumulative Zipf weights
    devices: list[list[str]]  # principal -> device keys (jkt)
    device_cum: list[list[float]]  # principal -> cumulative device weights
    phase: dict[str, int]  # jkt -> token renewal phase (s)
    models: list[str]
    model_cum: list[float]

    def token_jti(self, jkt: str, second: int) -> str:
        epoch = (second + self.phase[jkt]) // TOKEN_LIFETIME
        return replay_key(jkt, f"issuance-proof-{epoch}")


def _zipf_cum(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / rank**s for rank in range(1, n + 1)))


def build_load(
    principals: int, zipf: float, models: int, model_zipf: float, rng: random.Random
) -> Load:
    names = [f"svc-{rank:04d}" for rank in range(1, principals + 1)]
    devices: list[list[str]] = []
    device_cum: list[list[float]] = []
    phase: dict[str, int] = {}
    for rank, name in enumerate(names, start=1):
        count = 5 if rank == 1 else rng.randint(1, 4)
        keys = [
            b64url_encode(hashlib.sha256(f"{name}/device-{d}".encode()).digest())
            for d in range(count)
        ]
        if rank == 1:
            rest = (1 - HOT_DEVICE_SHARE) / (count - 1)
            weights = [HOT_DEVICE_SHARE] + [rest] * (count - 1)
        else:
            weights = [1.0] * count
        devices.append(keys)
        device_cum.append(list(itertools.accumulate(weights)))
        phase.update((key, rng.randrange(TOKEN_LIFETIME)) for key in keys)
    return Load(
        principals=names,
        principal_cum=_zipf_cum(principals, zipf),
        devices=devices,
        device_cum=device_cum,
        phase=phase,
        models=[f"model-{rank:02d}" for rank in range(1, models + 1)],
        model_cum=_zipf_cum(models, model_zipf),
    )


def generate_second(load: Load, second: int, rate: int, rng: random.Random) -> list[Request]:
    """The ``rate`` requests of one simulated second, with their real record ids."""
    n_principals = range(len(load.principals))
    picks = rng.choices(n_principals, cum_weights=load.principal_cum, k=rate)
    models = rng.choices(load.models, cum_weights=load.model_cum, k=rate)
    base = START_MS + second * 1000
    tokens: dict[str, str] = {}
    requests = []
    for p, model in zip(picks, models, strict=True):
        cum = load.device_cum[p]
        jkt = load.devices[p][bisect.bisect_right(cum, rng.random() * cum[-1])]
        token = tokens.get(jkt)
        if token is None:
            token = tokens[jkt] = load.token_jti(jkt, second)
        at_ms = base + rng.randrange(1000)
        proof_jti = f"{rng.getrandbits(128):032x}"
        principal = load.principals[p]
        requests.append(
            Request(
                replay_key(jkt, proof_jti),
                at_ms,
                principal,
                f"client-{principal}",
                jkt,
                token,
                proof_jti,
                model,
                hour_of(at_ms),
            )
        )
    return requests


def to_record(request: Request) -> UsageRecord:
    """The ledger record the edge writes for this allowed request (services/authorization)."""
    return UsageRecord(
        record_id=request.record_id,
        at_ms=request.at_ms,
        decision=Decision.ALLOW,
        reason="ok",
        principal=request.principal,
        client_id=request.client_id,
        jkt=request.jkt,
        token_jti=request.token_jti,
        proof_jti_hash=request_hash(request.proof_jti),
        method="POST",
        route="/v1/models/{model}/invoke",
        resource=request.resource,
        source_ip="203.0.113.7",
        user_agent="bench/1.0",
        request_id=f"req-{request.proof_jti[:16]}",
        retain_until=RETAIN_UNTIL,
    )


def index_page_units(requests: Sequence[Request], second: int) -> Counter[str]:
    """Write units per partition of the hot tier's time index for one second of
    requests, cut into stream batches of ``STREAM_BATCH``: each batch writes one page
    (its real encoded entries) into ``page_key(hour, name)`` and a 1 WU pointer into the
    month's directory partition (adapters/archive_index.py)."""
    written: Counter[str] = Counter()
    for start in range(0, len(requests), STREAM_BATCH):
        batch = requests[start : start + STREAM_BATCH]
        hour = batch[0].hour
        name = f"{second:09d}{start:09d}-{batch[0].record_id[:16]}"
        images = [
            {
                ITEM_NAMES["record_id"]: r.record_id,
                ITEM_NAMES["at_ms"]: r.at_ms,
                ITEM_NAMES["principal"]: r.principal,
                ITEM_NAMES["jkt"]: r.jkt,
                ITEM_NAMES["token_jti"]: r.token_jti,
                ITEM_NAMES["resource"]: r.resource,
            }
            for r in batch
        ]
        size = len(encode_entries(sorted(entry_of(i) for i in images))) + 100  # + keys
        written[page_key(hour, name)] += -(-size // 1024)
        written[directory_key(hour)] += 1
    return written


def simulate(
    rate: int = 100_000,
    seconds: int = 5,
    principals: int = 2000,
    zipf: float = 1.1,
    models: int = 20,
    model_zipf: float = 2.0,
    seed: int = 1,
    *,
    keep_records: bool = False,
) -> tuple[dict[str, Any], list[UsageRecord]]:
    """Run the simulation; returns the report and (if asked) every record written."""
    started = time.perf_counter()
    rng = random.Random(seed)
    load = build_load(principals, zipf, models, model_zipf, rng)
    records: list[UsageRecord] = []
    violations: list[str] = []
    verified = 0
    table_best: dict[str, Any] = {"key": "", "second": -1, "writes": 0}
    table_partitions = 0
    top_model_requests = 0
    index_best: dict[str, Any] = {"key": "", "second": -1, "writes": 0}
    index_partitions: set[str] = set()
    index_units = 0

    for second in range(seconds):
        requests = generate_second(load, second, rate, rng)
        pages = index_page_units(requests, second)
        index_partitions.update(pages)
        index_units += pages.total()
        key, writes = max(pages.items(), key=itemgetter(1))
        if writes > index_best["writes"]:
            index_best = {"key": key, "second": second, "writes": writes}
        if keep_records:
            records.extend(to_record(r) for r in requests)

        ids = Counter(r.record_id for r in requests)
        table_partitions += len(ids)
        key, writes = max(ids.items(), key=itemgetter(1))
        if writes > table_best["writes"]:
            table_best = {"key": key, "second": second, "writes": writes}
        top_model_requests += Counter(r.resource for r in requests).most_common(1)[0][1]

        for request in requests[::VERIFY_SAMPLE]:
            item = usage_item(to_record(request))
            verified += 1
            if item["id"]["S"] != request.record_id:
                violations.append(f"usage_item keys the table differently for {request}")

    overall = max(
        [
            {"index": "table", "attribute": "id", **table_best},
            {"index": "time_index", "attribute": "pk", **index_best},
        ],
        key=itemgetter("writes"),
    )
    report = {
        "params": {
            "rate": rate,
            "seconds": seconds,
            "principals": principals,
            "zipf": zipf,
            "models": models,
            "model_zipf": model_zipf,
            "seed": seed,
            "hot_device_share": HOT_DEVICE_SHARE,
            "token_lifetime_s": TOKEN_LIFETIME,
        },
        "limit": LIMIT,
        "requests": rate * seconds,
        "top_model_share": round(top_model_requests / (rate * seconds), 3),
        "table": {
            "attribute": "id",
            "hottest": table_best,
            "partitions": table_partitions,
            "pass": table_best["writes"] <= LIMIT,
        },
        "time_index": {
            "hottest": index_best,
            "partitions": len(index_partitions),
            "write_units_per_record": round(index_units / (rate * seconds), 4),
            "pass": index_best["writes"] <= LIMIT,
        },
        "overall": {**overall, "pass": overall["writes"] <= LIMIT},
        "verified_with_usage_item": verified,
        "violations": violations,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    return report, records


def render(report: dict[str, Any]) -> str:
    p = report["params"]
    lines = [
        f"usage ledger partitions: {p['rate']:,} req/s x {p['seconds']} s, "
        f"{p['principals']} principals Zipf {p['zipf']}, {p['models']} models Zipf "
        f"{p['model_zipf']} (top model {report['top_model_share']:.0%}), "
        f"limit {report['limit']:,} writes/s",
        "",
        f"{'index':<13}{'attribute':<17}{'shards':>6}  {'hottest value':<30}{'req/s':>8}"
        f"{'hottest/s':>10}{'partitions':>11}  result",
    ]
    t = report["table"]
    lines.append(
        f"{'(table)':<13}{'id':<17}{'-':>6}  {'(every id distinct)':<30}{'-':>8}"
        f"{t['hottest']['writes']:>10,}{t['partitions']:>11,}  {'PASS' if t['pass'] else 'MISS'}"
    )
    x = report["time_index"]
    lines.append(
        f"{'time index':<13}{'pk (pages)':<17}{'-':>6}  "
        f"{str(x['write_units_per_record']) + ' WU/record':<30}{'-':>8}"
        f"{x['hottest']['writes']:>10,}{x['partitions']:>11,}  {'PASS' if x['pass'] else 'MISS'}"
    )
    o = report["overall"]
    lines += [
        "",
        f"overall hottest partition: {o['index']} {o['attribute']}={o['key']} "
        f"{o['writes']:,} writes/s (second {o['second']}): {'PASS' if o['pass'] else 'MISS'}",
        f"hottest/s = max writes/s on one partition. {report['verified_with_usage_item']:,} "
        f"records re-keyed through usage_item, {len(report['violations'])} mismatches; "
        f"{report['elapsed_s']} s",
    ]
    lines += [f"VIOLATION {v}" for v in report["violations"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger_partitions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=int, default=100_000, help="requests per second")
    parser.add_argument("--seconds", type=int, default=5, help="simulated seconds")
    parser.add_argument("--principals", type=int, default=2000)
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent, principals")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--model-zipf", type=float, default=2.0, help="Zipf exponent, models")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if min(args.rate, args.seconds, args.principals, args.models) < 1:
        parser.error("--rate, --seconds, --principals and --models must be positive")
    report, _ = simulate(
        args.rate,
        args.seconds,
        args.principals,
        args.zipf,
        args.models,
        args.model_zipf,
        args.seed,
    )
    print(json.dumps(report, indent=2) if args.json else render(report))
    ok = report["table"]["pass"] and report["time_index"]["pass"]
    return 0 if ok and not report["violations"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
