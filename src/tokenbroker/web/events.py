"""Reading raw API Gateway v1 events (REST proxy and REQUEST authorizer): headers as
API Gateway delivers them and the URL the client called. Shared by the token endpoint
and the edge; imports nothing from the services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote


def raw_header_values(raw: Mapping[str, Any], name: str) -> list[str]:
    """All values of a header, case-insensitively, from a raw API Gateway v1 event
    (``multiValueHeaders`` when present, else ``headers``)."""
    wanted = name.lower()
    multi = raw.get("multiValueHeaders")
    values: list[str] = []
    # type(...) is dict first: the runtime's events are dicts, and an ABC check is not free
    if (type(multi) is dict or isinstance(multi, Mapping)) and multi:
        for key, vals in multi.items():
            if type(key) is str and key.lower() == wanted and isinstance(vals, list):
                values.extend(v for v in vals if isinstance(v, str))
        return values
    single = raw.get("headers")
    if type(single) is dict or isinstance(single, Mapping):
        for key, val in single.items():
            if isinstance(key, str) and key.lower() == wanted and isinstance(val, str):
                values.append(val)
    return values


def raw_headers(raw: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, list[str]]:
    """``raw_header_values`` for several headers in one pass over the event's headers
    (the edge reads four per request): lower-cased name -> its values."""
    wanted: dict[str, list[str]] = {name.lower(): [] for name in names}
    multi = raw.get("multiValueHeaders")
    if (type(multi) is dict or isinstance(multi, Mapping)) and multi:
        get = wanted.get
        for key, vals in multi.items():
            # the name first: most headers are not wanted (no generator per header:
            # ~2 us of the edge's ~5 us here, benchmarks/authorizer.py glue)
            found = get(key.lower()) if type(key) is str else None
            if found is not None and isinstance(vals, list):
                for value in vals:
                    if isinstance(value, str):
                        found.append(value)
        return wanted
    single = raw.get("headers")
    if type(single) is dict or isinstance(single, Mapping):
        for key, val in single.items():
            if isinstance(key, str) and isinstance(val, str):
                found = wanted.get(key.lower())
                if found is not None:
                    found.append(val)
    return wanted


def raw_request_url(
    raw: Mapping[str, Any], headers: Mapping[str, list[str]] | None = None
) -> tuple[str, str]:
    """(URL the client called, without query; the external base URL = issuer) from a
    REST API proxy or REQUEST-authorizer event.

    REST APIs put the path as called (with the stage, or a custom domain's base path,
    percent-encoded as sent) in ``requestContext.path`` and the route's path in ``path``
    (which may be decoded); the base is the difference.
    """
    ctx = raw.get("requestContext")
    ctx = ctx if type(ctx) is dict or isinstance(ctx, Mapping) else {}
    # ``headers``: raw_headers(raw, (...)) with at least x-forwarded-proto and host
    if headers is None:
        headers = raw_headers(raw, ("X-Forwarded-Proto", "Host"))
    protos = headers["x-forwarded-proto"]
    proto = protos[0].split(",")[0].strip().lower() if len(protos) == 1 else "https"
    if proto not in ("http", "https"):
        proto = "https"
    hosts = headers["host"]
    host = str(ctx.get("domainName") or (hosts[0] if len(hosts) == 1 else ""))
    route_path = str(raw.get("path") or "")
    called = str(ctx.get("path") or route_path or "/")
    return f"{proto}://{host}{called}", f"{proto}://{host}{_base_path(called, route_path)}"


def _base_path(called: str, route_path: str) -> str:
    """The stage or base-path prefix of ``called`` (percent-encoded, as sent) before
    ``route_path`` (which may arrive decoded: then compare segment by segment)."""
    if not route_path:
        return ""
    if called.endswith(route_path):
        return called[: -len(route_path)]
    segments = route_path.count("/")
    decoded = unquote(called)
    if decoded.endswith(route_path) and decoded.count("/") == called.count("/"):
        return "/".join(called.split("/")[:-segments])
    return ""
