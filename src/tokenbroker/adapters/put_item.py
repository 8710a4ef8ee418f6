"""The edge's one DynamoDB write per request, without botocore's per-call machinery.

``client.put_item`` spends ~0.6 ms of CPU per call on this machine (benchmarks/), three
times the two signature verifications the authorizer cannot avoid: the event system,
shape-driven validation and serialisation, endpoint rule resolution and response
parsing, all around one fixed-shape JSON request. :class:`LeanPutItem` sends the same
request with botocore's own pieces, taken from the client it stands in for:

- the body: the call's keyword arguments as JSON (they are DynamoDB JSON already, e.g.
  ``usage_item(record)``'s output, so their schema flows through unchanged);
- signing: the client's ``RequestSigner.get_auth_instance`` (botocore's SigV4Auth, with
  credentials frozen per request from the client's provider chain, so rotated or
  refreshed credentials are picked up as they are by ``put_item``);
- sending: the client's ``before-send`` event first (as ``botocore.endpoint`` does:
  moto, the benchmark's stub and fault injection answer there), then the client's own
  ``URLLib3Session``: its kept-alive connection pool, timeouts, TCP keep-alive, proxies
  and CA bundle; ``AWS_ENDPOINT_URL`` works because the endpoint is the client's;
- retries: botocore's standard-mode conditions, back-off and retry quota
  (``botocore.retries.standard``) with the client's ``total_max_attempts``;
- errors: botocore's own JSON response parser, raising the same ``ClientError`` (and
  letting the same ``BotoCoreError`` s through) as ``put_item``, so the caller's error
  mapping is unchanged.

Why retrying is safe: every call is a conditional put (``attribute_not_exists`` on the
key). A retry after a lost response cannot write a second record; at worst it finds the
first attempt's record and fails with ConditionalCheckFailed, which the edge treats as a
replay and denies, failing closed.

Only calls ``put_item`` can make are supported: no streaming, no custom endpoint per call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import botocore
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.endpoint import convert_to_response_dict
from botocore.exceptions import ClientError, HTTPClientError
from botocore.hooks import first_non_none_response
from botocore.parsers import ResponseParserFactory
from botocore.retries import quota, standard

OPERATION = "PutItem"
_TARGET = "DynamoDB_20120810.PutItem"
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = f"tokenbroker-put-item botocore/{botocore.__version__}"


def _max_attempts(client: BaseClient) -> int:
    """The client's total attempts, as botocore computes them from its Config."""
    retries = client.meta.config.retries or {}
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    if "max_attempts" in retries:
        return int(retries["max_attempts"]) + 1
    return int(standard.DEFAULT_MAX_ATTEMPTS)


class LeanPutItem:
    """``client.put_item(**kwargs)`` for one DynamoDB client, at a fraction of its CPU.

    Build it with :meth:`for_client`. It reaches into two private attributes of the
    botocore client (its request signer and its HTTP session) so that credentials,
    connection pool and configuration stay exactly the client's; tests pin both.
    """

    def __init__(self, client: BaseClient) -> None:
        meta = client.meta
        # the request path is "/" (as botocore joins endpoint_url and the model's path)
        self._url = meta.endpoint_url.rstrip("/") + "/"
        self._region = meta.region_name
        self._signer = client._request_signer
        self._http = client._endpoint.http_session
        self._events = meta.events
        self._event = f"before-send.{meta.service_model.service_id.hyphenize()}.{OPERATION}"
        self._signing_name = meta.service_model.signing_name or "dynamodb"
        self._operation = meta.service_model.operation_model(OPERATION)
        self._parser = ResponseParserFactory().create_parser(meta.service_model.protocol)
        self._max_attempts = _max_attempts(client)
        self._conditions = standard.StandardRetryConditions(max_attempts=self._max_attempts)
        detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
        self._backoff = standard.ExponentialBackoff(
            service_name="dynamodb", throttling_detector=detector
        )
        self._quota = standard.RetryQuotaChecker(quota.RetryQuota(), detector)
        self._exceptions = client.exceptions

    @classmethod
    def for_client(cls, client: Any) -> Callable[..., dict[str, Any]]:
        """The lean ``put_item`` for a botocore client; anything else (a wrapper, a
        fake) keeps its own ``put_item``."""
        if isinstance(client, BaseClient) and client.meta.service_model.service_name == (
            "dynamodb"
        ):
            return cls(client).put_item
        return client.put_item  # type: ignore[no-any-return]

    def put_item(self, **params: Any) -> dict[str, Any]:
        """Send one PutItem; return the response metadata (the body is not parsed:
        the broker asks for no return values). Raises ClientError / BotoCoreError."""
        body = json.dumps(params, separators=(",", ":")).encode()
        invocation = str(uuid.uuid4())
        request_context: dict[str, Any] = {}
        attempt = 1
        while True:
            http_response, error = self._attempt(body, invocation, attempt)
            parsed: dict[str, Any] | None = None
            if http_response is not None:
                if http_response.status_code < 300:
                    # botocore's after-call hook: a success refills the retry quota
                    self._quota.release_retry_quota(request_context, http_response)
                    headers = http_response.headers
                    return {
                        "ResponseMetadata": {
                            "RequestId": headers.get("x-amzn-requestid", ""),
                            "HTTPStatusCode": http_response.status_code,
                            "HTTPHeaders": dict(headers),
                            "RetryAttempts": attempt - 1,
                        }
                    }
                parsed = self._parse_error(http_response)
            context = standard.RetryContext(
                attempt_number=attempt,
                operation_model=self._operation,
                parsed_response=parsed,
                http_response=http_response,
                caught_exception=error,
                request_context=request_context,
            )
            if self._conditions.is_retryable(context) and self._quota.acquire_retry_quota(context):
                time.sleep(self._backoff.delay_amount(context))
                attempt += 1
                continue
            if error is not None:
                raise error
            assert parsed is not None
            parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempt - 1
            code = str(parsed.get("Error", {}).get("Code", ""))
            error_class: type[ClientError] = self._exceptions.from_code(code)  # as botocore
            raise error_class(parsed, OPERATION)

    def _attempt(self, body: bytes, invocation: str, attempt: int) -> tuple[Any, Exception | None]:
        """One signed send: (response, None) or (None, the exception botocore's HTTP
        layer raised)."""
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={
                "X-Amz-Target": _TARGET,
                "Content-Type": _CONTENT_TYPE,
                "User-Agent": _USER_AGENT,
                "amz-sdk-invocation-id": invocation,
                "amz-sdk-request": f"attempt={attempt}; max={self._max_attempts}",
            },
        )
        # per attempt, as botocore does: a fresh x-amz-date, current credentials
        self._signer.get_auth_instance(self._signing_name, self._region).add_auth(request)
        prepared = request.prepare()
        try:
            # as botocore.endpoint: every handler is asked, the first answer is used
            answered = first_non_none_response(self._events.emit(self._event, request=prepared))
            return (answered if answered is not None else self._http.send(prepared)), None
        except HTTPClientError as exc:
            return None, exc
        except Exception as exc:  # noqa: BLE001 - as botocore.endpoint: retry decides
            return None, exc

    def _parse_error(self, http_response: Any) -> dict[str, Any]:
        response = convert_to_response_dict(http_response, self._operation)
        parsed: dict[str, Any] = self._parser.parse(response, self._operation.output_shape)
        return parsed
