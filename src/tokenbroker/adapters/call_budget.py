"""A time budget for one invocation's AWS calls (Lambda@Edge's viewer-request limit).

CloudFront gives a viewer-request function 5 s (its Lambda timeout), and answers a
function that runs out with a 503, not with the Deny the broker owes the viewer. The
edge's clients give up on one call quickly (functions/edge_authorizer: 0.5 s connect +
0.8 s read, one attempt), but how many calls a request makes depends on the request: the
key fetch (cold start, once a minute), the liveness read, the usage write, and with
quotas the lease (re-planned up to ``services.quotas.MAX_ATTEMPTS`` times near a limit)
and, before ``quotas migrate``, the rules Query. Counting them up front is fragile (the
count changed under us once); asking Lambda how much time is left is not.

:class:`CallBudget` is a botocore ``before-send`` handler: before every attempt of every
call (botocore's own sends and :mod:`tokenbroker.adapters.put_item`'s lean ones, which
emit the same event) it asks the invocation's ``LambdaContext`` for the time left, and
refuses to start an attempt that could not finish (its worst case, ``per_call_s``) with
``reserve_s`` left to answer the viewer. The refusal is a botocore ``HTTPClientError``
(as a timeout is), so every adapter's existing mapping turns it into a Deny
(``TemporarilyUnavailable``, fail closed) and nothing is written. Trusts: Lambda's own
clock for the invocation (the context), nothing the viewer sends.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import HTTPClientError


class RemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class CallBudgetSpent(HTTPClientError):  # type: ignore[misc]  # botocore is untyped
    fmt = (
        "not enough of the invocation's time is left for another AWS call "
        "({left_ms} ms left, {needed_ms} ms needed)"
    )


class CallBudget:
    """``begin(context)`` at the start of each invocation; ``guard(client)`` each client
    once (the handler runs for every send, and costs one method call and a comparison)."""

    def __init__(self, *, per_call_s: float, reserve_s: float) -> None:
        self._needed_ms = round((per_call_s + reserve_s) * 1000)
        self._context: RemainingTime | None = None

    @property
    def needed_ms(self) -> int:
        return self._needed_ms

    def begin(self, context: RemainingTime | None) -> None:
        self._context = context

    def check(self, **_: Any) -> None:
        context = self._context
        if context is None:
            return  # outside an invocation (e.g. building the container): no budget yet
        left_ms = context.get_remaining_time_in_millis()
        if left_ms < self._needed_ms:
            raise CallBudgetSpent(error=None, left_ms=left_ms, needed_ms=self._needed_ms)

    def guard(self, client: Any) -> Any:
        """``client`` with the check on its every send (registered first, so it runs
        before any handler that would answer the send, e.g. moto's or a test stub's)."""
        client.meta.events.register_first(
            "before-send", self.check, unique_id=f"tokenbroker-call-budget-{id(self)}"
        )
        return client
