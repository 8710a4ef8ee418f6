"""The gateway's Lambda authorizers: identity sources, the authorizer call, API
Gateway's validation of its answer, the result cache, and the IAM evaluation of the
returned policy against the method ARN.

Faithful on purpose: missing identity sources are a 401 without calling the
authorizer; ``raise Exception("Unauthorized")`` is a 401; an invalid answer is a 500
configuration error; ``context`` values reach the function as strings; results are
cached per identity-source values for ``ReauthorizeEvery`` seconds (SAM's default is
300), so the danger of caching a replay-checking authorizer is visible locally.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenbroker.local.gateway.events import (
    IncomingRequest,
    RequestInfo,
    authorizer_event,
    method_arn,
)
from tokenbroker.local.gateway.model import AuthorizerSpec, RouteSpec
from tokenbroker.local.lambda_host import Invoke, log_to_stderr


@dataclass(frozen=True)
class Decision:
    """What the authorizer step decided: ``context`` for the function, or a response."""

    context: Mapping[str, Any] | None = None
    error: str | None = None  # gateway response type
    message: str | None = None
    #: a Deny's context: what the gateway response's context.authorizer.* mappings see
    denied_context: Mapping[str, str] | None = None


ALLOWED = Decision()


def _glob(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def evaluate_policy(policy: Mapping[str, Any], arn: str) -> str:
    """``Allow``, ``Deny`` (explicit) or ``None`` (no statement matched), as IAM does."""
    statements = policy.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list):
        raise ValueError("policyDocument.Statement must be a list")
    allowed = False
    for statement in statements:
        if not isinstance(statement, Mapping):
            raise ValueError("a policy statement must be an object")
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if not any(_glob(a.lower(), "execute-api:invoke") for a in actions if isinstance(a, str)):
            continue
        if not any(_glob(r, arn) for r in resources if isinstance(r, str)):
            continue
        effect = statement.get("Effect")
        if effect == "Deny":
            return "Deny"
        if effect == "Allow":
            allowed = True
    return "Allow" if allowed else "None"


@dataclass(frozen=True)
class _AuthorizerResult:
    principal_id: str
    policy: Mapping[str, Any]
    context: Mapping[str, str]


def _check_authorizer_output(output: Any) -> _AuthorizerResult:
    """API Gateway's validation of an authorizer's answer (ValueError: config error)."""
    if not isinstance(output, Mapping):
        raise ValueError("the authorizer did not return an object")
    principal = output.get("principalId")
    policy = output.get("policyDocument")
    if not isinstance(principal, str) or not principal:
        raise ValueError("principalId is missing")
    if not isinstance(policy, Mapping):
        raise ValueError("policyDocument is missing")
    context: dict[str, str] = {}
    for key, value in (output.get("context") or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            context[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            context[str(key)] = str(value)
        else:  # API Gateway rejects objects and arrays in the context
            raise ValueError(f"context[{key!r}] must be a string, number or boolean")
    return _AuthorizerResult(principal, policy, context)


class AuthorizerCache:
    """API Gateway's authorizer cache: results per identity-source values, for TTL s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[Any, ...], tuple[float, _AuthorizerResult]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _AuthorizerResult | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self._clock():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: tuple[Any, ...], ttl: int, result: _AuthorizerResult) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl, result)


class Authorizers:
    """Runs a route's authorizer through ``invoke`` and decides, with ``cache``."""

    def __init__(self, invoke: Invoke, cache: AuthorizerCache) -> None:
        self.invoke = invoke
        self.cache = cache

    def authorize(
        self,
        route: RouteSpec,
        request: IncomingRequest,
        path_parameters: Mapping[str, str],
        info: RequestInfo,
    ) -> Decision:
        spec = route.authorizer
        assert spec is not None
        sources = self._identity_sources(spec, route, request)
        if sources is None:
            return Decision(error="UNAUTHORIZED")
        key = (route.api.api_id, spec.name, *sources)
        result = self.cache.get(key) if spec.ttl > 0 else None
        started = time.perf_counter()
        if result is None:
            event = authorizer_event(route, request, path_parameters, info)
            try:
                output = self.invoke(spec.function, event)
            except Exception as exc:  # noqa: BLE001 - any failure is API Gateway's 401/500
                # a Lambda authorizer says 401 with raise Exception("Unauthorized")
                if str(exc) == "Unauthorized":
                    return Decision(error="UNAUTHORIZED")
                traceback.print_exc(file=sys.stderr)
                return Decision(error="AUTHORIZER_CONFIGURATION_ERROR")
            try:
                result = _check_authorizer_output(output)
            except ValueError as exc:
                log_to_stderr(f"authorizer {spec.name}: invalid response: {exc}")
                return Decision(error="AUTHORIZER_CONFIGURATION_ERROR")
            if spec.ttl > 0:
                self.cache.put(key, spec.ttl, result)
        try:
            effect = evaluate_policy(result.policy, method_arn(route, request, info))
        except ValueError as exc:
            log_to_stderr(f"authorizer {spec.name}: {exc}")
            return Decision(error="AUTHORIZER_CONFIGURATION_ERROR")
        if effect != "Allow":
            return Decision(
                error="ACCESS_DENIED",
                message="User is not authorized to access this resource"
                + (" with an explicit deny" if effect == "Deny" else ""),
                denied_context=result.context,
            )
        latency = int((time.perf_counter() - started) * 1000)
        return Decision(
            context={
                **result.context,
                "principalId": result.principal_id,
                "integrationLatency": latency,
            }
        )

    @staticmethod
    def _identity_sources(
        spec: AuthorizerSpec, route: RouteSpec, request: IncomingRequest
    ) -> tuple[str, ...] | None:
        """The identity-source values, or None if one is missing or empty (401)."""
        values: list[str] = []
        for name in spec.headers:
            values.append(request.header(name) or "")
        query = dict(request.query)
        values += [query.get(name, "") for name in spec.query_strings]
        stage_variables = route.api.stage_variables or {}
        values += [stage_variables.get(name, "") for name in spec.stage_variables]
        if any(not value for value in values):
            return None
        if spec.validation_expression is not None and not re.fullmatch(
            spec.validation_expression, values[0]
        ):
            return None
        return tuple(values)
