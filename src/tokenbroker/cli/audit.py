"""``tokenbroker audit ...``: the auditors' commands (read-only).

Thin: parse options and times, call :class:`tokenbroker.services.audit.AuditService`
(usage, export, summary, anomalies) or the digest service (verify), print. The services
are built here from the deployment's settings and the container's boto3 clients.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import IO, Any, TypeVar, cast

import click

from tokenbroker.cli.deployment import CliState
from tokenbroker.cli.output import FORMATS, Field, Format, Record, render
from tokenbroker.domain.units import DAY_MS, HOUR_MS
from tokenbroker.services.audit import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Anomaly,
    AuditQueryError,
    AuditService,
    Thresholds,
    UsageFilters,
)

F = TypeVar("F", bound=Callable[..., Any])

#: items per DynamoDB page of one shard in an export: memory holds at most
#: ``shards (256) x EXPORT_PAGE_SIZE`` records (~22 MB), whatever the range
EXPORT_PAGE_SIZE = 50
TIME_HELP = "ISO 8601 (2026-11-27T04:00:00Z, 2026-11-27), relative (15m, 2h, 7d ago) or now."
TIME_EXAMPLE = (
    "use ISO 8601 (2026-11-27T04:00:00Z or 2026-11-27), a relative time (15m, 2h, 7d) or now"
)

RECORD_FIELDS = (
    Field("time"),
    Field("at", "int"),
    Field("id"),
    Field("event"),
    Field("decision"),
    Field("reason"),
    Field("principal"),
    Field("client_id"),
    Field("jkt"),
    Field("token_jti"),
    Field("proof_jti_hash"),
    Field("method"),
    Field("route"),
    Field("resource"),
    Field("source_ip"),
    Field("user_agent"),
    Field("request_id"),
    Field("actor"),
    Field("ttl", "int"),
)
RECORD_TABLE_FIELDS = tuple(
    f
    for f in RECORD_FIELDS
    if f.name
    in ("time", "event", "decision", "reason", "principal", "jkt", "resource", "source_ip", "id")
)
SUMMARY_FIELDS = (
    Field("principal"),
    Field("requests", "int"),
    Field("allowed", "int"),
    Field("denied", "int"),
    Field("tokens_issued", "int"),
    Field("tokens_denied", "int"),
    Field("distinct_devices", "int"),
    Field("distinct_source_ips", "int"),
    Field("denials"),
    Field("models"),
    Field("first_seen"),
    Field("last_seen"),
)
ANOMALY_FIELDS = (
    Field("kind"),
    Field("principal"),
    Field("evidence"),
    Field("first_seen"),
    Field("last_seen"),
)


class BadInput(click.ClickException):
    """A user error in the options (times, cursor): one line, exit code 2."""

    exit_code = 2


# ---- times ----------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d{1,9})\s*([smhdw])(?:\s+ago)?", re.IGNORECASE)
_UNIT_MS = {"s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str, now_ms: int, option: str) -> int:
    """``text`` as epoch milliseconds: ISO 8601 (UTC unless it says otherwise), a date
    (its UTC midnight), ``15m``/``2h``/``7d``/``1w`` (ago, optionally said) or ``now``."""
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    if match := _RELATIVE.fullmatch(value):
        at = now_ms - int(match[1]) * _UNIT_MS[match[2].lower()]
    else:
        try:
            if _DATE.fullmatch(value):
                moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            else:
                moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadInput(f"{option}: invalid time {text!r}; {TIME_EXAMPLE}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = int(moment.timestamp() * 1000)
    if at < 0:
        raise BadInput(f"{option}: {text!r} is before 1970-01-01; {TIME_EXAMPLE}")
    return at


def time_range(since: str | None, until: str | None, now_ms: int) -> tuple[int, int]:
    """``--since``/``--until`` as ms; until defaults to now, since to 24 hours before."""
    end = now_ms if until is None else parse_time(until, now_ms, "--until")
    start = end - DAY_MS if since is None else parse_time(since, now_ms, "--since")
    if start >= end:
        raise BadInput(
            f"--since ({iso_ms(start)}) must be before --until ({iso_ms(end)}); "
            "e.g. --since 2026-11-27T00:00:00Z --until 2026-11-27T06:00:00Z"
        )
    return start, end


def iso_ms(at_ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with milliseconds, e.g. ``2026-11-27T04:00:00.123Z``."""
    moment = datetime.fromtimestamp(at_ms // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{at_ms % 1000:03d}Z"


def _optional_iso(at_ms: int | None) -> str | None:
    return None if at_ms is None else iso_ms(at_ms)


# ---- wiring (the only place that knows how the services are built) -------------------


def _state() -> CliState:
    return click.get_current_context().find_object(CliState) or CliState()


def now_ms() -> int:
    """The wall clock, for ``now`` and relative times (read before AWS is touched)."""
    return int(time.time() * 1000)


def audit_service(*, aggregates: bool = False) -> AuditService:
    from tokenbroker.adapters.ledger_query import DynamoLedgerQuery

    container = _state().container()
    settings = container.settings
    settings.require("usage_table")
    dynamodb = container.client("dynamodb")
    source = None
    if aggregates:
        from tokenbroker.adapters.aggregates import reader_from_settings

        source = reader_from_settings(settings, dynamodb)
    return AuditService(
        DynamoLedgerQuery(dynamodb, usage_table=settings.usage_table),
        aggregates=source,
        export_page_size=EXPORT_PAGE_SIZE,
    )


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except AuditQueryError as exc:
        raise BadInput(str(exc)) from exc


# ---- output ---------------------------------------------------------------------------


def output_option(func: F) -> F:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(FORMATS),
        default=None,
        help="json, table or csv. [default: the global --output, which defaults to table]",
    )(func)


