"""``tokenbroker idps add|list|remove`` (trusted OIDC issuers for token exchange) and
the client side of ``tokenbroker devices enroll --self``."""

from __future__ import annotations

import re
from typing import Any

import click

from tokenbroker.cli.admin import _emit, _state, output_option
from tokenbroker.cli.output import Field
from tokenbroker.domain.models import Decision, EventType, Status, UsageRecord
from tokenbroker.domain.policy import parse_scope
from tokenbroker.domain.rfc8693 import TrustedIssuer
from tokenbroker.services.admin import InvalidInput

IDP_FIELDS = (
    Field("issuer"),
    Field("audiences", "list"),
    Field("scopes", "list"),
    Field("subject_claim"),
    Field("required_claims", "list"),
    Field("discovery_url"),
    Field("created_at", "time"),
)
ENROLLED_FIELDS = (
    Field("jkt"),
    Field("principal"),
    Field("client_id"),
    Field("label"),
    Field("status"),
    Field("active_devices", "int"),
    Field("max_devices", "int"),
)
_URL = re.compile(r"https://[^\s|]{1,500}|http://(127\.0\.0\.1|localhost)(:\d+)?(/[^\s|]*)?")
_CLAIM = re.compile(r"[A-Za-z0-9_:.-]{1,64}")


def idp_record(idp: TrustedIssuer) -> dict[str, Any]:
    return {
        "issuer": idp.issuer,
        "audiences": list(idp.audiences),
        "scopes": sorted(idp.scopes),
        "subject_claim": idp.subject_claim,
        "required_claims": [f"{k}={v}" for k, v in sorted(idp.required_claims.items())],
        "discovery_url": idp.discovery,
        "created_at": idp.created_at,
    }


def trusted_issuer(
    *,
    issuer: str,
    audiences: tuple[str, ...],
    scope: str,
    subject_claim: str,
    required: tuple[str, ...],
    discovery_url: str,
    now: int,
) -> TrustedIssuer:
    """Validate the options into a TrustedIssuer (InvalidInput names the bad one)."""
    if not _URL.fullmatch(issuer):
        raise InvalidInput("--issuer must be an https URL (http only for 127.0.0.1/localhost)")
    if discovery_url and not _URL.fullmatch(discovery_url):
        raise InvalidInput("--discovery-url must be an https URL")
    if not audiences or not all(0 < len(a) <= 256 for a in audiences):
        raise InvalidInput("give at least one --audience (the IdP's client id for the app)")
    if not _CLAIM.fullmatch(subject_claim):
        raise InvalidInput("--subject-claim must be a claim name")
    claims: dict[str, str] = {}
    for item in required:
        name, sep, value = item.partition("=")
        if not sep or not _CLAIM.fullmatch(name) or not 0 < len(value) <= 256:
            raise InvalidInput("--require must be CLAIM=VALUE, e.g. cognito:groups=ml-users")
        claims[name] = value
    try:
        scopes = frozenset(parse_scope(scope))
    except Exception as exc:  # InvalidScope: same message for the CLI
        raise InvalidInput("--scope must be space-separated scope tokens") from exc
    return TrustedIssuer(
        issuer=issuer,
        audiences=tuple(dict.fromkeys(audiences)),
        scopes=scopes,
        subject_claim=subject_claim,
        required_claims=claims,
        discovery_url=discovery_url,
        created_at=now,
    )


@click.group()
def idps() -> None:
    """Trust, list and remove external OIDC issuers (token exchange, RFC 8693).

    A person signed in to a trusted issuer can exchange their ID token, with a DPoP
    proof and the app's client credentials, for an access token whose subject is the
    person ("<issuer>|<sub>"). Scopes granted = the app's scopes ∩ the issuer's --scope.

    \b
    Example:
      tokenbroker idps add --issuer https://login.example.com/tenant \\
          --audience 0oa1b2c3 --scope "model:demo:invoke" --require groups=ml-users
      tokenbroker idps list --output json
    """


