"""``tokenbroker keys list|status|rotate``: signing key rotation with overlap.

Thin wrappers around :class:`tokenbroker.services.keys.KeyRotationService`; the states
and the schedule are explained in :mod:`tokenbroker.domain.keyset`.
"""

from __future__ import annotations

import json
from typing import Any, cast

import click

from tokenbroker.cli.deployment import CliState
from tokenbroker.cli.output import FORMATS, Field, Format, iso8601, render, time_fields
from tokenbroker.domain.keyset import DEFAULT_PROPAGATION, JWKS_MAX_AGE, KEYSET_MAX_AGE
from tokenbroker.domain.keyset import RotationInProgress as _InProgress
from tokenbroker.services.keys import KeyReport, KeyRotationService

KEY_FIELDS = (
    Field("state"),
    Field("kid"),
    Field("key_id"),
    Field("since", "time"),
    Field("until", "time"),
)
#: shorter than this, a JWKS cached by a resource server may miss the next key
SAFE_PROPAGATION = JWKS_MAX_AGE + KEYSET_MAX_AGE


class RotationInProgress(click.ClickException):
    exit_code = 2


def _state() -> CliState:
    return click.get_current_context().find_object(CliState) or CliState()


def _service() -> KeyRotationService:
    return _state().container().key_rotation


def _emit(report: KeyReport, output: str | None) -> None:
    fmt = cast(Format, output or _state().output)
    rows: list[dict[str, Any]] = [vars(row) for row in report.keys]
    click.echo(render(rows, KEY_FIELDS, fmt, many=True), nl=False)
    if report.next_step_at is not None and fmt != "json":
        click.echo(f"Next step at {iso8601(report.next_step_at)}: {report.next_step}", err=True)


def _output_option(func: Any) -> Any:
    return click.option(
        "-o", "--output", type=click.Choice(FORMATS), default=None, help="json, table or csv."
    )(func)


@click.group()
def keys() -> None:
    """Token signing keys: their states and their rotation.

    States: next (published in the JWKS, not signing), current (signing), retiring
    (published until every token it signed has expired), retired (neither published
    nor trusted). The keys are the template's two slots; a rotation flips between them.

    \b
    Example:
      tokenbroker keys status
      tokenbroker keys rotate
    """


@keys.command("list")
@_output_option
def list_keys(output: str | None) -> None:
    """List the signing key slots and their states.

    \b
    Example:
      tokenbroker keys list --output json
    """
    _emit(_service().status(), output)


@keys.command("status")
@_output_option
def status(output: str | None) -> None:
    """Show the states and when the next step is due (a finished rotation is settled).

    \b
    Example:
      tokenbroker keys status --output json
    """
    report = _service().status()
    if (output or _state().output) != "json":
        _emit(report, output)
        return
    rows: list[dict[str, Any]] = [vars(row) for row in report.keys]
    body = {
        "keys": json.loads(render(rows, KEY_FIELDS, "json", many=True)),
        **time_fields("next_step_at", report.next_step_at),
        "next_step": report.next_step,
    }
    click.echo(json.dumps(body, indent=2))


@keys.command("rotate")
@click.option(
    "--propagation-seconds",
    type=click.IntRange(0, 86_400),
    default=DEFAULT_PROPAGATION,
    show_default=True,
    help="How long the next key is published before it signs (caches must see it first).",
)
@_output_option
def rotate(propagation_seconds: int, output: str | None) -> None:
    """Publish the other slot's key as next; it signs after the propagation interval;
    the current key stays published until its tokens have expired, then is retired.
    A second rotate before the first one completes is an error (exit code 2).

    \b
    Example:
      tokenbroker keys rotate
      tokenbroker keys rotate --propagation-seconds 5   # the local stack only
    """
    try:
        report = _service().rotate(propagation=propagation_seconds)
    except _InProgress as exc:
        raise RotationInProgress(exc.description) from exc
    _emit(report, output)
    if propagation_seconds < SAFE_PROPAGATION:
        click.echo(
            f"Warning: a propagation interval under {SAFE_PROPAGATION} s can outrun cached"
            " JWKS copies (for tests and the local stack only).",
            err=True,
        )