def time_options(func: F) -> F:
    func = click.option(
        "--until", metavar="TIME", help=f"End of the range (exclusive) [default: now]. {TIME_HELP}"
    )(func)
    return click.option(
        "--since",
        metavar="TIME",
        help=f"Start of the range (inclusive) [default: 24 hours before --until]. {TIME_HELP}",
    )(func)


def _format(output: str | None) -> Format:
    return cast(Format, output or _state().output)


def _emit(rows: Sequence[Record], fields: tuple[Field, ...], fmt: Format, *, empty: str) -> None:
    if not rows and fmt == "table":
        click.echo(empty)
        return
    click.echo(render(rows, fields, fmt, many=True), nl=False)


def pairs(mapping: Mapping[str, Any]) -> str:
    """A mapping as ``key=value`` words (lists joined by commas), for table and CSV."""
    return " ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in mapping.items()
    )


def usage_row(record: Mapping[str, Any]) -> dict[str, Any]:
    return {**record, "time": iso_ms(int(record["at"]))}


# ---- commands -------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """Query, export and verify the usage ledger; summaries and anomalies (read-only).

    Every use of a token at the edge, every issuance, denial and admin action is a
    ledger record. Times: --since/--until take ISO 8601 UTC (2026-11-27T04:00:00Z, or a
    date), relative times (15m, 2h, 7d ago) or now; a range is since <= t < until and
    defaults to the last 24 hours. JSON gives record times as `at` (epoch milliseconds)
    and `time` (ISO 8601 UTC with milliseconds). Exit codes: 0 success (also when
    nothing matches), 1 the operation failed (or, for verify, a period failed), 2 bad
    options.

    \b
    Example:
      tokenbroker audit usage --principal tbc_... --since 2h --output json
      tokenbroker audit anomalies --since 1d
      tokenbroker audit export --since 2026-11-26 --until 2026-11-27 --to day.jsonl
      tokenbroker audit verify --since 7d
    """


@audit.command("usage")
@click.option("--principal", default="", metavar="ID", help="Only this principal (client id).")
@click.option("--device", default="", metavar="JKT", help="Only this device key thumbprint.")
@click.option("--token", default="", metavar="JTI", help="Only this access token (its jti).")
@click.option("--model", default="", metavar="NAME", help="Only this model / resource.")
@click.option("--decision", type=click.Choice(["allow", "deny"]), help="Only allowed or denied.")
@time_options
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Records per page.",
)
@click.option(
    "--next-token",
    default="",
    metavar="TOKEN",
    help="Continue after the previous page (printed below it; same filters).",
)
@output_option
def usage(
    principal: str,
    device: str,
    token: str,
    model: str,
    decision: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    next_token: str,
    output: str | None,
) -> None:
    """List ledger records, newest first, one page at a time.

    Filters combine (all must match). With a token, device, principal or model the
    matching index is read; with none, the range is read hour by hour. When more
    records match, the command for the next page is printed (on stderr for json/csv).

    \b
    Example:
      tokenbroker audit usage --principal tbc_0123456789abcdef01234567 --since 2h
      tokenbroker audit usage --device THUMBPRINT --decision deny --output json
      tokenbroker audit usage --since 2026-11-27 --until 2026-11-28 --limit 200 \\
          --next-token eyJ2Ijox...
    """
    fmt = _format(output)
    start, end = time_range(since, until, now_ms())
    filters = UsageFilters(start, end, principal, device, token, model, decision or "")
    with _user_errors():
        page = audit_service().usage(filters, limit, next_token)
    fields = RECORD_TABLE_FIELDS if fmt == "table" else RECORD_FIELDS
    _emit([usage_row(r) for r in page.records], fields, fmt, empty="no records")
    if page.next_token:
        note = f"more records: repeat the command with --next-token {page.next_token}"
        click.echo(("\n" if fmt == "table" else "") + note, err=fmt != "table")


@audit.command("summary")
@time_options
@click.option("--principal", default="", metavar="ID", help="Only this principal.")
@output_option
def summary(since: str | None, until: str | None, principal: str, output: str | None) -> None:
    """Per principal: requests, allowed, denied (by reason), tokens, distinct devices and
    source IPs, per-model counts, first and last seen.

    From the aggregates kept off the ledger's stream; the range widens to whole UTC
    hours. json adds the device and IP lists.

    \b
    Example:
      tokenbroker audit summary --since 7d
      tokenbroker audit summary --since 2026-11-27 --principal tbc_... --output json
    """
    fmt = _format(output)
    start, end = time_range(since, until, now_ms())
    with _user_errors():
        totals = audit_service(aggregates=True).summary(start, end, principal)
    rows = []
    for total in totals:
        row = total.as_json()
        row["first_seen"] = _optional_iso(total.first_seen_ms)
        row["last_seen"] = _optional_iso(total.last_seen_ms)
        if fmt != "json":
            row["denials"], row["models"] = pairs(total.denials), pairs(total.models)
        rows.append(row)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    _emit(rows, SUMMARY_FIELDS, fmt, empty="no records")


@audit.command("anomalies")
@time_options
@click.option(
    "--max-devices",
    type=click.IntRange(0),
    default=Thresholds.max_devices,
    show_default=True,
    help="Flag more distinct devices than this in the range.",
)
@click.option(
    "--max-ips",
    type=click.IntRange(0),
    default=Thresholds.max_ips,
    show_default=True,
    help="Flag more distinct source IPs than this in the range.",
)
@click.option(
    "--max-denials",
    type=click.IntRange(1),
    default=Thresholds.max_denials,
    show_default=True,
    help="Flag this many denials or more within one hour.",
)
@click.option(
    "--baseline-factor",
    type=click.FloatRange(min=0, min_open=True),
    default=Thresholds.baseline_factor,
    show_default=True,
    help="Flag requests above this times the principal's median daily requests over the "
    "7 days before (per day of range).",
)
@output_option
def anomalies(
    since: str | None,
    until: str | None,
    max_devices: int,
    max_ips: int,
    max_denials: int,
    baseline_factor: float,
    output: str | None,
) -> None:
    """Principals whose credentials look shared or stolen, with the evidence.

    Kinds: many_devices, many_source_ips, proof_replayed (a DPoP proof used twice),
    denial_burst, revoked_device_used, above_baseline. Each with its counts and the
    principal's first and last record in the range (widened to whole UTC hours).

    \b
    Example:
      tokenbroker audit anomalies --since 1d
      tokenbroker audit anomalies --since 2h --max-devices 5 --output json
    """
    fmt = _format(output)
    start, end = time_range(since, until, now_ms())
    thresholds = Thresholds(max_devices, max_ips, max_denials, baseline_factor)
    with _user_errors():
        found = audit_service(aggregates=True).anomalies(start, end, thresholds)
    rows = [anomaly_row(a, fmt) for a in found]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    _emit(rows, ANOMALY_FIELDS, fmt, empty="no anomalies")


def anomaly_row(anomaly: Anomaly, fmt: Format) -> dict[str, Any]:
    return {
        "kind": anomaly.kind,
        "principal": anomaly.principal,
        "evidence": anomaly.evidence if fmt == "json" else pairs(anomaly.evidence),
        "first_seen": _optional_iso(anomaly.first_seen_ms),
        "last_seen": _optional_iso(anomaly.last_seen_ms),
        "first_seen_ms": anomaly.first_seen_ms,
        "last_seen_ms": anomaly.last_seen_ms,
    }


@audit.command("export")
@time_options
@click.option(
    "--to",
    "target",
    required=True,
    metavar="FILE",
    help="Where to write ('-': standard output). Written to a temporary file, then renamed.",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines (every attribute) or CSV (a fixed header).",
)
def export(since: str | None, until: str | None, target: str, file_format: str) -> None:
    """Write every ledger record of a range, oldest first, streaming (bounded memory).

    A progress bar (through the range's time) goes to stderr, then one line with the
    count. The file appears only when complete. For long-term analysis, export per day
    and upload to S3 for Athena.

    \b
    Example:
      tokenbroker audit export --since 2026-11-26 --until 2026-11-27 --to 2026-11-26.jsonl
      tokenbroker audit export --since 6h --to - --format csv | gzip > recent.csv.gz
    """
    start, end = time_range(since, until, now_ms())
    with _user_errors():
        records = audit_service().export(start, end)
        with _destination(target) as out:
            count = _write(records, out, file_format, start, end)
    where = "standard output" if target == "-" else target
    click.echo(f"exported {count} records to {where}", err=True)


@contextmanager
def _destination(target: str) -> Iterator[IO[str]]:
    """Standard output, or a temporary file beside ``target`` renamed onto it when the
    export is complete (removed if it fails)."""
    if target == "-":
        yield sys.stdout
        return
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, partial = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".part"
        )
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, target)
    except BaseException:
        os.unlink(partial)
        raise


def _write(records: Iterable[Record], out: IO[str], file_format: str, start: int, end: int) -> int:
    columns = [f.name for f in RECORD_FIELDS]
    writer = csv.writer(out, lineterminator="\n") if file_format == "csv" else None
    if writer is not None:
        writer.writerow(columns)
    count, done, total = 0, 0, end - start
    with click.progressbar(
        length=total,
        label="exporting",
        file=sys.stderr,
        show_percent=True,
        item_show_func=_records_written,
    ) as bar:
        for record in records:
            if writer is not None:
                row = usage_row(record)
                writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
            else:
                out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
            position = int(record["at"]) - start
            bar.update(position - done, count)
            done = position
        bar.update(total - done, count)
    return count


def _records_written(count: int | None) -> str | None:
    return None if count is None else f"{count} records"
