"""Real boto3 clients whose HTTP sends are answered in-process (botocore ``before-send``).

Everything up to the wire runs as in Lambda: parameter validation, serialisation,
endpoint resolution, SigV4 signing, retry handlers, response parsing. Only the socket is
replaced, by a canned JSON answer per operation. Every send is counted, so the benchmark
can state how many AWS round trips each request cost.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from botocore.awsrequest import AWSResponse

REGION = "us-east-1"
_JSON_10 = "application/x-amz-json-1.0"  # DynamoDB
_JSON_11 = "application/x-amz-json-1.1"  # KMS


class _Body:
    """What ``AWSResponse.content`` reads (``raw.stream()``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class AwsStub:
    """A ``ClientFactory`` for ``tokenbroker.bootstrap.build`` plus a send counter.

    ``sends`` counts ``"service:Operation"`` keys; operations without a canned answer
    get ``{}`` (and are still counted, so an unexpected call shows up in the numbers).
    """

    def __init__(self, *, kms_key_id: str, kms_public_key_der: bytes) -> None:
        # the production Lambda client configuration (retry mode, timeouts, validation)
        from tokenbroker.adapters.aws import LAMBDA_CONFIG

        self._config = LAMBDA_CONFIG
        self.sends: Counter[str] = Counter()
        self._answers: dict[str, tuple[bytes, str]] = {
            "dynamodb:TransactWriteItems": (b"{}", _JSON_10),
            "dynamodb:PutItem": (b"{}", _JSON_10),
            "kms:GetPublicKey": (
                json.dumps(
                    {
                        "KeyId": kms_key_id,
                        "PublicKey": base64.b64encode(kms_public_key_der).decode("ascii"),
                        "CustomerMasterKeySpec": "ECC_NIST_P256",
                        "KeySpec": "ECC_NIST_P256",
                        "KeyUsage": "SIGN_VERIFY",
                        "SigningAlgorithms": ["ECDSA_SHA_256"],
                    }
                ).encode(),
                _JSON_11,
            ),
        }

    def __call__(self, service: str) -> Any:
        """A ``ClientFactory``: real clients (production Config), fake credentials."""
        import boto3  # here: the cold-init children attach to botocore-only clients

        client = boto3.client(
            service,
            region_name=REGION,
            aws_access_key_id="x",
            aws_secret_access_key="x",  # noqa: S106
            config=self._config,
        )
        self.attach(client)
        return client

    def attach(self, client: Any) -> Any:
        """Answer this (already built) client's sends in-process."""
        client.meta.events.register("before-send", self._send)
        return client

    @property
    def total(self) -> int:
        return sum(self.sends.values())

    def _send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse:
        # event_name is "before-send.<service-id>.<Operation>"
        _, service, operation = event_name.split(".", 2)
        key = f"{service}:{operation}"
        self.sends[key] += 1
        if key == "dynamodb:BatchGetItem":
            body, content_type = _everything_active(request.body), _JSON_10
        else:
            body, content_type = self._answers.get(key, (b"{}", _JSON_10))
        headers = {
            "x-amzn-requestid": "00000000-0000-4000-8000-000000000000",
            "content-type": content_type,
            "content-length": str(len(body)),
        }
        return AWSResponse(request.url, 200, headers, _Body(body))


#: the benchmark client's scopes (its tokens carry model:demo:invoke)
CLIENT_SCOPES = ("model:demo:invoke", "profile")


def _everything_active(request_body: bytes | str) -> bytes:
    """BatchGetItem answer for the liveness read: every requested client and device is
    active (and each device belongs to the requested client)."""
    wanted = json.loads(request_body)["RequestItems"]
    client_id = next(
        key["client_id"]["S"]
        for spec in wanted.values()
        for key in spec["Keys"]
        if "client_id" in key
    )
    responses = {
        table: [
            {
                **key,
                "status": {"S": "active"},
                "client_id": {"S": client_id},
                # the client's scopes now (the edge requires token scope within them)
                "scopes": {"SS": list(CLIENT_SCOPES)},
            }
            for key in spec["Keys"]
        ]
        for table, spec in wanted.items()
    }
    return json.dumps({"Responses": responses, "UnprocessedKeys": {}}).encode()
