"""API Gateway HTTP API (payload 2.0) Lambda authorizer: the same checks as the REST
authorizer, answered with a simple response ({"isAuthorized": ..., "context": ...}).

For platform teams on HTTP APIs: attach it with ``EnableSimpleResponses: true``,
``AuthorizerPayloadFormatVersion: "2.0"``, identity sources ``$request.header.Authorization``
and ``$request.header.DPoP``, and result caching OFF (``AuthorizerResultTtlInSeconds: 0``).
Its environment is the REST authorizer's (see AuthorizerFunction in template.yaml).
"""

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
    request, issuer = edge.http_api_request(event)
    return edge.authorize(
        bootstrap.default,
        request,
        issuer,
        logger,
        metrics,
        edge.http_api_response,
        count_allowed=False,
    )
