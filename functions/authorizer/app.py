"""API Gateway REST API REQUEST authorizer: DPoP-bound tokens, one usage write per
allowed request, fail closed."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.web import edge
from tokenbroker.web.lambda_logging import flush_metrics, inject_lambda_context

logger = Logger()
metrics = Metrics()


@inject_lambda_context(logger)  # Powertools' (clear_state=True), cheaper when warm
@flush_metrics(metrics)  # denials only: allowed requests are counted in the ledger
# the event as Lambda delivers it: no Powertools event data class (importing their
# package costs ~2.8 MiB resident and ~20 ms of cold init; the edge reads the raw event)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request, issuer = edge.rest_request(event)
    return edge.authorize(
        bootstrap.default,
        request,
        issuer,
        logger,
        metrics,
        lambda outcome: edge.rest_response(event, outcome),
        count_allowed=False,
    )
