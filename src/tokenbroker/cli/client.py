"""``tokenbroker keygen``, ``token`` and ``call``: the client side, for developers and
scripts that call APIs behind the broker.

The client secret is read from ``TOKENBROKER_CLIENT_SECRET`` or a hidden prompt, never
from an option (other users can read a process's arguments). Exit codes follow the admin
CLI: 0 success; 1 the operation failed (broker refused, unreachable, non-2xx answer);
2 usage or configuration error (bad options, missing or unsafe key file, wrong issuer).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

import click

from tokenbroker.cli.deployment import CliState
from tokenbroker.cli.output import FORMATS, Field, Format, render

if TYPE_CHECKING:  # the SDK (httpx, requests) is imported only when a command runs
    import requests

    from tokenbroker.client.session import TokenSource

EXIT_FAILED = 1  # the same codes as tokenbroker.cli.main
EXIT_CONFIG = 2
SECRET_ENV = "TOKENBROKER_CLIENT_SECRET"
CLIENT_KEY_ENV = "TOKENBROKER_CLIENT_KEY_FILE"
KEY_FIELDS = (Field("name"), Field("jkt"), Field("path"))
CALL_TIMEOUT = 60.0


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


class ConfigProblem(click.ClickException):
    exit_code = EXIT_CONFIG


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def reported(*, key_errors: type[click.ClickException] = ConfigProblem) -> Iterator[None]:
    """SDK errors as one-line ``Error: ...`` messages with the CLI's exit codes."""
    import requests

    from tokenbroker.client.errors import BrokerClientError, KeyFileError, MetadataError

    try:
        yield
    except KeyFileError as exc:
        raise key_errors(_one_line(str(exc))) from None
    except MetadataError as exc:
        raise ConfigProblem(_one_line(str(exc))) from None
    except BrokerClientError as exc:
        raise Failed(_one_line(str(exc))) from None
    except requests.RequestException as exc:
        raise Failed(_one_line(f"request failed: {type(exc).__name__}: {exc}")) from None


def _format(output: str | None) -> Format:
    state = click.get_current_context().find_object(CliState)
    return cast(Format, output or (state.output if state else "table"))


def client_secret() -> str:
    """From the environment, or a hidden prompt (on stderr, so stdout stays data) when
    there is a terminal to prompt on; without one, a clear error instead of a prompt
    that cannot hide what is typed (getpass's warning) or read anything (Aborted!)."""
    secret = os.environ.get(SECRET_ENV)
    if secret:
        return secret
    if not _interactive():
        raise ConfigProblem(
            f"no client secret: set {SECRET_ENV} (there is no terminal to prompt on)"
        )
    return str(click.prompt("Client secret", hide_input=True, err=True))


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def token_source(
    issuer: str,
    client_id: str,
    key_name: str,
    scope: str | None,
    subject_token_file: str | None = None,
) -> TokenSource:
    from tokenbroker.client import DeviceKey, TokenSource
    from tokenbroker.client.people import subject_token_from_file

    key = DeviceKey.load(key_name)
    subject = subject_token_from_file(subject_token_file) if subject_token_file else None
    # private_key_jwt (RFC 7523): a client key's PEM file instead of a secret
    key_file = os.environ.get(CLIENT_KEY_ENV)
    return TokenSource(
        issuer,
        client_id=client_id,
        client_secret=None if key_file else client_secret(),
        client_key=DeviceKey.from_file(key_file) if key_file else None,
        key=key,
        scope=scope,
        subject_token=subject,
    )


def http_session() -> requests.Session:
    import requests

    return requests.Session()


_issuer_option = click.option(
    "--issuer",
    envvar="TOKENBROKER_ISSUER",
    required=True,
    show_envvar=True,
    metavar="URL",
    help="The broker's issuer URL (`tokenbroker dev` prints it).",
)
_client_id_option = click.option(
    "--client-id",
    envvar="TOKENBROKER_CLIENT_ID",
    required=True,
    show_envvar=True,
    metavar="ID",
    help="The OAuth client id (tbc_...).",
)
_key_option = click.option(
    "--key",
    "key_name",
    default="default",
    show_default=True,
    metavar="NAME",
    help="The device key (from `tokenbroker keygen --name NAME`).",
)
_scope_option = click.option(
    "--scope", default=None, metavar="SCOPES", help="Space-separated scopes to ask for."
)


