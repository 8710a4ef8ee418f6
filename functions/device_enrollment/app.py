"""Self-service device enrollment Lambda: POST /oauth2/devices (subject token + DPoP).

No Powertools Tracer (it needs aws_xray_sdk, which the layer does not ship): the
template's ``Tracing: Active`` gives each invocation its X-Ray segment; per-AWS-call
subsegments are the price, paid like the authorizer to keep the layer and cold start lean.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.web import endpoints

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    return endpoints.enroll_device(event, bootstrap.default, logger, metrics)