@idps.command("add")
@click.option("--issuer", required=True, metavar="URL", help="Exactly the ID tokens' iss.")
@click.option(
    "--audience", "audiences", multiple=True, metavar="ID", help="Accepted aud (repeatable)."
)
@click.option("--scope", required=True, metavar='"S1 S2..."', help="Scopes people may get.")
@click.option("--subject-claim", default="sub", show_default=True, help="Claim naming the person.")
@click.option("--require", "required", multiple=True, metavar="CLAIM=VALUE", help="Required claim.")
@click.option(
    "--discovery-url", default="", metavar="URL", help="Where discovery is, if not under iss."
)
@output_option
def add_idp(
    issuer: str,
    audiences: tuple[str, ...],
    scope: str,
    subject_claim: str,
    required: tuple[str, ...],
    discovery_url: str,
    output: str | None,
) -> None:
    """Trust an issuer (its keys are found by OIDC discovery).

    \b
    Example:
      tokenbroker idps add --issuer https://login.example.com/tenant \\
          --audience 0oa1b2c3 --scope "model:demo:invoke" --require groups=ml-users
    """
    container = _state().container()
    idp = trusted_issuer(
        issuer=issuer,
        audiences=audiences,
        scope=scope,
        subject_claim=subject_claim,
        required=required,
        discovery_url=discovery_url,
        now=int(container.clock()),
    )
    container.idps.add(idp)
    _emit([idp_record(idp)], IDP_FIELDS, output, many=False)


@idps.command("list")
@output_option
def list_idps(output: str | None) -> None:
    """List the trusted issuers.

    \b
    Example:
      tokenbroker idps list --output json
    """
    rows = sorted(
        (idp_record(i) for i in _state().container().idps.list()), key=lambda r: r["issuer"]
    )
    _emit(rows, IDP_FIELDS, output, many=True)


@idps.command("remove")
@click.option("--issuer", required=True, metavar="URL")
def remove_idp(issuer: str) -> None:
    """Stop trusting an issuer (warm token functions forget it within a minute).

    \b
    Example:
      tokenbroker idps remove --issuer https://login.example.com/tenant
    """
    _state().container().idps.remove(issuer)
    click.echo(f"removed {issuer}")


def self_enroll(
    *,
    issuer: str,
    client_id: str,
    key_name: str,
    subject_token_file: str,
    label: str,
    output: str | None,
) -> None:
    """``devices enroll --self``: the person's ID token and the device key's proof enroll
    the key at the broker's enrollment endpoint (no AWS credentials involved)."""
    from tokenbroker.cli.client import client_secret, reported
    from tokenbroker.client import DeviceKey
    from tokenbroker.client.people import enroll_device, subject_token_from_file

    with reported():
        enrolled = enroll_device(
            issuer,
            client_id=client_id,
            client_secret=client_secret(),
            key=DeviceKey.load(key_name),
            subject_token=subject_token_from_file(subject_token_file),
            label=label,
        )
    _emit([enrolled], ENROLLED_FIELDS, output, many=False)


@click.group()
def people() -> None:
    """Disable or re-enable a person (a subject of a trusted issuer).

    A disabled person gets no token by exchange, no refresh and no new device, at once;
    access tokens issued before expire on their own.

    \b
    Example:
      tokenbroker people disable --principal "https://login.example.com/tenant|alice"
    """


def _set_person(principal: str, status: Status, event: EventType) -> None:
    import uuid

    if not 0 < len(principal) <= 256 or "|" not in principal:
        raise InvalidInput("--principal must be '<issuer>|<subject>' as tokens name people")
    container = _state().container()
    now = container.clock()
    record = UsageRecord(
        record_id="adm:" + str(uuid.uuid4()),
        at_ms=int(now * 1000),
        decision=Decision.ALLOW,
        reason="ok",
        principal=principal,
        client_id="",
        retain_until=int(now) + container.settings.usage_retention_days * 86_400,
        event=event,
        actor=container.actor,
    )
    container.people.set_person_status(principal, status, int(now), record)
    click.echo(f"{principal} {status.value}")


@people.command("disable")
@click.option("--principal", required=True, metavar="ISSUER|SUB")
def disable_person(principal: str) -> None:
    """Disable a person.

    \b
    Example:
      tokenbroker people disable --principal "https://login.example.com/tenant|alice"
    """
    _set_person(principal, Status.DISABLED, EventType.PERSON_DISABLED)


@people.command("enable")
@click.option("--principal", required=True, metavar="ISSUER|SUB")
def enable_person(principal: str) -> None:
    """Re-enable a disabled person.

    \b
    Example:
      tokenbroker people enable --principal "https://login.example.com/tenant|alice"
    """
    _set_person(principal, Status.ACTIVE, EventType.PERSON_ENABLED)
