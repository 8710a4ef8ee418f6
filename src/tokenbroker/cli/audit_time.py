"""Times on the audit command line: ``--since``/``--until`` in, ISO 8601 UTC out.

Input: ISO 8601 (UTC unless it says otherwise), a date (its UTC midnight), a relative
time (``15m``, ``2h``, ``7d``, ``1w``, optionally followed by ``ago``) or ``now``.
Output, in every audit command: ISO 8601 UTC with milliseconds
(``2026-11-27T04:00:00.123Z``), and in machine-readable output also epoch milliseconds
(a field ending in ``_ms``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime

from tokenbroker.cli.errors import BadInput
from tokenbroker.cli.output import iso_ms
from tokenbroker.domain.units import DAY_MS, HOUR_MS

TIME_HELP = "ISO 8601 (2026-11-27T04:00:00Z, 2026-11-27), relative (15m, 2h, 7d ago) or now."
TIME_EXAMPLE = (
    "use ISO 8601 (2026-11-27T04:00:00Z or 2026-11-27), a relative time (15m, 2h, 7d) or now"
)

_RELATIVE = re.compile(r"(\d{1,9})\s*([smhdw])(?:\s+ago)?", re.IGNORECASE)
_UNIT_MS = {"s": 1000, "m": 60_000, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def now_ms() -> int:
    """The wall clock, for ``now`` and relative times (read before AWS is touched)."""
    return int(time.time() * 1000)


def parse_time(text: str, now_ms: int, option: str) -> int:
    """``text`` as epoch milliseconds (see the module docstring)."""
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    if match := _RELATIVE.fullmatch(value):
        at = now_ms - int(match[1]) * _UNIT_MS[match[2].lower()]
    else:
        try:
            if _DATE.fullmatch(value):
                moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            else:
                moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadInput(f"{option}: invalid time {text!r}; {TIME_EXAMPLE}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = int(moment.timestamp() * 1000)
    if at < 0:
        raise BadInput(f"{option}: {text!r} is before 1970-01-01; {TIME_EXAMPLE}")
    return at


def time_range(since: str | None, until: str | None, now_ms: int) -> tuple[int, int]:
    """``--since``/``--until`` as ms; until defaults to now, since to 24 hours before."""
    end = now_ms if until is None else parse_time(until, now_ms, "--until")
    start = end - DAY_MS if since is None else parse_time(since, now_ms, "--since")
    if start >= end:
        raise BadInput(
            f"--since ({iso_ms(start)}) must be before --until ({iso_ms(end)}); "
            "e.g. --since 2026-11-27T00:00:00Z --until 2026-11-27T06:00:00Z"
        )
    return start, end


def optional_iso(at_ms: int | None) -> str | None:
    return None if at_ms is None else iso_ms(at_ms)
