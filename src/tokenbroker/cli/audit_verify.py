"""``tokenbroker audit verify``: check the ledger's signed digests (registered on the
``audit`` group by :mod:`tokenbroker.cli.main`). Thin: options, one verifier from the
container, rows, a one-line summary and the exit code."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import click

from tokenbroker.cli.audit import _user_errors
from tokenbroker.cli.audit_render import fmt_of as _format
from tokenbroker.cli.audit_render import output_option, time_options
from tokenbroker.cli.audit_render import state as _state
from tokenbroker.cli.audit_time import now_ms, time_range
from tokenbroker.cli.output import Field, iso_ms, render

VERIFY_FIELDS = (
    Field("period"),
    Field("status"),
    Field("records", "int"),
    Field("altered", "list"),
    Field("deleted", "list"),
    Field("added", "list"),
    Field("expired", "list"),
    Field("hot_changed", "list"),
    Field("detail"),
)
#: show a progress bar on stderr from this many periods on
PROGRESS_FROM = 48


def _period(start: int, end: int) -> str:
    return f"{iso_ms(start)[:16]}Z/{iso_ms(end)[:16]}Z"


def summary_line(reports: Sequence[Any], chain_problems: Sequence[tuple[str, str]]) -> str:
    """``N periods: X intact, Y before first digest, Z failed (reasons...)``."""
    counts = Counter(r.status for r in reports)
    failed = [r for r in reports if not r.ok]
    reasons = Counter(problem for r in failed for problem in r.problems or [r.status])
    parts = [f"{counts['intact']} intact"]
    if counts["unsealed"]:
        parts.append(f"{counts['unsealed']} not sealed yet")
    parts.append(f"{counts['before_first_digest']} before first digest")
    failure = f"{len(failed)} failed"
    if reasons:
        failure += " (" + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + ")"
    line = f"{len(reports)} periods: " + ", ".join([*parts, failure])
    if chain_problems:
        line += "; chain: " + ", ".join(status for status, _ in chain_problems)
    return line


@click.command("verify")
@time_options
@click.option(
    "--failed-only", is_flag=True, help="List only periods that failed (the summary counts all)."
)
@click.option(
    "--digest-key-arn",
    default=None,
    metavar="ARN",
    help="Trust only statements signed by this KMS key [default: the deployment's digest "
    "key]. Pin it from a source you trust (e.g. the stack's DigestKeyArn output).",
)
@output_option
def verify(
    since: str | None,
    until: str | None,
    failed_only: bool,
    digest_key_arn: str | None,
    output: str | None,
) -> None:
    """Check the signed digests: each period intact, or exactly what differs.

    One row per digest period with its status: intact, unsealed (not due yet),
    before_first_digest (before the chain's genesis), or a failure: missing_digest,
    digest_deleted (a delete marker over the statement), digest_replaced, wrong_key (not
    signed by the trusted key), bad_signature, broken_chain, manifest_deleted,
    manifest_replaced, bad_manifest, late_seal (sealed after the grace period),
    tampered (records altered or deleted since sealing), late_record (records the seal
    does not list), hot_tampered (a sealed record changed in, or deleted before its ttl
    from, the usage table while it is in the hot window). Then one summary line naming
    the key trusted. Periods are checked against the versions the sealer wrote, so
    deleting digests does not hide anything.
    Exit code 0 if no period failed, 1 otherwise.

    \b
    Example:
      tokenbroker audit verify --since 7d --failed-only
      tokenbroker audit verify --since 2026-11-27T00:00:00Z --until 2026-11-27T06:00:00Z
      tokenbroker audit verify --since 2d --digest-key-arn arn:aws:kms:...:key/...
    """
    fmt = _format(output)
    start, end = time_range(since, until, now_ms())
    container = _state().container()
    with _user_errors():
        service = container.digests
        trusted = container.digest_key(digest_key_arn) if digest_key_arn else service.signer
        verifier = service.verifier(trusted)
        now = service.now()
        chain = verifier.chain(end, now)
        reports = list(_progress(verifier.periods(start, end, now), start, end, service.period_ms))
    rows = [_row(r) for r in reports if not failed_only or not r.ok]
    line = summary_line(reports, chain.problems)
    source = "--digest-key-arn" if digest_key_arn else "the deployment"
    trusted_line = f"trusted digest key: {chain.trusted_key} (from {source})"
    if fmt == "json":
        document = {
            "trusted_key": chain.trusted_key,
            "trusted_key_source": source,
            "chain_start": chain.chain_start,
            "chain_problems": [{"status": s, "detail": d} for s, d in chain.problems],
            "summary": line,
            "periods": rows,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(render(rows, VERIFY_FIELDS, fmt, many=True), nl=False)
        err = fmt != "table"
        for status, detail in chain.problems:
            click.echo(f"chain: {status}: {detail}", err=err)
        click.echo(line, err=err)
        click.echo(trusted_line, err=err)
    failed = [r for r in reports if not r.ok]
    if failed or chain.problems:
        first = (
            f"first: {_period(failed[0].period_start, failed[0].period_end)} {failed[0].status}"
            if failed
            else f"chain: {chain.problems[0][0]}"
        )
        raise click.ClickException(
            f"{len(failed)} of {len(reports)} periods failed verification ({first})"
        )


def _progress(reports: Iterator[Any], start: int, end: int, period_ms: int) -> Iterator[Any]:
    total = (end - start + period_ms - 1) // period_ms
    bar: Any = (
        click.progressbar(length=total, label="verifying", file=sys.stderr)
        if total >= PROGRESS_FROM
        else nullcontext()
    )
    with bar as progress:
        for report in reports:
            if progress is not None:
                progress.update(1)
            yield report


def _row(r: Any) -> dict[str, Any]:
    return {
        "period": _period(r.period_start, r.period_end),
        "period_start": r.period_start,
        "period_end": r.period_end,
        "status": r.status,
        "problems": r.problems,
        "records": r.record_count,
        "altered": r.altered,
        "deleted": r.deleted,
        "added": r.added,
        "expired": r.expired,
        "hot_changed": r.hot_changed,
        "detail": r.detail,
    }
