"""``tokenbroker dev --trust-forwarded-for``: the local API takes the client address
from the right-most X-Forwarded-For entry only with the flag; it feeds the authorizer
event's ``requestContext.identity.sourceIp`` as API Gateway does."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.test import Client

from tokenbroker.cli.main import cli
from tokenbroker.local.gateway import ApiSpec, AuthorizerSpec, LocalApi, RouteSpec
from tokenbroker.local.gateway.app import forwarded_client

API = ApiSpec(logical_id="BrokerApi", api_id="abcdefghij", stage="prod")
AUTHORIZER = AuthorizerSpec(
    name="DPoP", function="Authorizer", headers=("Authorization", "DPoP"), ttl=0
)
CREDENTIALS = {"Authorization": "DPoP token", "DPoP": "proof"}


class Functions:
    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {"Authorizer": [], "Invoke": []}

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        self.events[name].append(event)
        if name == "Authorizer":
            return {
                "principalId": "c",
                "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}
                    ],
                },
            }
        return {"statusCode": 200, "body": "{}"}


def source_ips(*, trust: bool, forwarded: str | None) -> tuple[str, str]:
    functions = Functions()
    route = RouteSpec("POST", "/v1/models/{model}/invoke", "Invoke", API, AUTHORIZER)
    app = LocalApi(
        [route], functions.invoke, domain_name="127.0.0.1:8787", log=None, trust_forwarded_for=trust
    )
    headers = dict(CREDENTIALS)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    response = Client(app).post(
        "/v1/models/x/invoke", headers=headers, environ_overrides={"REMOTE_ADDR": "127.0.0.9"}
    )
    assert response.status_code == 200
    auth = functions.events["Authorizer"][-1]["requestContext"]["identity"]["sourceIp"]
    proxied = functions.events["Invoke"][-1]["requestContext"]["identity"]["sourceIp"]
    return auth, proxied


def test_without_the_flag_x_forwarded_for_is_ignored() -> None:
    assert source_ips(trust=False, forwarded="203.0.113.5") == ("127.0.0.9", "127.0.0.9")


def test_with_the_flag_the_right_most_entry_is_the_client() -> None:
    # the client forged the left entry; the trusted proxy appended the right-most one
    forwarded = "6.6.6.6, 203.0.113.5"
    assert source_ips(trust=True, forwarded=forwarded) == ("203.0.113.5", "203.0.113.5")


@pytest.mark.parametrize("forwarded", [None, "", "not-an-ip", "203.0.113.5, garbage"])
def test_with_the_flag_a_missing_or_bad_header_falls_back_to_the_peer(
    forwarded: str | None,
) -> None:
    assert source_ips(trust=True, forwarded=forwarded) == ("127.0.0.9", "127.0.0.9")


def test_forwarded_client_normalises_ipv6_and_uses_the_last_header() -> None:
    headers = [("X-Forwarded-For", "198.51.100.1"), ("x-forwarded-for", "1.1.1.1, 2001:DB8::1")]
    assert forwarded_client(headers) == "2001:db8::1"
    assert forwarded_client([]) is None


def test_dev_has_the_flag_and_documents_it() -> None:
    text = CliRunner().invoke(cli, ["dev", "--help"]).stdout
    assert "--trust-forwarded-for" in text
    assert "right-most" in text
