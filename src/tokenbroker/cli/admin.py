"""``tokenbroker clients ...`` and ``tokenbroker devices ...``: thin wrappers around
:class:`tokenbroker.services.admin.AdminService`. Validation and every rule live in
the service; this module parses options and prints results."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import click

from tokenbroker.cli.deployment import CliState
from tokenbroker.cli.output import FORMATS, Field, Format, Record, render
from tokenbroker.domain.models import Client, Device
from tokenbroker.services.admin import DEFAULT_MAX_DEVICES, MAX_DEVICES_LIMIT, AdminService

F = TypeVar("F", bound=Callable[..., Any])

CLIENT_FIELDS = (
    Field("client_id"),
    Field("name"),
    Field("status"),
    Field("scopes", "list"),
    Field("active_devices", "int"),
    Field("max_devices", "int"),
    Field("created_at", "time"),
)
CREATED_CLIENT_FIELDS = (
    Field("client_id"),
    Field("client_secret"),
    Field("name"),
    Field("scopes", "list"),
    Field("max_devices", "int"),
    Field("status"),
    Field("created_at", "time"),
)
DEVICE_FIELDS = (
    Field("jkt"),
    Field("client_id"),
    Field("label"),
    Field("status"),
    Field("enrolled_at", "time"),
    Field("revoked_at", "time"),
)
SECRET_NOTE = "Save the client_secret now: it is stored only as a hash and cannot be shown again."


def client_record(client: Client) -> dict[str, Any]:
    """A client as output (never its secret hash)."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "status": client.status.value,
        "scopes": sorted(client.scopes),
        "active_devices": client.active_devices,
        "max_devices": client.max_devices,
        "created_at": client.created_at,
    }


def device_record(device: Device) -> dict[str, Any]:
    return {
        "jkt": device.jkt,
        "client_id": device.client_id,
        "label": device.label,
        "status": device.status.value,
        "enrolled_at": device.enrolled_at,
        "revoked_at": device.revoked_at,
    }


