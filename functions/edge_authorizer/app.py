"""CloudFront Lambda@Edge viewer-request authorizer.

Lambda@Edge has no environment variables: the configuration is bundled next to this
module as ``config.json`` (the same names as the REST authorizer's environment, e.g.
USAGE_TABLE, CLIENTS_TABLE, DEVICES_TABLE, SIGNING_KEY_ID, ISSUER, AUDIENCE,
ROUTE_SCOPES, plus AWS_REGION: the home region of the tables and key, since the
function runs in the edge location's region). Deploy it in us-east-1 with 128 MB; the
benchmarks show the authorizer's peak RSS well under that.
"""

import functools
import json
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from tokenbroker import bootstrap
from tokenbroker.web import edge

logger = Logger(service="tokenbroker-edge")
metrics = Metrics(namespace="TokenBroker")
CONFIG = Path(__file__).with_name("config.json")


@functools.cache
def container() -> bootstrap.Container:
    """Built on first use from the bundled configuration (never at import time)."""
    from tokenbroker.settings import Settings

    config: dict[str, str] = json.loads(CONFIG.read_text(encoding="utf-8"))
    region = config.get("AWS_REGION", "us-east-1")
    return bootstrap.build(Settings.from_mapping(config), aws=bootstrap.regional_clients(region))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        route_scopes = dict(container().settings.route_scopes)
    except Exception:  # noqa: BLE001 - missing/invalid bundled config: fail closed
        logger.error("edge configuration unavailable")
        route_scopes = {}
    request, issuer, cf_request = edge.edge_request(event, route_scopes)
    outcome = edge.authorize(container, request, issuer, logger, metrics)
    return edge.edge_response(cf_request, outcome)
