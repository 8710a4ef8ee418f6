"""The ``tokenbroker`` command: global options, subcommands and error reporting.

Exit codes: 0 success; 1 the operation failed (not found, conflict, device limit, AWS
error...); 2 usage, input or configuration error (bad options or values, deployment not
found or not matching its stack, no credentials, unknown profile, bad region or
endpoint). Errors are one line on stderr, ``Error: ...``; a Python traceback only with
``--debug``.
"""

from __future__ import annotations

from typing import Any

import click

from tokenbroker.cli.admin import clients, devices
from tokenbroker.cli.alerts import alerts
from tokenbroker.cli.audit import audit
from tokenbroker.cli.audit_verify import verify
from tokenbroker.cli.client import call, keygen, token
from tokenbroker.cli.deployment import DEFAULT_STACK, CliState, DeploymentError
from tokenbroker.cli.dev import dev
from tokenbroker.cli.keys import keys
from tokenbroker.cli.lifecycle import introspect, revoke, set_jwk
from tokenbroker.cli.output import FORMATS
from tokenbroker.cli.people import idps, people
from tokenbroker.cli.quotas import quotas
from tokenbroker.domain.errors import (
    BrokerError,
    ConfigurationError,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
)
from tokenbroker.services.admin import InvalidInput

#: the service's verdicts on a value the user typed: usage errors, like a bad option
INPUT_ERRORS = (InvalidInput, InvalidScope, InvalidRequest, InvalidTarget)

EXIT_FAILED = 1
EXIT_CONFIG = 2


class CommandFailed(click.ClickException):
    exit_code = EXIT_FAILED


class ConfigProblem(click.ClickException):
    exit_code = EXIT_CONFIG


def one_line(text: str) -> str:
    return " ".join(text.split())


class BrokerGroup(click.Group):
    """Turns the broker's errors into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except DeploymentError as exc:
            raise ConfigProblem(one_line(str(exc))) from exc
        except ConfigurationError as exc:
            raise ConfigProblem(one_line(exc.description or exc.error)) from exc
        except INPUT_ERRORS as exc:
            raise ConfigProblem(one_line(exc.description or exc.error)) from exc
        except BrokerError as exc:
            raise CommandFailed(one_line(exc.description or exc.error)) from exc
        except Exception as exc:
            if _debug(ctx):
                raise
            hint = " (run with --debug for the traceback)"
            raise CommandFailed(one_line(f"unexpected {type(exc).__name__}: {exc}") + hint) from exc


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(CliState)
    return bool(state and state.debug)


@click.group(
    cls=BrokerGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--stack",
    envvar="TOKENBROKER_STACK",
    default=DEFAULT_STACK,
    show_default=True,
    show_envvar=True,
    help="Deployment name: the CLI reads SSM parameter /tokenbroker/STACK/deployment.",
)
@click.option(
    "--region",
    default=None,
    help="AWS region. [default: from the AWS configuration chain, e.g. AWS_DEFAULT_REGION]",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format; each command also accepts --output after its name.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="TOKENBROKER_DEBUG",
    help="Show Python tracebacks for unexpected errors.",
)
@click.version_option(package_name="tokenbroker")
@click.pass_context
def cli(ctx: click.Context, stack: str, region: str | None, output: str, debug: bool) -> None:
    """Administer a tokenbroker deployment: OAuth clients and their device keys.

    The CLI uses the standard AWS configuration chain (AWS_PROFILE, AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL, ...) and finds the deployment's tables and key in the SSM parameter
    /tokenbroker/STACK/deployment, on AWS and locally alike. To use the local stack, run
    `tokenbroker dev` and export the variables it prints in another shell.

    Output: --output table (default), json or csv. Times are ISO 8601 UTC everywhere
    (2026-05-01T12:00:00.000Z); JSON adds each as Unix epoch milliseconds too (created_at_ms).
    Lists print a JSON array, other commands one JSON object.

    Exit codes: 0 success, 1 the operation failed, 2 usage, input or configuration error.

    \b
    Example:
      tokenbroker clients create --name billing-app --scope "model:chat:invoke" -o json
      tokenbroker devices enroll --client-id tbc_... --jkt THUMBPRINT
      tokenbroker --stack tokenbroker-prod --region eu-west-1 clients list
    """
    ctx.obj = CliState(stack=stack, region=region, output=output, debug=debug)


cli.add_command(clients)
cli.add_command(devices)
cli.add_command(dev)
audit.add_command(verify)
cli.add_command(audit)
cli.add_command(keygen)
cli.add_command(token)
cli.add_command(call)
cli.add_command(idps)
cli.add_command(people)
cli.add_command(keys)
cli.add_command(revoke)  # RFC 7009 / RFC 7662 (cli/lifecycle.py)
cli.add_command(introspect)
clients.add_command(set_jwk)
cli.add_command(quotas)
cli.add_command(alerts)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="tokenbroker")


if __name__ == "__main__":
    main()
