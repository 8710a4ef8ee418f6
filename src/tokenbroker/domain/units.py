"""Units and limits several modules share: time spans, ledger field bounds, the shape
of a client id. One definition each, so they cannot drift apart."""

from __future__ import annotations

import re

DAY_SECONDS = 86_400
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

#: ledger fields copied from a request (resource, user agent, request id) are cut here
MAX_LEDGER_FIELD = 256
#: an IPv6 address with a zone fits; anything longer is not an address
MAX_SOURCE_IP = 64

#: client ids as AdminService creates them (and the only shape anything looks up)
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
