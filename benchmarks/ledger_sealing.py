"""Sealing the usage ledger's digests at internet scale (issue 9): memory and time per
sealing invocation at ``--rate`` allowed requests/s.

    .venv/bin/python -m benchmarks.ledger_sealing [--rate 100000] [--period 3600]
        [--segments 1] [--json]

Question: does one invocation of the digest function stay under 256 MB and 60 s
whatever the traffic, and how many invocations does an hour of traffic take?

Model: the real sealing code (``DigestService``, ``domain.digest_format``) reading the
real archive reader (``adapters.archive.ArchiveReader``: gzip JSONL streamed line by
line): a period is sealed one archive object (segment) at a time, for every period of
its hour at once. ArchiveFunction writes one object per stream batch and hour, and at
load every batch is full, so an hour is ``rate x 3600 / OBJECT_RECORDS`` objects of
OBJECT_RECORDS (2,500) records. Each record is a full usage item as
``adapters.usage.usage_item`` writes it, converted to plain values as the stream
delivers it, encoded by the archive's own ``encode_object`` (same object sizes as in
S3). What is not real: the objects are generated in memory instead of read from S3
(network time, ~1 GET per object and ~1 ListObjectVersions per 1,000 objects, is not
counted), the digest store is a directory (uploads stream to disk as multipart parts
would to S3) and the key is a local P-256 key (one signature per period: negligible).

Method: every measured invocation runs in a fresh Python process (``--_invoke``), so its
peak resident memory (``VmHWM``: interpreter, imports and all) is what Lambda
would count. Measured: ``--segments`` full-size worker invocations (one object each),
the same with objects of 1/100 of the size (memory must not grow with the records), and the
finishing invocation (reads every segment's part, writes the index and the signed
statement). The hour is then counted, not run: all objects are the same size, so an
hour is ``objects per hour`` object-sized units in batches of
``floor(WORK_BUDGET_MS / time per segment)``; ``--hour`` also runs a whole hour at the
given rate in one process (use it at small rates: that is what the smoke test does).
Exit status 0 if every measured invocation stays under both limits, else 1.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tokenbroker.adapters.archive import SUFFIX, ArchiveReader, encode_object
from tokenbroker.adapters.digest_store import PART_BYTES
from tokenbroker.adapters.ledger_scan import plain
from tokenbroker.adapters.usage import usage_item
from tokenbroker.domain.digest_format import Ref, SegmentSeal, Version, encode_part
from tokenbroker.domain.jose import b64url_encode
from tokenbroker.domain.ledger import HOUR_SHARDS
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.services.digests import WORK_BUDGET_MS, DigestService

ROOT = Path(__file__).resolve().parents[1]
SHARDS = HOUR_SHARDS
START_MS = calendar.timegm((2026, 11, 27, 4, 0, 0)) * 1000  # top of a UTC hour
GRACE_S = 900
_MINUTE = 60_000
MEMORY_LIMIT_MB = 256
TIME_LIMIT_S = 60.0
SCHEDULED_PER_HOUR = 4  # rate(15 minutes)
#: ArchiveFunction's BatchSize: records per archive object (segment) at load
OBJECT_RECORDS = 2500
#: DigestFunction's MemorySize (one vCPU) and the arm64 Lambda list price, us-east-1
LAMBDA_MB = 1769
PRICE_PER_GB_SECOND = 0.0000133334


# ------------------------------------------------------------------ the fakes
def objects_per_hour(rate: float) -> int:
    """Archive objects per hour: ArchiveFunction writes one per batch and hour, and at
    load every batch is full (BatchSize OBJECT_RECORDS)."""
    return max(1, math.ceil(rate * 3600 / OBJECT_RECORDS))


def records_per_object(rate: float) -> int:
    return round(rate * 3600 / objects_per_hour(rate))


class _Objects:
    """The part of the S3 client ArchiveReader uses, over generated objects: each
    segment's gzip JSONL body is built by the real encoder (``encode_object``) from full
    usage items (``usage_item`` -> ``plain``, as the stream delivers them), before the
    invocation's clock starts (``prepare``)."""

    def __init__(self, archive: SyntheticArchive) -> None:
        self._archive = archive
        self._bodies: dict[str, bytes] = {}

    def prepare(self, names: Sequence[str]) -> None:
        for name in names:
            self._bodies[name] = encode_object(self._archive.images(name))

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        name = Key.rsplit("/", 1)[1][: -len(SUFFIX)]
        body = self._bodies.pop(name, None)  # read once per invocation
        if body is None:
            body = encode_object(self._archive.images(name))
        return {"Body": io.BytesIO(body)}

    def list_object_versions(self, *, Bucket: str, Prefix: str, **page: Any) -> dict[str, Any]:
        """The hour's objects, 1,000 a page as S3 lists them."""
        names = self._archive.names()
        first = int(page.get("KeyMarker") or 0)
        chunk = names[first : first + 1000]
        return {
            "Versions": [
                {"Key": f"{Prefix}{n}{SUFFIX}", "VersionId": "v1", "IsLatest": True} for n in chunk
            ],
            "IsTruncated": first + 1000 < len(names),
            "NextKeyMarker": str(first + 1000),
            "NextVersionIdMarker": "v1",
        }


