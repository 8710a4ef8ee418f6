"""``report_usage``: how a protected function counts model units (e.g. LLM tokens) toward
its caller's units-per-day quota, after the call. Importable from Lambda layer code (the
layer ships ``web/``; the client SDK re-exports it as ``tokenbroker.client.usage_report``).

The units are recorded against the usage record the authorizer wrote (its ``usage_id``
from the authorizer context), once per record: a retried report counts once. They are
enforced on the caller's next lease (domain/quotas.py states the bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenbroker.domain.errors import InvalidRequest
from tokenbroker.services.quotas import check_units


def authorizer_context(event_or_context: Any) -> Mapping[str, Any]:
    """``requestContext.authorizer`` of an API Gateway proxy event (a dict or a
    Powertools event), or the authorizer context mapping itself."""
    raw = getattr(event_or_context, "raw_event", event_or_context)
    if isinstance(raw, Mapping) and isinstance(raw.get("requestContext"), Mapping):
        authorizer = raw["requestContext"].get("authorizer")
        if isinstance(authorizer, Mapping):
            return authorizer
        raise InvalidRequest("the event carries no authorizer context")
    if isinstance(raw, Mapping) and "usage_id" in raw:
        return raw
    raise InvalidRequest("pass the API Gateway event or its authorizer context")


def report_usage(event_or_context: Any, *, units: int, model: str = "") -> bool:
    """Count ``units`` of ``model`` for the request behind ``event_or_context``. True if
    recorded, False if this usage record was reported already. A grant no quota applies
    to still records its units event in the ledger (there is no counter to count them
    toward). Raises InvalidRequest (bad input) or TemporarilyUnavailable (the store
    failed)."""
    context = authorizer_context(event_or_context)
    check_units(units)
    from tokenbroker.bootstrap import default

    return default().units_reporter.report(context, units=units, model=model)
