"""``tokenbroker audit verify``: check the ledger's signed digests (registered on the
``audit`` group by :mod:`tokenbroker.cli.main`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click

from tokenbroker.cli.audit import (
    _format,
    _state,
    _user_errors,
    iso_ms,
    now_ms,
    output_option,
    time_options,
    time_range,
)
from tokenbroker.cli.output import Field, render

VERIFY_FIELDS = (
    Field("period"),
    Field("status"),
    Field("records", "int"),
    Field("altered", "list"),
    Field("deleted", "list"),
    Field("added", "list"),
    Field("expired", "list"),
    Field("detail"),
)


def digest_reports(since_ms: int, until_ms: int) -> Iterator[Any]:
    """The digest service's verdicts, one period at a time."""
    from tokenbroker.services.digests import from_settings

    container = _state().container()
    service = from_settings(container.settings, container.client, clock=container.clock)
    yield from service.iter_verify(since_ms, until_ms)


@click.command("verify")
@time_options
@output_option
def verify(since: str | None, until: str | None, output: str | None) -> None:
    """Check the signed digests: each period intact, or exactly what differs.

    One row per digest period: its status (intact, unsealed, tampered, missing_digest,
    bad_signature, broken_chain), its sealed record count and the ids of records
    altered, deleted or added since it was sealed (expired ones apart). Exit code 0 if
    every period is intact or not sealed yet, 1 otherwise.

    \b
    Example:
      tokenbroker audit verify --since 7d
      tokenbroker audit verify --since 2026-11-27T00:00:00Z --until 2026-11-27T06:00:00Z
    """
    fmt = _format(output)
    start, end = time_range(since, until, now_ms())
    with _user_errors():
        reports = list(digest_reports(start, end))
    rows = [
        {
            "period": f"{iso_ms(r.period_start)[:16]}Z/{iso_ms(r.period_end)[:16]}Z",
            "period_start": r.period_start,
            "period_end": r.period_end,
            "status": r.status,
            "records": r.record_count,
            "altered": r.altered,
            "deleted": r.deleted,
            "added": r.added,
            "expired": r.expired,
            "detail": r.detail,
        }
        for r in reports
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render(rows, VERIFY_FIELDS, fmt, many=True), nl=False)
    failed = [r for r in reports if not r.ok]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(reports)} periods failed verification "
            f"(first: {rows[reports.index(failed[0])]['period']} {failed[0].status})"
        )