class SyntheticArchive:
    """LedgerReader: the real ArchiveReader (gzip JSONL streamed line by line) over an
    hour of ``objects_per_hour`` objects of ``records_per_object`` records each, their
    records spread over the hour; ``scale`` shrinks every object (memory must not grow
    with the records)."""

    def __init__(self, rate: float, scale: float = 1.0) -> None:
        self.rate = rate
        self.per_object = round(records_per_object(rate) * scale)
        self._names: list[str] | None = None
        self.objects = _Objects(self)
        self._reader = ArchiveReader(self.objects, bucket="bench")
        sample = UsageRecord(
            record_id="x",
            at_ms=START_MS,
            decision=Decision.ALLOW,
            reason="ok",
            principal="tbc_0123456789abcdef01234567",
            client_id="tbc_0123456789abcdef01234567",
            jkt="j" * 43,
            token_jti="t" * 43,
            proof_jti_hash="p" * 64,
            method="POST",
            route="/v1/models/{model}/invoke",
            resource="model:chat",
            source_ip="198.51.100.7",
            user_agent="python-httpx/0.28.1 tokenbroker-client/1.0",
            request_id="r" * 36,
            retain_until=START_MS // 1000 + 400 * 86_400,
            event=EventType.REQUEST,
        )
        self._template = usage_item(sample)

    def names(self) -> list[str]:
        if self._names is None:  # listed page by page: build once
            self._names = [f"{n:06d}-bench" for n in range(objects_per_hour(self.rate))]
        return self._names

    def count(self, start_ms: int, end_ms: int) -> int:
        """Records of one object in [start_ms, end_ms) (every object alike)."""
        return sum(1 for i in range(self.per_object) if start_ms <= self._at(i) < end_ms)

    def _at(self, i: int) -> int:
        return START_MS + (i * 3_600_000) // max(1, self.per_object)

    def images(self, segment: str) -> Iterator[dict[str, Any]]:
        """One object's records (the same whichever range reads it)."""
        for i in range(self.per_object):
            digest = hashlib.sha256(f"{segment}/{i}".encode()).digest()
            item = dict(self._template)
            item["id"] = {"S": b64url_encode(digest)}  # as replay_key derives it
            item["at"] = {"N": str(self._at(i))}
            item["token_jti"] = {"S": b64url_encode(digest[::-1])}
            item["proof_jti_hash"] = {"S": digest.hex()}
            yield plain(item)

    def segments(self, start_ms: int, end_ms: int) -> list[str]:
        return self._reader.segments(start_ms, end_ms)

    def segment_records(self, segment: str, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        return self._reader.segment_records(segment, start_ms, end_ms)

    def groups(self) -> dict[str, list[str]]:
        """Segment (object group) -> its object names, as the real reader groups them."""
        found: dict[str, list[str]] = {}
        for name in self.names():
            found.setdefault(self._reader.group_of(name), []).append(name)
        return found

    def prepare(self, segments: Sequence[str]) -> None:
        """Build the objects of ``segments`` before the clock starts."""
        groups = self.groups()
        self.objects.prepare([n for g in segments for n in groups.get(g, [])])


class DiskStore:
    """DigestStore on a directory: every write a new numbered version."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def _dir(self, ref: Ref) -> Path:
        return self.root / ref.kind / str(ref.period) / (ref.segment or "_")

    def versions(self, ref: Ref) -> list[Version]:
        folder = self._dir(ref)
        if not folder.exists():
            return []
        numbers = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)
        return [Version(str(n), False, n) for n in numbers]

    def get(self, ref: Ref, version_id: str | None = None) -> bytes | None:
        versions = self.versions(ref)
        if not versions:
            return None
        return (self._dir(ref) / (version_id or versions[0].version_id)).read_bytes()

    def chunks(self, ref: Ref, version_id: str | None = None) -> Iterator[bytes]:
        versions = self.versions(ref)
        if not versions:
            return
        with open(self._dir(ref) / (version_id or versions[0].version_id), "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def _next(self, ref: Ref) -> Path:
        folder = self._dir(ref)
        folder.mkdir(parents=True, exist_ok=True)
        versions = self.versions(ref)
        return folder / str(int(versions[0].version_id) + 1 if versions else 1)

    def put(self, ref: Ref, body: bytes) -> None:
        self._next(ref).write_bytes(body)

    def put_new(self, ref: Ref, body: bytes) -> bool:
        if self.versions(ref):
            return False
        self.put(ref, body)
        return True

    def upload(self, ref: Ref) -> _DiskUpload:
        return _DiskUpload(self._next(ref))

    def parts(self, period_start_ms: int) -> list[bytes]:
        folder = self.root / "part" / str(period_start_ms)
        if not folder.exists():
            return []
        return [v.read_bytes() for d in sorted(folder.iterdir()) for v in d.iterdir()]

    def latest_sealed(self, *, before_ms: int, not_before_ms: int) -> int | None:
        folder = self.root / "statement"
        found = [int(p.name) for p in folder.iterdir()] if folder.exists() else []
        found = [p for p in found if not_before_ms <= p < before_ms]
        return max(found) if found else None


class _DiskUpload:
    """Holds up to one multipart part in memory, as the S3 adapter's upload does."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._partial = path.with_suffix(".part")
        self._file = open(self._partial, "wb")  # noqa: SIM115 -- closed in commit/abort
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= PART_BYTES:
            self._file.write(self._buffer)
            self._buffer = bytearray()

    def commit(self) -> None:
        self._file.write(self._buffer)
        self._file.close()
        os.replace(self._partial, self._path)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink()


class LocalKey:
    """DigestSigner with a local P-256 key (KMS is one call per period)."""

    key_id = "benchmark-key"
    algorithm = "ECDSA_SHA_256"

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def names(self) -> frozenset[str]:
        return frozenset({self.key_id})


def service(
    rate: float,
    period_s: int,
    root: str,
    key: LocalKey | None = None,
    ledger: SyntheticArchive | None = None,
) -> DigestService:
    return DigestService(
        store=DiskStore(root),
        ledger=ledger or SyntheticArchive(rate),
        signer=key or LocalKey(),
        period_seconds=period_s,
        grace_seconds=GRACE_S,
        clock=time.time,
    )


def due_at(period_start: int, period_s: int) -> int:
    return period_start + period_s * 1000 + GRACE_S * 1000 + 1


# ---------------------------------------------------------------- invocations
def _invoke(spec: dict[str, Any]) -> dict[str, Any]:
    """One invocation, in this (fresh) process: a worker sealing ``segments`` (archive
    objects) for every period of the hour, or the finisher (every other segment already
    recorded in a part)."""
    rate, period_s, root = spec["rate"], spec["period"], spec["root"]
    archive = SyntheticArchive(rate, spec.get("scale", 1.0))
    digests = service(rate, period_s, root, ledger=archive)
    periods = list(range(START_MS, START_MS + 3_600_000, period_s * 1000))
    segments = spec["segments"]
    if spec["kind"] == "finisher":
        _others_sealed(archive, segments, periods, root)
    archive.prepare(segments)  # the objects' bytes, as S3 would hold them
    in_segments = sum(len(archive.groups()[g]) for g in segments)
    started, cpu = time.perf_counter(), time.process_time()
    sealed = digests.seal_segments(periods, segments, now_ms=due_at(periods[-1], period_s))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "kind": spec["kind"],
        "segments": len(segments),
        "objects": in_segments,
        "records": archive.per_object * in_segments,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_mb": round(peak_kb() / 1024, 1),
        "sealed": sealed,
    }


