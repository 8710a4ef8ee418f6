"""``tokenbroker revoke`` and ``tokenbroker introspect`` (RFC 7009, RFC 7662): a client
revokes or inspects a token. The client secret comes from ``TOKENBROKER_CLIENT_SECRET``
or a hidden prompt, and the token from a file or stdin (``-``), never an option (other
users can read a process's arguments). Exit codes: 0 success, 1 the broker refused or
failed, 2 usage or configuration error."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

import click

from tokenbroker.cli.client import (
    ConfigProblem,
    _client_id_option,
    _format,
    _issuer_option,
    client_secret,
    reported,
)
from tokenbroker.cli.output import FORMATS, Field, render

if TYPE_CHECKING:  # the SDK (httpx) is imported only when a command runs
    from tokenbroker.client.lifecycle import LifecycleClient

MAX_TOKEN_FILE = 8192
_token_option = click.option(
    "--token-file",
    required=True,
    type=click.File("r"),
    metavar="FILE",
    help="File holding the token (`-` for stdin).",
)
_hint_option = click.option(
    "--hint",
    type=click.Choice(["access_token", "refresh_token"]),
    default=None,
    help="token_type_hint: which kind of token it is.",
)
INTROSPECTION_FIELDS = (
    Field("active"),
    Field("client_id"),
    Field("sub"),
    Field("scope"),
    Field("exp", "int"),
    Field("jti"),
)


def _read_token(stream: TextIO) -> str:
    text = stream.read(MAX_TOKEN_FILE + 1)
    token = text.strip() if isinstance(text, str) else ""
    if not token or len(token) > MAX_TOKEN_FILE or any(c.isspace() for c in token):
        raise ConfigProblem("the token file must hold one token (at most 8 KiB, no spaces)")
    return token


def _client(issuer: str, client_id: str) -> LifecycleClient:
    from tokenbroker.client.lifecycle import LifecycleClient

    with reported():
        return LifecycleClient(issuer, client_id=client_id, client_secret=client_secret())


@click.command()
@_issuer_option
@_client_id_option
@_token_option
@_hint_option
def revoke(issuer: str, client_id: str, token_file: TextIO, hint: str | None) -> None:
    """Revoke one of this client's tokens (RFC 7009).

    An access token is refused at the edge within 5 s; a refresh token's whole family is
    revoked. The broker answers the same for a token that was not this client's.

    \b
    Example:
      TOKENBROKER_CLIENT_SECRET=... tokenbroker revoke --issuer URL --client-id tbc_... \\
        --token-file token.txt
    """
    token = _read_token(token_file)
    broker = _client(issuer, client_id)
    with reported():
        broker.revoke(token, token_type_hint=hint)
    click.echo("revoked (if it was this client's token)", err=True)


@click.command()
@_issuer_option
@_client_id_option
@_token_option
@_hint_option
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    default="json",
    show_default=True,
    help="json, table or csv.",
)
def introspect(
    issuer: str,
    client_id: str,
    token_file: TextIO,
    hint: str | None,
    output: str | None,
) -> None:
    """Ask the broker whether a token is active, and its claims (RFC 7662).

    \b
    Example:
      tokenbroker introspect --issuer URL --client-id tbc_... --token-file - < token.txt
    """
    token = _read_token(token_file)
    broker = _client(issuer, client_id)
    with reported():
        answer = broker.introspect(token, token_type_hint=hint)
    fmt = _format(output)
    if fmt == "json":
        import json

        click.echo(json.dumps(answer, indent=2, sort_keys=True))
        return
    click.echo(render([answer], INTROSPECTION_FIELDS, fmt, many=False), nl=False)


@click.command("set-jwk")
@click.option("--client-id", required=True, metavar="ID", help="The client (tbc_...).")
@click.option(
    "--jwk-file",
    required=True,
    type=click.File("r"),
    metavar="FILE",
    help="The client's PUBLIC JWK (EC P-256/P-384 or Ed25519), JSON.",
)
@click.option(
    "--remove-secret",
    is_flag=True,
    help="Also remove the client's secret: it then authenticates with private_key_jwt only.",
)
def set_jwk(client_id: str, jwk_file: TextIO, remove_secret: bool) -> None:
    """Register a client's public key for private_key_jwt (RFC 7523).

    The client then authenticates at the revocation and introspection endpoints with a
    short JWT signed by its private key (client_assertion_type
    urn:ietf:params:oauth:client-assertion-type:jwt-bearer). Prints the key's thumbprint.

    \b
    Example:
      tokenbroker clients set-jwk --client-id tbc_... --jwk-file client.pub.jwk --remove-secret
    """
    from tokenbroker.cli.deployment import CliState

    text = jwk_file.read(4097)
    state = click.get_current_context().find_object(CliState) or CliState()
    kid = state.container().set_client_jwk(client_id, text, remove_secret=remove_secret)
    click.echo(kid)
