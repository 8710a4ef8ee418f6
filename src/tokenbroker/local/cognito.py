"""A local identity provider for people as principals: a moto Cognito user pool.

moto (server mode) issues RS256 ID tokens for its user pools and serves each pool's
``/<pool>/.well-known/openid-configuration`` and ``jwks.json``; the tokens' ``iss`` is the
real Cognito URL (``https://cognito-idp.<region>.amazonaws.com/<pool>``) while the
documents are served by the local moto server, so the trusted-issuer entry names the
discovery URL explicitly. (moto signs every pool's tokens with one fixed key that ships
with moto: an emulation for local use only, never a trusted issuer anywhere else.)

Self-contained on purpose: the local stack calls :func:`provision_people` once, after
provisioning, and adds its export lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenbroker.adapters.idps import DynamoIdpDirectory
from tokenbroker.domain.rfc8693 import TrustedIssuer

POOL_NAME = "tokenbroker-dev-people"
APP_CLIENT_NAME = "tokenbroker-dev-app"
#: what a person from the local pool may be granted (intersected with the app's scopes)
DEV_SCOPES = frozenset({"model:demo:invoke"})
AUTH_FLOWS = ["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]


def cognito_issuer(region: str, pool_id: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"


def provision_people(
    client: Callable[[str], Any],
    *,
    moto_url: str,
    region: str,
    idps_table: str,
    clock: Callable[[], float],
) -> dict[str, str]:
    """Create the pool, an app client allowing ADMIN_USER_PASSWORD_AUTH, and the
    trusted-issuer entry; return the export lines' names and values."""
    cognito = client("cognito-idp")
    pool_id = cognito.create_user_pool(PoolName=POOL_NAME)["UserPool"]["Id"]
    app_client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName=APP_CLIENT_NAME, ExplicitAuthFlows=AUTH_FLOWS
    )["UserPoolClient"]["ClientId"]
    DynamoIdpDirectory(client("dynamodb"), table=idps_table, clock=clock).add(
        TrustedIssuer(
            issuer=cognito_issuer(region, pool_id),
            audiences=(app_client_id,),
            scopes=DEV_SCOPES,
            discovery_url=f"{moto_url}/{pool_id}/.well-known/openid-configuration",
            created_at=int(clock()),
        )
    )
    return {
        "TOKENBROKER_DEV_USER_POOL_ID": pool_id,
        "TOKENBROKER_DEV_USER_POOL_CLIENT_ID": app_client_id,
    }


def id_token_hint() -> str:
    """How to get an ID token for a test user with the AWS CLI alone (printed by dev)."""
    return (
        "# ID token for a test user: aws cognito-idp admin-create-user --user-pool-id "
        '"$TOKENBROKER_DEV_USER_POOL_ID" --username alice --message-action SUPPRESS; '
        "aws cognito-idp admin-set-user-password --user-pool-id "
        '"$TOKENBROKER_DEV_USER_POOL_ID" --username alice --password Alice-pass1! --permanent; '
        "aws cognito-idp admin-initiate-auth --user-pool-id "
        '"$TOKENBROKER_DEV_USER_POOL_ID" --client-id "$TOKENBROKER_DEV_USER_POOL_CLIENT_ID" '
        "--auth-flow ADMIN_USER_PASSWORD_AUTH --auth-parameters "
        "USERNAME=alice,PASSWORD=Alice-pass1! --query AuthenticationResult.IdToken --output text"
    )