def _others_sealed(
    archive: SyntheticArchive, segments: Sequence[str], periods: Sequence[int], root: str
) -> None:
    """The finisher's setup: every other segment recorded in a part (freed before the
    measured sealing starts)."""
    others = [s for s in archive.groups() if s not in segments]
    seals = [SegmentSeal(s, 1, "0" * 64) for s in others]
    for period in periods:
        DiskStore(root).put(Ref("part", period, "others"), encode_part(period, others, seals))


def peak_kb() -> int:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss across fork + exec, so a child of a big process (pytest) would report
    its parent's size; VmHWM belongs to the program's own address space."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(
    kind: str, rate: float, period_s: int, segments: Sequence[str], scale: float = 1.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tb-sealing-") as root:
        spec = {"kind": kind, "rate": rate, "period": period_s, "root": root, "scale": scale}
        spec["segments"] = list(segments)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.ledger_sealing", "--_invoke", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result


def run_hour(rate: float, period_s: int, root: str, *, budget_ms: int = 0) -> dict[str, Any]:
    """A whole hour in this process, as the function would: the scheduled run with a
    ``budget_ms`` budget dispatching the rest to workers (run here, in order), then
    verification of every period. For small rates."""
    key = LocalKey()
    digests = service(rate, period_s, root, key)
    queued: list[tuple[list[int], list[str]]] = []

    class Dispatcher:
        def dispatch(self, periods: Sequence[int], segments: Sequence[str]) -> None:
            queued.append((list(periods), list(segments)))

    now = START_MS + 3_600_000 + GRACE_S * 1000 + 1
    # the chain starts just before the hour (else a first run goes back 48 periods only)
    digests.seal(START_MS - period_s * 1000, now_ms=now)
    first = digests.seal_due(now, dispatcher=Dispatcher(), budget_ms=budget_ms)
    workers = list(queued)
    sealed = list(first)
    for periods, segments in workers:
        sealed += digests.seal_segments(periods, segments, now_ms=now)
    sealed += digests.seal_due(now, budget_ms=None)  # finishes what racing workers left
    reports = digests.verify(START_MS, START_MS + 3_600_000, now_ms=now)
    return {
        "invocations": 1 + len(workers),
        "sealed_periods": len({p for p in sealed if START_MS <= p < START_MS + 3_600_000}),
        "statuses": sorted({r.status for r in reports if r.period_start >= START_MS}),
        "records": sum(r.record_count for r in reports if r.period_start >= START_MS),
    }


