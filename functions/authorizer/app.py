"""API Gateway REST API REQUEST authorizer: DPoP-bound tokens, one usage write per
allowed request, fail closed."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.web import edge
from tokenbroker.web.lambda_logging import flush_metrics, inject_lambda_context

logger = Logger()
metrics = Metrics()


@inject_lambda_context(logger)  # Powertools' (clear_state=True), cheaper when warm
@flush_metrics(metrics)  # denials only: allowed requests are counted in the ledger
@event_source(data_class=APIGatewayAuthorizerRequestEvent)
def handler(event: APIGatewayAuthorizerRequestEvent, context: LambdaContext) -> dict[str, Any]:
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
