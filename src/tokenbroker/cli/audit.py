"""``tokenbroker audit ...``: the auditors' commands (read-only).

Thin: parse options, call the audit service that :mod:`tokenbroker.bootstrap` builds
(``Container.audit``: usage, export, summary, anomalies) or the digest service (verify),
print. One concern per module beside it: times (:mod:`~tokenbroker.cli.audit_time`),
columns and rows (:mod:`~tokenbroker.cli.audit_render`), export files
(:mod:`~tokenbroker.cli.audit_export`), exit codes (:mod:`~tokenbroker.cli.errors`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from tokenbroker.cli import audit_export
from tokenbroker.cli.audit_render import (
    ANOMALY_FIELDS,
    SUMMARY_FIELDS,
    USAGE_FIELDS,
    USAGE_TABLE_FIELDS,
    anomaly_row,
    emit,
    fmt_of,
    output_option,
    state,
    summary_row,
    time_options,
    usage_row,
)
from tokenbroker.cli.audit_time import now_ms, time_range
from tokenbroker.cli.errors import BadInput
from tokenbroker.domain.errors import InvalidQuery
from tokenbroker.services.audit import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    AuditService,
    Thresholds,
    UsageFilters,
)
from tokenbroker.services.audit_query import EVENTS

F = TypeVar("F", bound=Callable[..., Any])
EVENT_NAMES = ", ".join(EVENTS)
#: an RFC 7638 SHA-256 thumbprint: 32 bytes, base64url without padding
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


# ---- wiring ---------------------------------------------------------------------------


def audit_service() -> AuditService:
    return state().container().audit


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except InvalidQuery as exc:
        flag = f"--{exc.parameter.replace('_', '-')}: " if exc.parameter else ""
        raise BadInput(flag + (exc.description or exc.error)) from exc


def _jkt(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value and not _JKT.fullmatch(value):
        raise BadInput(
            f"--device: {value!r} is not a device key thumbprint (RFC 7638: 43 base64url "
            "characters, as `tokenbroker keygen` prints)"
        )
    return value


def _filter_options(*, ids: bool = True, more: bool = False) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        options = [
            click.option("--principal", default="", metavar="ID", help="Only this principal."),
            click.option(
                "--device",
                default="",
                metavar="JKT",
                callback=_jkt,
                help="Only this device key thumbprint.",
            ),
            click.option("--model", default="", metavar="NAME", help="Only this model/resource."),
        ]
        if ids:
            options.append(
                click.option("--token", default="", metavar="JTI", help="Only this token (jti).")
            )
        if more:
            options += [
                click.option(
                    "--decision", type=click.Choice(["allow", "deny"]), help="Allowed or denied."
                ),
                click.option(
                    "--event", default="", metavar="TYPE", help=f"Only this event: {EVENT_NAMES}."
                ),
                click.option("--actor", default="", metavar="ARN", help="Only this admin (ARN)."),
                click.option(
                    "--source-ip", default="", metavar="IP", help="Only this source address."
                ),
            ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# ---- commands -------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """Query, export and verify the usage ledger; summaries and anomalies (read-only).

    Every use of a token at the edge, every issuance, denial and admin action is a
    ledger record. Times: --since/--until take ISO 8601 UTC (2026-11-27T04:00:00Z, or a
    date), relative times (15m, 2h, 7d ago) or now; a range is since <= t < until and
    defaults to the last 24 hours. Output times are ISO 8601 UTC with milliseconds;
    JSON adds epoch milliseconds (fields ending in _ms). Exit codes: 0 success (also
    when nothing matches), 1 the operation failed (or, for verify, a period failed),
    2 bad options.

    \b
    Example:
      tokenbroker audit usage --principal tbc_... --since 2h --output json
      tokenbroker audit anomalies --since 1d
      tokenbroker audit export --since 2026-11-26 --until 2026-11-27 --to day.jsonl
      tokenbroker audit verify --since 7d
    """


@audit.command("usage")
@_filter_options(more=True)
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
    model: str,
    token: str,
    decision: str | None,
    event: str | None,
    actor: str,
    source_ip: str,
    since: str | None,
    until: str | None,
    limit: int,
    next_token: str,
    output: str | None,
) -> None:
    """List ledger records, newest first, one page at a time.

    Filters combine (all must match). The hot window is read through the time index
    the stream builds (only the hours that hold records; with a token, device,
    principal or model only the ids whose index keys match are fetched): a record
    shows up once the stream has delivered it, seconds after the request. When
    more records match, the command for the next page is printed (on stderr for
    json/csv). While the query runs, a progress bar on stderr shows how far back
    through the range it has read (shown only when stderr is a terminal).

    \b
    Example:
      tokenbroker audit usage --principal tbc_0123456789abcdef01234567 --since 2h
      tokenbroker audit usage --device THUMBPRINT --decision deny --output json
      tokenbroker audit usage --event device_revoked --since 7d
      tokenbroker audit usage --since 2026-11-27 --until 2026-11-28 --limit 200 \\
          --next-token eyJ2Ijox...
    """
    fmt = fmt_of(output)
    start, end = time_range(since, until, now_ms())
    filters = UsageFilters(
        start,
        end,
        principal=principal,
        device=device,
        token=token,
        model=model,
        decision=decision or "",
        event=event or "",
        actor=actor,
        source_ip=source_ip,
    )
    with _user_errors(), audit_export.reading_progress(start, end) as progress:
        page = audit_service().usage(filters, limit, next_token, progress=progress)
    fields = USAGE_TABLE_FIELDS if fmt == "table" else USAGE_FIELDS
    emit([usage_row(r) for r in page.records], fields, fmt, empty="no records")
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
    fmt = fmt_of(output)
    start, end = time_range(since, until, now_ms())
    with _user_errors():
        totals = audit_service().summary(start, end, principal)
    rows = [summary_row(total, fmt) for total in totals]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    emit(rows, SUMMARY_FIELDS, fmt, empty="no records")


@audit.command("anomalies")
@time_options
@click.option("--principal", default="", metavar="ID", help="Only this principal.")
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
    principal: str,
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
      tokenbroker audit anomalies --since 2h --principal tbc_... --output json
    """
    fmt = fmt_of(output)
    start, end = time_range(since, until, now_ms())
    thresholds = Thresholds(max_devices, max_ips, max_denials, baseline_factor)
    with _user_errors():
        found = audit_service().anomalies(start, end, thresholds, principal)
    rows = [anomaly_row(a, fmt) for a in found]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    emit(rows, ANOMALY_FIELDS, fmt, empty="no anomalies")