def simulate(rate: float, period_s: int, segments: int = 1) -> dict[str, Any]:
    archive = SyntheticArchive(rate)
    groups = archive.groups()
    # the fullest segments first: the time per segment is the worst one's
    names = sorted(groups, key=lambda g: (-len(groups[g]), g))
    objects = len(names)  # segments (object groups) per hour
    per_segment = archive.per_object * len(groups[names[0]])
    full = [measure("worker", rate, period_s, [names[i]]) for i in range(segments)]
    small = measure("worker", rate, period_s, [names[0]], scale=0.01)
    finisher = measure("finisher", rate, period_s, [names[-1]])
    # CPU time, not wall time: this machine is shared; a Lambda invocation has its own
    # vCPU share (at 1,769 MB one full vCPU; the function has 512 MB: see the README)
    per_segment_s = max(r["cpu_s"] for r in full)
    batch = max(1, int(WORK_BUDGET_MS / 1000 // per_segment_s)) if per_segment_s else objects
    units = objects  # a segment (object) is sealed for every period of its hour at once
    invocations = -(-units // batch) + SCHEDULED_PER_HOUR
    measured = [*full, small, finisher]
    return {
        "rate": rate,
        "period_s": period_s,
        "segments_per_hour": objects,
        "objects_per_hour": objects_per_hour(rate),
        "objects_per_segment_max": len(groups[names[0]]),
        "records_per_segment": per_segment,
        "records_per_hour": int(rate * 3600),
        "invocations_measured": measured,
        "memory_growth": round(max(r["peak_mb"] for r in full) / small["peak_mb"], 3),
        "segments_per_invocation": batch,
        "invocations_per_hour": invocations,
        "busy_seconds_per_hour": round(units * per_segment_s, 1),
        "concurrency_needed": round(units * per_segment_s / 3600, 2),
        "lambda_dollars_per_hour": round(
            units * per_segment_s * LAMBDA_MB / 1024 * PRICE_PER_GB_SECOND, 4
        ),
        "lambda_dollars_per_million_requests": round(
            units * per_segment_s * LAMBDA_MB / 1024 * PRICE_PER_GB_SECOND / (rate * 3600) * 1e6,
            6,
        ),
        "load_average": round(os.getloadavg()[0], 1),
        "within_limits": all(
            r["peak_mb"] < MEMORY_LIMIT_MB
            and r["cpu_s"] * (batch if r["kind"] == "worker" else 1) < TIME_LIMIT_S
            for r in measured
        ),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"rate {report['rate']:,.0f} allowed requests/s, period {report['period_s']} s, "
        f"{report['objects_per_hour']:,} archive objects per hour in "
        f"{report['segments_per_hour']:,} segments (object groups, at most "
        f"{report['objects_per_segment_max']} objects: {report['records_per_segment']:,} "
        f"records), {report['records_per_hour']:,} records per hour",
        f"{'invocation':<12} {'segments':>8} {'records':>11} {'wall s':>8} {'cpu s':>8} "
        f"{'peak MB':>8}",
    ]
    for r in report["invocations_measured"]:
        lines.append(
            f"{r['kind']:<12} {r['segments']:>8} {r['records']:>11,} {r['wall_s']:>8.2f} "
            f"{r['cpu_s']:>8.2f} {r['peak_mb']:>8.1f}"
        )
    lines += [
        f"peak memory, full object / 1% object: {report['memory_growth']:.3f} "
        "(bounded: it does not grow with the records)",
        f"an hour: {report['invocations_per_hour']:,} invocations "
        f"({report['segments_per_invocation']} segment(s) each within "
        f"{WORK_BUDGET_MS // 1000} s, + {SCHEDULED_PER_HOUR} scheduled), "
        f"{report['busy_seconds_per_hour']:,.0f} s of sealing, "
        f"~{report['concurrency_needed']} invocations running at a time",
        f"sealing compute: ${report['lambda_dollars_per_hour']:.4f} per hour, "
        f"${report['lambda_dollars_per_million_requests']:.6f} per million requests "
        f"({LAMBDA_MB} MB arm64 at ${PRICE_PER_GB_SECOND} per GB-s)",
        f"limits {MEMORY_LIMIT_MB} MB and {TIME_LIMIT_S:.0f} s (CPU) per invocation: "
        + ("met" if report["within_limits"] else "MISSED")
        + f" (wall times include this machine's load, average {report['load_average']})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100_000)
    parser.add_argument("--period", type=int, default=3600, choices=[60, 300, 900, 3600])
    parser.add_argument("--segments", type=int, default=1, help="full-size workers to run")
    parser.add_argument("--hour", action="store_true", help="also run a whole hour in-process")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--_invoke", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._invoke:
        print(json.dumps(_invoke(json.loads(args._invoke))))
        return 0
    report = simulate(args.rate, args.period, args.segments)
    if args.hour:
        with tempfile.TemporaryDirectory(prefix="tb-sealing-hour-") as root:
            report["hour"] = run_hour(args.rate, args.period, root)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["within_limits"] else 1


if __name__ == "__main__":
    sys.exit(main())
