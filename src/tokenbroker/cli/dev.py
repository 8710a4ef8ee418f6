"""``tokenbroker dev``: the local stack (moto + the template's resources + the API)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tokenbroker.local.sources import DEFAULT_SCHEDULE_SECONDS
from tokenbroker.local.stack import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STACK,
    LocalStack,
    LocalStackError,
    is_loopback,
    wait_for_signal,
    warn,
)


class DevFailed(click.ClickException):
    exit_code = 1


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address of the local API.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the local API (0: a free port, printed when ready).",
)
@click.option(
    "--stack-name",
    default=DEFAULT_STACK,
    show_default=True,
    help="Stack name: names the tables and the SSM parameter /tokenbroker/STACK/deployment.",
)
@click.option(
    "--template",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SAM template. [default: template.yaml of this checkout]",
)
@click.option(
    "--moto-port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the moto server (always on 127.0.0.1; 0: a free port).",
)
@click.option(
    "--schedule-interval",
    default=DEFAULT_SCHEDULE_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Run each scheduled function (e.g. the digests) at least this often; a shorter "
    "rate in the template wins.",
)
@click.option(
    "--parameter",
    "parameters",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a template parameter (repeatable), e.g. --parameter "
    "TokenLifetimeSeconds=900. The local stack seals ledger digests every 60 s "
    "(DigestPeriodSeconds=60, DigestGraceSeconds=60) unless told otherwise.",
)
@click.option(
    "--trust-forwarded-for",
    is_flag=True,
    help="The local API sits behind a trusted proxy: take the client address from the "
    "right-most X-Forwarded-For entry (the one the proxy appended). Off: the header is "
    "ignored, as API Gateway ignores it. Lets tests simulate many networks.",
)
def dev(
    host: str,
    port: int,
    stack_name: str,
    template: Path | None,
    moto_port: int,
    schedule_interval: float,
    parameters: tuple[str, ...],
    trust_forwarded_for: bool,
) -> None:
    """Run the broker locally: moto-backed AWS services on a loopback port, the
    template's tables, KMS key and SSM parameter provisioned into it, and an API Gateway
    emulation serving template.yaml's routes (functions run in this process).

    When ready, prints `export NAME=VALUE` lines for another shell (so the admin and
    audit commands reach this stack) and `Local API: URL`. Runs until Ctrl-C or SIGTERM;
    all state is in memory and goes away with it. Requests are logged to stderr as
    `METHOD PATH STATUS TIME`.

    Event sources run too: functions on a table's stream get its new records about
    twice a second (as Lambda's event source mapping would deliver them), and scheduled
    functions run every --schedule-interval seconds (or their template rate if shorter).

    \b
    Example:
      tokenbroker dev --port 8787
      # in another shell: paste the export lines, then
      tokenbroker clients create --name demo --scope "model:demo:invoke" --output json
    """
    if not is_loopback(host):
        warn(
            f"{host} is not a loopback address: the local API has no TLS and its stack uses "
            "test credentials; anyone who can reach it can issue tokens"
        )
    overrides = {}
    for item in parameters:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--parameter")
        overrides[name] = value
    stack = LocalStack(
        host,
        port,
        stack_name=stack_name,
        template=template,
        moto_port=moto_port,
        schedule_interval=schedule_interval,
        parameters=overrides,
        trust_forwarded_for=trust_forwarded_for,
    )
    try:
        stack.start()
    except LocalStackError as exc:
        raise DevFailed(str(exc)) from exc
    try:
        lines = stack.export_lines()
        for line in lines:
            click.echo(line)
        if any(line.startswith("export TOKENBROKER_DEV_USER_POOL_ID=") for line in lines):
            from tokenbroker.local.cognito import id_token_hint

            click.echo(id_token_hint())
        sys.stdout.flush()
        wait_for_signal()
    finally:
        stack.stop()
