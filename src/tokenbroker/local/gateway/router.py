"""The gateway's router: method + path against the template's routes, as API Gateway
matches them (static paths before parameters, ``{proxy+}`` greedy and last), with
werkzeug's routing."""

from __future__ import annotations

import re
from collections.abc import Sequence

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from tokenbroker.local.errors import LocalConfigError
from tokenbroker.local.gateway.model import RouteSpec

_PARAM = re.compile(r"\{([^{}]+?)(\+?)\}")


def werkzeug_rule(path: str) -> tuple[str, dict[str, str]]:
    """A werkzeug rule string for an API Gateway path, and rule argument -> parameter
    name (API Gateway names may not be Python identifiers)."""
    if not path.startswith("/"):
        raise LocalConfigError(f"route path {path!r} must start with '/'")
    names: dict[str, str] = {}
    segments = []
    parts = path.strip("/").split("/") if path != "/" else []
    for index, segment in enumerate(parts):
        match = _PARAM.fullmatch(segment)
        if match is None:
            if "{" in segment or "}" in segment or "<" in segment or ">" in segment:
                raise LocalConfigError(f"route path {path!r}: bad segment {segment!r}")
            segments.append(segment)
            continue
        argument = f"p{len(names)}"
        names[argument] = match.group(1)
        if match.group(2):
            if index != len(parts) - 1:
                raise LocalConfigError(f"route path {path!r}: {{proxy+}} must be last")
            segments.append(f"<path:{argument}>")
        else:
            segments.append(f"<{argument}>")
    return "/" + "/".join(segments), names


class Router:
    """Matches method + path against the routes, with werkzeug's routing."""

    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        seen: dict[tuple[str, str], RouteSpec] = {}
        rules = []
        self._routes = list(routes)
        self._names: list[dict[str, str]] = []
        for index, route in enumerate(self._routes):
            key = (route.method, route.path)
            if key in seen:
                raise LocalConfigError(
                    f"{route.method} {route.path} is declared by {seen[key].function} and "
                    f"{route.function}"
                )
            seen[key] = route
            rule, names = werkzeug_rule(route.path)
            methods = None if route.method == "ANY" else [route.method]
            rules.append(Rule(rule, endpoint=index, methods=methods))
            self._names.append(names)
        self._map = Map(rules, strict_slashes=False, merge_slashes=False, redirect_defaults=False)

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        """The route and its path parameters, or None (API Gateway's 403)."""
        adapter = self._map.bind("localhost")
        try:
            endpoint, arguments = adapter.match(path, method=method)
        except HTTPException:  # NotFound, MethodNotAllowed, RequestRedirect
            return None
        route = self._routes[endpoint]
        if route.method not in ("ANY", method):  # werkzeug adds HEAD to GET rules
            return None
        names = self._names[endpoint]
        return route, {names[arg]: str(value) for arg, value in arguments.items()}