@click.command()
@click.option("--name", default="default", show_default=True, help="A name for the key.")
@click.option("--force", is_flag=True, help="Replace an existing key of that name.")
@click.option("--keyring", is_flag=True, help="Store the key in the OS keyring (needs `keyring`).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    default=None,
    help="json, table or csv. [default: the global --output, which defaults to table]",
)
def keygen(name: str, force: bool, keyring: bool, output: str | None) -> None:
    """Create a device key (P-256) and print its thumbprint (jkt) for enrollment.

    The key is stored in $XDG_CONFIG_HOME/tokenbroker/keys/NAME.pem (default
    ~/.config/...), readable only by you. Give the jkt to an admin, who runs
    `tokenbroker devices enroll --client-id ID --jkt JKT`.

    \b
    Example:
      tokenbroker keygen --name laptop --output json
    """
    from tokenbroker.client import DeviceKey

    with reported(key_errors=Failed):
        key = DeviceKey.create(name, force=force, keyring=keyring)
    fmt = _format(output)
    record = {"name": key.name, "jkt": key.jkt, "path": key.location}
    click.echo(render([record], KEY_FIELDS, fmt, many=False), nl=False)
    if fmt == "table":
        click.echo(
            f"Enroll it: tokenbroker devices enroll --client-id ID --jkt {key.jkt}", err=True
        )


TOKEN_FIELDS = (
    Field("access_token"),
    Field("token_type"),
    Field("expires_in", "int"),
    Field("scope"),
)


@click.command()
@_issuer_option
@_client_id_option
@_key_option
@_scope_option
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    default="json",
    show_default=True,
    help="json (the token response as the broker sent it), table or csv.",
)
@click.option(
    "--subject-token-file",
    default=None,
    metavar="FILE",
    help="A person's ID token (trusted issuer): RFC 8693 exchange, the token names them.",
)
def token(
    issuer: str,
    client_id: str,
    key_name: str,
    scope: str | None,
    output: str,
    subject_token_file: str | None,
) -> None:
    """Get a DPoP-bound access token and print the token response (JSON by default).

    The client secret comes from $TOKENBROKER_CLIENT_SECRET or, on a terminal, a hidden
    prompt.
    The token is bound to the device key: it is useless without it.

    \b
    Example:
      export TOKENBROKER_ISSUER=http://127.0.0.1:8787 TOKENBROKER_CLIENT_ID=tbc_...
      tokenbroker token --scope model:demo:invoke
    """
    with reported():
        person = {"subject_token_file": subject_token_file} if subject_token_file else {}
        issued = token_source(issuer, client_id, key_name, scope, **person).token()
    if output == "json":
        click.echo(json.dumps(dict(issued.response), indent=2))
    else:
        click.echo(
            render([issued.response], TOKEN_FIELDS, cast(Format, output), many=False), nl=False
        )


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip() or name.strip() != name:
            raise click.BadParameter(
                f"expected 'Name: value', got {value!r}", param_hint="--header"
            )
        headers[name] = content.strip()
    return headers


def _data(value: str | None) -> bytes | None:
    if value is None:
        return None
    if not value.startswith("@"):
        return value.encode("utf-8")
    if value == "@-":
        return sys.stdin.buffer.read()
    try:
        with open(value[1:], "rb") as file:
            return file.read()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {value[1:]}: {exc.strerror}", param_hint="--data"
        ) from None


@click.command()
@click.argument("method")
@click.argument("url")
@click.option("-d", "--data", default=None, metavar="TEXT|@FILE", help="Request body (@- stdin).")
@click.option(
    "-H", "--header", "header", multiple=True, metavar="'NAME: VALUE'", help="A request header."
)
@_issuer_option
@_client_id_option
@_key_option
@_scope_option
@click.option(
    "--subject-token-file",
    default=None,
    metavar="FILE",
    help="A person's ID token: call as that person (RFC 8693 exchange).",
)
def call(
    method: str,
    url: str,
    data: str | None,
    header: tuple[str, ...],
    issuer: str,
    client_id: str,
    key_name: str,
    scope: str | None,
    subject_token_file: str | None,
) -> None:
    """Call a protected API with a DPoP-bound token, like curl.

    Prints the status line on stderr and the body on stdout; exits 0 for 2xx, 1
    otherwise. A URL starting with / is relative to the issuer. Unless --header sets
    Content-Type, a body that is JSON is sent as application/json, any other as
    text/plain.

    \b
    Examples:
      tokenbroker call GET /v1/whoami
      tokenbroker call POST /v1/models/demo/invoke --data '{"prompt": "hi"}'
    """
    headers = _headers(header)
    body = _data(data)
    if url.startswith("/"):
        url = issuer.rstrip("/") + url
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json" if _is_json(body) else "text/plain"
    from tokenbroker.client import DPoPAuth

    with reported():
        # the URL named on the command line is where the token may go (and the issuer);
        # a redirect anywhere else carries neither token nor proof
        person = {"subject_token_file": subject_token_file} if subject_token_file else {}
        auth = DPoPAuth(token_source(issuer, client_id, key_name, scope, **person), origins=[url])
        with http_session() as session:
            response = session.request(
                method.upper(), url, data=body, headers=headers, auth=auth, timeout=CALL_TIMEOUT
            )
    click.echo(f"HTTP {response.status_code} {response.reason}", err=True)
    content = response.content
    if content:
        click.echo(content, nl=not content.endswith(b"\n"))
    if not 200 <= response.status_code < 300:
        raise click.exceptions.Exit(EXIT_FAILED)


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
