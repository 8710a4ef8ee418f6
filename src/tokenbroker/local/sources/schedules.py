"""Schedules (``Type: Schedule`` events), emulated: moto runs no EventBridge rule, so the
function gets a genuine EventBridge scheduled event (or the event's ``Input``) every
``rate(...)``, capped by the stack's schedule interval (a ``cron(...)`` schedule runs
every interval). A failing scheduled invocation is logged, not retried (the next tick
runs anyway)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from tokenbroker.local.errors import LocalConfigError
from tokenbroker.local.lambda_host import DEFAULT_ACCOUNT_ID
from tokenbroker.local.provision import Deployment
from tokenbroker.local.sources.streams import enabled
from tokenbroker.local.template import Template

DEFAULT_SCHEDULE_SECONDS = 60.0


@dataclass(frozen=True)
class Schedule:
    """One ``Type: Schedule`` event of a function, resolved."""

    function: str
    event: str
    rule_name: str
    rule_arn: str
    region: str
    account_id: str
    interval: float  # seconds
    input: Any = None  # the event's Input (parsed JSON) instead of the scheduled event

    @property
    def name(self) -> str:
        return f"{self.function}.{self.event}"


def schedules(
    template: Template, deployment: Deployment, *, cap: float = DEFAULT_SCHEDULE_SECONDS
) -> list[Schedule]:
    """The template's enabled ``Type: Schedule`` events, each running every
    ``min(its rate, cap)`` seconds (``cap`` for cron expressions)."""
    account = deployment.account_id or DEFAULT_ACCOUNT_ID
    found = []
    for function, name, raw in template.events("Schedule"):
        props = deployment.resolve(raw)
        if not enabled(props) or str(props.get("State", "ENABLED")).upper() == "DISABLED":
            continue
        where = f"{function}.Events.{name}"
        expression = str(props.get("Schedule", ""))
        rate = rate_seconds(expression)
        if rate is None and not expression.startswith("cron("):
            raise LocalConfigError(f"{where}: Schedule {expression!r} is not rate() or cron()")
        rule = str(props.get("Name") or f"{deployment.stack_name}-{function}{name}")[:64]
        raw_input = props.get("Input")
        try:
            parsed_input = None if raw_input is None else json.loads(str(raw_input))
        except ValueError as exc:
            raise LocalConfigError(f"{where}: Input is not JSON") from exc
        found.append(
            Schedule(
                function=function,
                event=name,
                rule_name=rule,
                rule_arn=f"arn:aws:events:{deployment.region}:{account}:rule/{rule}",
                region=deployment.region,
                account_id=account,
                interval=min(rate, cap) if rate is not None else cap,
                input=parsed_input,
            )
        )
    return found


_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of ``rate(N unit)``; None for anything else."""
    match = _RATE.fullmatch(expression.strip())
    if match is None:
        return None
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")])


def scheduled_event(schedule: Schedule, now: dt.datetime) -> Any:
    """What EventBridge sends the function for one run of the rule."""
    if schedule.input is not None:
        return schedule.input
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": schedule.account_id,
        "time": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": schedule.region,
        "resources": [schedule.rule_arn],
        "detail": {},
    }
