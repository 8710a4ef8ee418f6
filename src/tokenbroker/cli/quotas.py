"""``tokenbroker quotas set|list``: a client's request and model-unit quotas (enforced by
the authorizer per principal; design and bounds in tokenbroker.domain.quotas)."""

from __future__ import annotations

import click

from tokenbroker.adapters.quota_rules import REASON_INVALID
from tokenbroker.cli.admin import _admin, _emit, _state, client_id_option, output_option
from tokenbroker.cli.errors import BadInput
from tokenbroker.cli.output import Field
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.quotas import MAX_LIMIT, QuotaLimits

RULE_FIELDS = (
    Field("client_id"),
    Field("model"),
    Field("requests_per_minute", "int"),
    Field("requests_per_day", "int"),
    Field("units_per_day", "int"),
)
_LIMIT = click.IntRange(0, MAX_LIMIT)
MIGRATION_FIELDS = (*RULE_FIELDS, Field("result"), Field("superseded"))


@click.group()
def quotas() -> None:
    """Requests per minute and per day, and model units per day, per principal.

    Limits apply to each principal of the client, counted per (client, principal,
    model): a rule for one model (--model) counts that model apart; otherwise every
    route of the client shares one count. Unset limits fall back to the client's rule
    for all models, then to the deployment's defaults; 0 means unlimited. A spent quota
    is a 429 with Retry-After. Changes reach the edge within 30 s.

    \b
    Example:
      tokenbroker quotas set --client-id tbc_... --requests-per-minute 50
      tokenbroker quotas set --client-id tbc_... --model gpt-secret --units-per-day 100000
      tokenbroker quotas list --client-id tbc_... --output json
      tokenbroker quotas migrate --dry-run
    """


@quotas.command("set")
@client_id_option
@click.option("--model", default="*", show_default=True, help="One model, or * for all.")
@click.option("--requests-per-minute", type=_LIMIT, default=None, help="0 = unlimited.")
@click.option("--requests-per-day", type=_LIMIT, default=None, help="0 = unlimited.")
@click.option("--units-per-day", type=_LIMIT, default=None, help="0 = unlimited.")
@output_option
def set_quota(
    client_id: str,
    model: str,
    requests_per_minute: int | None,
    requests_per_day: int | None,
    units_per_day: int | None,
    output: str | None,
) -> None:
    """Set (merge) limits for a client, for all its routes or for one --model.

    \b
    Example:
      tokenbroker quotas set --client-id tbc_... --requests-per-minute 50 -o json
    """
    _admin().get_client(client_id)  # an unknown client is an error, not a silent rule
    limits = QuotaLimits(requests_per_minute, requests_per_day, units_per_day)
    rule = _state().container().quota_admin.set(client_id, model, limits)
    _emit([rule.asdict()], RULE_FIELDS, output, many=False)


@quotas.command("list")
@client_id_option
@output_option
def list_quotas(client_id: str, output: str | None) -> None:
    """List a client's rules (unset limits print empty: the default applies).

    \b
    Example:
      tokenbroker quotas list --client-id tbc_... --output json
    """
    _admin().get_client(client_id)
    rules = _state().container().quota_admin.list(client_id)
    _emit([r.asdict() for r in rules], RULE_FIELDS, output, many=True)


@quotas.command("migrate")
@click.option("--dry-run", is_flag=True, help="List what would be migrated; change nothing.")
@output_option
def migrate_quotas(dry_run: bool, output: str | None) -> None:
    """Move rules stored by the previous version into the current format.

    The previous version stored one item per (client, model); this one keeps one rules
    item per client, read by the edge inside its liveness read. Until this command has
    run once against a deployment, the edge reads each client's rules in both formats
    with a query of its own (enforced, but one more round trip per client per 5 s):
    run it after deploying this version, fresh installs too.

    Each legacy rule is folded into its client's rules item (a limit that item already
    sets wins, listed as superseded) and deleted in the same transaction; then the table
    is marked migrated. Safe to run again or twice at once; a failure leaves the rules
    not yet moved in place and still enforced: run it again. Stop using the previous
    version's CLI first.

    \b
    Example:
      tokenbroker quotas migrate --dry-run --output json
      tokenbroker quotas migrate
    """
    try:
        report = _state().container().quota_admin.migrate(dry_run=dry_run)
    except TemporarilyUnavailable as exc:
        if exc.reason != REASON_INVALID:
            raise  # an AWS failure: exit 1 (cli/main.py), the unmoved rules stay enforced
        # a legacy item this version cannot read: nothing of its client moved; the
        # command cannot run until an admin fixes or deletes it
        raise BadInput(f"{exc.description}; nothing of that client was migrated") from exc
    _emit(report.rows(), MIGRATION_FIELDS, output, many=True)
    state = "the table is marked migrated" if report.marked else "the table is not marked migrated"
    verb = "would migrate" if dry_run else "migrated"
    click.echo(f"{verb} {len(report.rules)} legacy rule(s); {state}", err=True)
