"""POST /v1/models/{model}/invoke: a stub model behind the broker (a sample protected
function; the authorizer has already required scope model:{model}:invoke)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker.web import protected

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: LambdaContext) -> dict[str, Any]:
    return protected.invoke_model(event)