def output_option(func: F) -> F:
    """``-o/--output`` on a command; defaults to the global ``--output``."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(FORMATS),
        default=None,
        help="json, table or csv. [default: the global --output, which defaults to table]",
    )(func)


def _state() -> CliState:
    return click.get_current_context().find_object(CliState) or CliState()


def _admin() -> AdminService:
    return _state().container().admin


def _format(output: str | None) -> Format:
    return cast(Format, output or _state().output)


def _emit(
    records: Iterable[Record], fields: tuple[Field, ...], output: str | None, *, many: bool
) -> None:
    click.echo(render(records, fields, _format(output), many=many), nl=False)


client_id_option = click.option(
    "--client-id", required=True, metavar="ID", help="The client's id (tbc_...)."
)
jkt_option = click.option(
    "--jkt",
    required=True,
    metavar="THUMBPRINT",
    help="RFC 7638 SHA-256 thumbprint of the device's public key (43 base64url characters).",
)

# ---- clients --------------------------------------------------------------------------


@click.group()
def clients() -> None:
    """Create, list, show and disable OAuth clients.

    A client authenticates to the token endpoint with its id and secret, and may only
    obtain tokens for its scopes, from the devices enrolled for it.

    \b
    Example:
      tokenbroker clients create --name billing-app --scope "model:chat:invoke"
      tokenbroker clients list --output json
    """


@clients.command("create")
@click.option("--name", required=True, help="A human-readable name (1-128 characters).")
@click.option(
    "--scope",
    required=True,
    metavar='"S1 S2..."',
    help="Space-separated scopes the client may request (RFC 6749 scope tokens).",
)
@click.option(
    "--max-devices",
    type=int,
    default=DEFAULT_MAX_DEVICES,
    show_default=True,
    help=f"How many devices may be enrolled (active) at once, 1-{MAX_DEVICES_LIMIT}.",
)
@click.option(
    "--resource",
    "resources",
    multiple=True,
    metavar="URI",
    help="RFC 8707: a resource (token audience) the client may ask for (repeatable; "
    "none: every audience of the deployment).",
)
@output_option
def create_client(
    name: str, scope: str, max_devices: int, resources: tuple[str, ...], output: str | None
) -> None:
    """Create a client and print its id and secret.

    The secret is printed once, now: only its hash is stored. Save it in your secret
    store straight away; if it is lost, create a new client.

    \b
    Example:
      tokenbroker clients create --name billing-app \\
          --scope "model:chat:invoke model:embed:invoke" --max-devices 5 --output json
    """
    created = _admin().create_client(
        name=name, scope=scope, max_devices=max_devices, resources=resources
    )
    record = client_record(created.client) | {"client_secret": created.client_secret}
    fmt = _format(output)
    _emit([record], CREATED_CLIENT_FIELDS, fmt, many=False)
    if fmt == "table":
        click.echo(f"\n{SECRET_NOTE}")
    else:  # keep stdout machine-readable
        click.echo(SECRET_NOTE, err=True)


@clients.command("list")
@output_option
def list_clients(output: str | None) -> None:
    """List every client (never secrets), with its device usage.

    \b
    Example:
      tokenbroker clients list --output csv > clients.csv
    """
    rows = [client_record(c) for c in _admin().list_clients()]
    rows.sort(key=lambda r: (r["created_at"], r["client_id"]))
    _emit(rows, CLIENT_FIELDS, output, many=True)


@clients.command("show")
@client_id_option
@output_option
def show_client(client_id: str, output: str | None) -> None:
    """Show one client.

    \b
    Example:
      tokenbroker clients show --client-id tbc_0123456789abcdef01234567
    """
    _emit([client_record(_admin().get_client(client_id))], CLIENT_FIELDS, output, many=False)


@clients.command("disable")
@client_id_option
@output_option
def disable_client(client_id: str, output: str | None) -> None:
    """Disable a client: its credentials stop working at the token endpoint at once.

    Access tokens issued before are not recalled; they expire on their own (5 minutes
    by default).

    \b
    Example:
      tokenbroker clients disable --client-id tbc_0123456789abcdef01234567
    """
    client = _admin().disable_client(client_id)
    _emit([client_record(client)], CLIENT_FIELDS, output, many=False)


@clients.command("update")
@client_id_option
@click.option(
    "--scope",
    default=None,
    metavar='"S1 S2..."',
    help="The client's scopes from now on (replaces them all; RFC 6749 scope tokens).",
)
@click.option(
    "--resource",
    "resources",
    multiple=True,
    metavar="URI",
    help="RFC 8707: the resources the client may ask for from now on (repeatable; "
    "replaces them all).",
)
@output_option
def update_client(
    client_id: str, scope: str | None, resources: tuple[str, ...], output: str | None
) -> None:
    """Replace a client's scopes.

    New tokens get only these scopes. Tokens already issued that carry a removed scope
    stop working at the edge within seconds (the edge's liveness bound, 5 s).

    \b
    Example:
      tokenbroker clients update --client-id tbc_0123456789abcdef01234567 \\
          --scope "model:demo:invoke"
    """
    if scope is None and not resources:
        raise click.UsageError("give --scope, --resource or both")
    admin = _admin()
    if resources:
        client = admin.update_client_resources(client_id, resources)
    if scope is not None:
        client = admin.update_client_scopes(client_id, scope)
    _emit([client_record(client)], CLIENT_FIELDS, output, many=False)


@clients.command("revoke-tokens")
@client_id_option
@output_option
def revoke_client_tokens(client_id: str, output: str | None) -> None:
    """Refuse every access token the client holds now.

    Tokens issued up to this second stop working at the edge within seconds (the
    edge's liveness bound, 5 s); the client can obtain new ones at once. To stop new
    ones too, disable the client or revoke its devices.

    \b
    Example:
      tokenbroker clients revoke-tokens --client-id tbc_0123456789abcdef01234567
    """
    client = _admin().revoke_client_tokens(client_id)
    record = client_record(client) | {"tokens_not_before": client.tokens_not_before}
    _emit([record], (*CLIENT_FIELDS, Field("tokens_not_before", "time")), output, many=False)


@clients.command("set-containment")
@client_id_option
@click.option(
    "--mode",
    required=True,
    type=click.Choice(("audit", "step_up", "revoke")),
    help="audit: alert only; step_up: a fresh identity check before new tokens; "
    "revoke: the flagged device is revoked.",
)
@output_option
def set_containment(client_id: str, mode: str, output: str | None) -> None:
    """What a sharing alert does to this client's flagged device.

    \b
    Example:
      tokenbroker clients set-containment --client-id tbc_0123456789abcdef01234567 --mode revoke
    """
    container = _state().container()
    client = container.admin.get_client(client_id)  # NotFound: exit 1, one line
    applied = container.containment.set_mode(client.client_id, mode)
    _emit(
        [{"client_id": client.client_id, "containment": applied.value}],
        (Field("client_id"), Field("containment")),
        output,
        many=False,
    )


# ---- devices --------------------------------------------------------------------------


@click.group()
def devices() -> None:
    """Enroll, list and revoke device keys.

    A device is identified by the RFC 7638 thumbprint (jkt) of the public key it signs
    DPoP proofs with. Tokens are only issued to enrolled, active devices of a client,
    and a client has at most --max-devices active devices.

    \b
    Example:
      tokenbroker devices enroll --client-id tbc_0123456789abcdef01234567 --jkt THUMBPRINT
      tokenbroker devices list --client-id tbc_0123456789abcdef01234567
    """


@devices.command("enroll")
@client_id_option
@click.option(
    "--jkt",
    default=None,
    metavar="THUMBPRINT",
    help="RFC 7638 SHA-256 thumbprint of the device's public key (not with --self).",
)
@click.option(
    "--label",
    default="",
    help="Optional note, e.g. the host name (up to 64 letters, digits, spaces, .@:/+-_).",
)
@click.option(
    "--self",
    "self_service",
    is_flag=True,
    help="Enroll your own device key as a person: needs --subject-token-file (your ID "
    "token from a trusted issuer), --issuer and $TOKENBROKER_CLIENT_SECRET (the app's).",
)
@click.option(
    "--subject-token-file", default=None, metavar="FILE", help="With --self: your ID token."
)
@click.option(
    "--issuer", envvar="TOKENBROKER_ISSUER", default=None, metavar="URL", help="With --self."
)
@click.option("--key", "key_name", default="default", show_default=True, help="With --self.")
@output_option
def enroll_device(
    client_id: str,
    jkt: str | None,
    label: str,
    self_service: bool,
    subject_token_file: str | None,
    issuer: str | None,
    key_name: str,
    output: str | None,
) -> None:
    """Enroll a device key for a client (admin), or your own key as a person (--self).

    Fails if the client is disabled, the key is already enrolled (for any client, even
    if revoked since), or the client (admin) / the person (--self) already has its
    maximum of active devices.

    \b
    Example:
      tokenbroker devices enroll --client-id tbc_0123456789abcdef01234567 \\
          --jkt 0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I --label build-agent-7
      tokenbroker devices enroll --self --client-id tbc_0123456789abcdef01234567 \\
          --subject-token-file ~/.cache/id_token --key laptop
    """
    if self_service:
        if jkt is not None or subject_token_file is None or issuer is None:
            raise click.UsageError("--self needs --subject-token-file and --issuer, not --jkt")
        from tokenbroker.cli.people import self_enroll

        self_enroll(
            issuer=issuer,
            client_id=client_id,
            key_name=key_name,
            subject_token_file=subject_token_file,
            label=label,
            output=output,
        )
        return
    if jkt is None:
        raise click.UsageError("Missing option '--jkt' (or use --self).")
    device = _admin().enroll_device(client_id=client_id, jkt=jkt, label=label)
    _emit([device_record(device)], DEVICE_FIELDS, output, many=False)


@devices.command("list")
@client_id_option
@output_option
def list_devices(client_id: str, output: str | None) -> None:
    """List a client's devices, active and revoked, oldest first.

    \b
    Example:
      tokenbroker devices list --client-id tbc_0123456789abcdef01234567 --output json
    """
    rows = [device_record(d) for d in _admin().list_devices(client_id)]
    rows.sort(key=lambda r: (r["enrolled_at"], r["jkt"]))
    _emit(rows, DEVICE_FIELDS, output, many=True)


@devices.command("revoke")
@jkt_option
@output_option
def revoke_device(jkt: str, output: str | None) -> None:
    """Revoke a device key: no new tokens are issued to it, and its slot is freed.

    Access tokens issued before are not recalled; they expire on their own. A revoked
    key cannot be enrolled again; the device must generate a new key.

    \b
    Example:
      tokenbroker devices revoke --jkt 0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I
    """
    device = _admin().revoke_device(jkt)
    _emit([device_record(device)], DEVICE_FIELDS, output, many=False)
