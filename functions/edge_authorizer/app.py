"""CloudFront Lambda@Edge viewer-request authorizer.

Lambda@Edge has no environment variables: the configuration is bundled next to this
module as ``config.json`` (the same names as the REST authorizer's environment, e.g.
USAGE_TABLE, CLIENTS_TABLE, DEVICES_TABLE, SIGNING_KEY_ID, ISSUER, AUDIENCE,
ROUTE_SCOPES, plus AWS_REGION: the home region of the tables and key, since the
function runs in the edge location's region). Deploy it in us-east-1 with 128 MB; the
benchmarks show the authorizer's peak RSS well under that.

``ISSUER`` is required: the viewer chooses the Host header, so an issuer derived from it
would let anyone name their own. The token-signing keys are the broker's published JWKS
(``ISSUER`` + ``JWKS_PATH``, fetched over HTTPS, domain/published_keys.py), so the edge
trusts exactly the published set through a key rotation (``tokenbroker keys rotate``):
the next key as soon as it is published, the old one until it is withdrawn. Without
``ISSUER`` (or with any other configuration error) every request is answered with a 401,
and the error is logged once per execution environment (the bundled file cannot change
while it lives).

CloudFront gives a viewer-request function 5 s. The AWS clients here give up on a call
quickly (``EDGE_CONFIG``: one attempt, ``CALL_WORST_CASE_S`` at most), and
``CALL_BUDGET`` (adapters/call_budget.py) refuses to start a call that could not finish
inside the invocation's remaining time with ``RESERVE_S`` left to answer, however many
calls the request needs (the key fetch on a cold start and once a minute, the liveness
read, the usage write, and with quotas the lease and, before ``quotas migrate``, the
rules Query): a slow dependency is a Deny, never a CloudFront 503.
"""

import functools
import json
import time
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from tokenbroker import bootstrap
from tokenbroker.adapters.aws_models import DEFAULT_DIR, MANIFEST
from tokenbroker.adapters.call_budget import CallBudget
from tokenbroker.adapters.jwks import JwksSource
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.published_keys import PublishedKeys
from tokenbroker.web import edge

logger = Logger(service="tokenbroker-edge")
metrics = Metrics(namespace="TokenBroker")
CONFIG = Path(__file__).with_name("config.json")

CONNECT_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 0.8
ATTEMPTS = 1  # no retries: a retry's back-off alone could take the rest of the 5 s
EDGE_CONFIG = Config(
    parameter_validation=False,
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
    tcp_keepalive=True,
)
#: GET jwks_uri (cold start, then once a minute), dynamodb:BatchGetItem (liveness),
#: dynamodb:PutItem: the calls of a request without quotas
EDGE_AWS_CALLS = 3
CALL_WORST_CASE_S = ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S)
EDGE_WORST_CASE_S = EDGE_AWS_CALLS * CALL_WORST_CASE_S
VIEWER_REQUEST_LIMIT_S = 5.0
#: time kept to answer the viewer after the last call (the policy is built before it)
RESERVE_S = 0.2
CALL_BUDGET = CallBudget(per_call_s=CALL_WORST_CASE_S, reserve_s=RESERVE_S)


def _build() -> bootstrap.Container:
    from tokenbroker.settings import Settings

    config: dict[str, str] = json.loads(CONFIG.read_text(encoding="utf-8"))
    settings = Settings.from_mapping(config)
    if not settings.issuer:
        raise ConfigurationError("ISSUER is required in the bundled config.json")
    region = config.get("AWS_REGION", "us-east-1")
    jwks = JwksSource(settings.issuer.rstrip("/") + settings.jwks_path, timeout=READ_TIMEOUT_S)
    # the botocore models cut to the calls the edge makes, bundled by the build
    # (src/Makefile layer-data; adapters/aws_models.py): a fifth of the full models'
    # client cost at cold start; BOTOCORE_DATA in config.json overrides (a path, or ""
    # when the bundle has none: botocore's full models)
    data = config.get("BOTOCORE_DATA", "edge" if (DEFAULT_DIR / MANIFEST).exists() else "")
    clients = bootstrap.regional_clients(region, config=EDGE_CONFIG, botocore_data=data)
    return bootstrap.build(
        settings,
        aws=lambda service: CALL_BUDGET.guard(clients(service)),
        key_cache=PublishedKeys(jwks.fetch, clock=time.time),
    )


@functools.cache
def _loaded() -> bootstrap.Container | ConfigurationError:
    """The container, or why there is none (logged here, once)."""
    try:
        return _build()
    except Exception as exc:  # noqa: BLE001 - missing/invalid bundled config: fail closed
        logger.error("edge configuration unavailable", extra={"error_type": type(exc).__name__})
        return ConfigurationError("the bundled configuration is unavailable")


def container() -> bootstrap.Container:
    """Built on first use from the bundled configuration (never at import time)."""
    loaded = _loaded()
    if isinstance(loaded, ConfigurationError):
        raise loaded
    return loaded


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    CALL_BUDGET.begin(context)  # this invocation's remaining time bounds its AWS calls
    loaded = _loaded()
    route_scopes = (
        {} if isinstance(loaded, ConfigurationError) else dict(loaded.settings.route_scopes)
    )
    request, cf_request = edge.edge_request(event, route_scopes)
    return edge.authorize(
        container,
        request,
        "",  # never the viewer's Host: the issuer is ISSUER from config.json
        logger,
        metrics,
        lambda outcome: edge.edge_response(cf_request, outcome),
    )
