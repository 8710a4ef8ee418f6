"""``tokenbroker alerts list|ack``: the sharing alerts (services/sharing.py).

An alert names the rule, the principal, client and device (thumbprint), a summary of
the evidence (network prefixes, device thumbprints; never a token) and what containment
did (``audit``, ``step_up`` or ``revoke``). ``ack`` marks it handled (who and when).
"""

from __future__ import annotations

from typing import Any

import click

from tokenbroker.cli.admin import _emit, _state, output_option
from tokenbroker.cli.audit_time import TIME_HELP, now_ms, parse_time
from tokenbroker.cli.output import Field, iso_ms
from tokenbroker.domain.sharing import Alert
from tokenbroker.domain.units import DAY_MS

ALERT_FIELDS = (
    Field("id"),
    Field("at"),
    Field("rule"),
    Field("status"),
    Field("containment"),
    Field("principal"),
    Field("client_id"),
    Field("jkt"),
    Field("summary"),
    Field("evidence", "list"),
    Field("at_ms", "int"),
    Field("window_start", "text"),
    Field("acked_by"),
)


def alert_record(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.alert_id,
        "at": iso_ms(alert.at_ms),
        "at_ms": alert.at_ms,
        "rule": alert.rule,
        "status": alert.status,
        "containment": alert.containment,
        "principal": alert.principal,
        "client_id": alert.client_id,
        "jkt": alert.jkt,
        "summary": alert.summary,
        "evidence": list(alert.evidence),
        "window_start": iso_ms(alert.window_start_ms),
        "window_start_ms": alert.window_start_ms,
        "acked_by": alert.acked_by,
        "acked_at_ms": alert.acked_at_ms or None,
    }


@click.group()
def alerts() -> None:
    """Sharing alerts raised from the usage stream, and their acknowledgement.

    \b
    Example:
      tokenbroker alerts list --since 1d --output json
      tokenbroker alerts ack 20261202-0123456789abcdef0123
    """


@alerts.command("list")
@click.option("--since", default=None, help=f"Alerts raised since. {TIME_HELP} [default: 7d]")
@click.option(
    "--status",
    type=click.Choice(("open", "acked", "all")),
    default="open",
    show_default=True,
)
@output_option
def list_alerts(since: str | None, status: str, output: str | None) -> None:
    """List alerts, oldest first (open ones unless --status says otherwise).

    \b
    Example:
      tokenbroker alerts list --since 1d --status all --output json
    """
    now = now_ms()
    since_ms = now - 7 * DAY_MS if since is None else parse_time(since, now, "--since")
    found = _state().container().alerts.list(since_ms=since_ms, status=status)
    _emit([alert_record(a) for a in found], ALERT_FIELDS, output, many=True)


@alerts.command("ack")
@click.argument("alert_id", metavar="ID")
@output_option
def ack_alert(alert_id: str, output: str | None) -> None:
    """Mark an alert handled (exit 1 if it does not exist, 2 if ID is malformed).

    \b
    Example:
      tokenbroker alerts ack 20261202-0123456789abcdef0123
    """
    alert = _state().container().alerts.ack(alert_id.strip())
    _emit([alert_record(alert)], ALERT_FIELDS, output, many=False)
