"""How audit results are shown: the columns of each command and the rows they hold.

A ledger record is rendered from :class:`~tokenbroker.domain.models.UsageRecord`'s own
fields (``tokenbroker.adapters.ledger_items.RECORD_FIELDS``), preceded by ``time`` (ISO
8601 UTC with milliseconds); JSON also keeps ``at_ms``. Times in summaries and anomalies
follow the same rule: ISO 8601 (``first_seen``) and epoch ms (``first_seen_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import click

from tokenbroker.adapters.ledger_items import RECORD_FIELDS, as_plain
from tokenbroker.cli.audit_time import TIME_HELP, optional_iso
from tokenbroker.cli.deployment import CliState
from tokenbroker.cli.output import FORMATS, Field, Format, Record, iso_ms, render
from tokenbroker.domain.aggregates import PrincipalSummary
from tokenbroker.domain.models import UsageRecord
from tokenbroker.services.anomalies import Anomaly

F = TypeVar("F", bound=Callable[..., Any])

_INT_FIELDS = frozenset({"at_ms", "retain_until"})
#: every field of a record, as JSON, CSV and export show it
USAGE_FIELDS = (
    Field("time"),
    *(Field(name, "int" if name in _INT_FIELDS else "text") for name in RECORD_FIELDS),
)
_TABLE_COLUMNS = (
    "time",
    "event",
    "decision",
    "reason",
    "principal",
    "jkt",
    "resource",
    "source_ip",
    "record_id",
)
USAGE_TABLE_FIELDS = tuple(
    next(f for f in USAGE_FIELDS if f.name == name) for name in _TABLE_COLUMNS
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


def state() -> CliState:
    return click.get_current_context().find_object(CliState) or CliState()


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


def fmt_of(output: str | None) -> Format:
    return cast(Format, output or state().output)


def emit(rows: Sequence[Record], fields: tuple[Field, ...], fmt: Format, *, empty: str) -> None:
    if not rows and fmt == "table":
        click.echo(empty)
        return
    click.echo(render(rows, fields, fmt, many=True), nl=False)


def pairs(mapping: Mapping[str, Any]) -> str:
    """A mapping as ``key=value`` words (lists joined by commas), for table and CSV."""
    return " ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in mapping.items()
    )


def usage_row(record: UsageRecord) -> dict[str, Any]:
    """A record's fields, preceded by its time in ISO 8601."""
    return {"time": iso_ms(record.at_ms), **as_plain(record)}


def summary_row(total: PrincipalSummary, fmt: Format) -> dict[str, Any]:
    row = total.as_json()
    row["first_seen"] = optional_iso(total.first_seen_ms)
    row["last_seen"] = optional_iso(total.last_seen_ms)
    row["since"], row["until"] = iso_ms(total.since_ms), iso_ms(total.until_ms)
    if fmt != "json":
        row["denials"], row["models"] = pairs(total.denials), pairs(total.models)
    return row


def anomaly_row(anomaly: Anomaly, fmt: Format) -> dict[str, Any]:
    return {
        "kind": anomaly.kind,
        "principal": anomaly.principal,
        "evidence": anomaly.evidence if fmt == "json" else pairs(anomaly.evidence),
        "first_seen": optional_iso(anomaly.first_seen_ms),
        "last_seen": optional_iso(anomaly.last_seen_ms),
        "first_seen_ms": anomaly.first_seen_ms,
        "last_seen_ms": anomaly.last_seen_ms,
    }