@audit.command("export")
@time_options
@_filter_options(ids=False)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="FILE",
    help="Where to write ('-': standard output). Written to a temporary file, then renamed.",
)
@click.option(
    "-o",
    "--output",
    "file_format",
    type=click.Choice(audit_export.FILE_FORMATS),
    default=None,
    help="JSON Lines or CSV (formula cells neutralised). [default: jsonl]",
)
@click.option(
    "--format",
    "legacy_format",
    type=click.Choice(audit_export.FILE_FORMATS),
    default=None,
    hidden=True,
    help="Deprecated: use --output.",
)
def export(
    since: str | None,
    until: str | None,
    principal: str,
    device: str,
    model: str,
    target: str,
    file_format: str | None,
    legacy_format: str | None,
) -> None:
    """Write every ledger record of a range, oldest first, streaming (bounded memory).

    Every field of every record (the same columns as `usage --output json`). A
    progress bar (through the range's time) goes to stderr, then one line with the
    count. The file appears only when complete. For long-term analysis, export per day
    and upload to S3 for Athena.

    \b
    Example:
      tokenbroker audit export --since 2026-11-26 --until 2026-11-27 --to 2026-11-26.jsonl
      tokenbroker audit export --since 6h --principal tbc_... --to - -o csv | gzip > p.csv.gz
    """
    if file_format and legacy_format and file_format != legacy_format:
        raise BadInput("--format is the old name of --output: give one of them")
    chosen = file_format or legacy_format or "jsonl"
    start, end = time_range(since, until, now_ms())
    filters = UsageFilters(start, end, principal=principal, device=device, model=model)
    with _user_errors():
        records = audit_service().export(start, end, filters)
        with audit_export.destination(target) as out:
            count = audit_export.write(records, out, chosen, start, end)
    where = "standard output" if target == "-" else target
    click.echo(f"exported {count} records to {where}", err=True)
