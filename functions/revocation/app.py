"""Revocation endpoint Lambda: POST {revocation_endpoint} (RFC 7009).

No Powertools Tracer (it needs aws_xray_sdk, which the layer does not ship): see
functions/token_endpoint/app.py.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.web import lifecycle

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    return lifecycle.revoke(event, bootstrap.default, logger, metrics)
