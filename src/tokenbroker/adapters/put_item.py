"""The edge's one DynamoDB write per request, without botocore's per-call machinery.

``client.put_item`` spends ~0.6 ms of CPU per call on this machine (benchmarks/), over 3x
the two signature verifications the authorizer cannot avoid: the event system,
shape-driven validation and serialisation, endpoint rule resolution and response
parsing, all around one fixed-shape JSON request. :class:`LeanPutItem` sends the same
request with botocore's own pieces, taken from the client it stands in for:

- the body: the call's keyword arguments as JSON (they are DynamoDB JSON already, e.g.
  ``usage_item(record)``'s output, so their schema flows through unchanged);
- signing: AWS SigV4, written out for DynamoDB's one JSON request shape (POST ``/``,
  the operation in ``X-Amz-Target``; :meth:`LeanPutItem._call`) (botocore's ``SigV4Auth``
  spends ~0.2 ms in generic header handling; tests verify each signature with it), with
  credentials frozen per request from the client's provider chain, so rotated or
  refreshed credentials are used as ``put_item`` would use them;
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
replay and denies, failing closed. The usage ledger asks for the existing item on a
failed condition (``ReturnValuesOnConditionCheckFailure``) and so tells its own earlier
attempt (the very item it sent) from a replay (another request's item).

A 200 answer's body is not read (the broker asks for no return values), so botocore's
CRC32 re-check of it, which would retry, does not apply. Only what ``put_item`` sends is
supported: no streaming, no per-call endpoint (DynamoDB's account-id endpoints would need
the client's endpoint rules; the regional or ``AWS_ENDPOINT_URL`` endpoint is used).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from time import gmtime, strftime
from time import time as _wall_clock
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import botocore
from botocore.awsrequest import AWSPreparedRequest
from botocore.client import BaseClient
from botocore.endpoint import convert_to_response_dict
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.hooks import first_non_none_response
from botocore.parsers import ResponseParserFactory
from botocore.retries import quota, standard

OPERATION = "PutItem"
_TARGET_PREFIX = "DynamoDB_20120810."
_TARGET = _TARGET_PREFIX + OPERATION
_CONTENT_TYPE = "application/x-amz-json-1.0"
_USER_AGENT = f"tokenbroker-put-item botocore/{botocore.__version__}"
_SIGNED = "content-type;host;x-amz-date;x-amz-target"
_SIGNED_WITH_TOKEN = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
#: one encoder (json.dumps with arguments builds a new one per call)
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _host(url: str) -> str:
    """The Host header SigV4 signs: lower case, no default port (botocore.auth)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _max_attempts(client: BaseClient) -> int:
    """The client's total attempts, as botocore computes them from its Config."""
    retries = client.meta.config.retries or {}
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    if "max_attempts" in retries:
        return int(retries["max_attempts"]) + 1
    return int(standard.DEFAULT_MAX_ATTEMPTS)


class _Call(NamedTuple):
    """What every signed send of one operation repeats, spelled once per client: the
    fixed headers and the canonical request's text around its three variable parts
    (the date, the security token, the body's hash)."""

    operation: str
    #: ``before-send.dynamodb.<Operation>``: the event botocore.endpoint emits
    event: str
    model: Any  # botocore OperationModel (error shapes, retry conditions)
    #: X-Amz-Target, Content-Type, User-Agent (copied per attempt)
    headers: dict[str, str]
    #: ``POST\n/\n\ncontent-type:..\nhost:..\nx-amz-date:`` (the date follows)
    head: str
    #: after the date, without a token: ``\nx-amz-target:..\n\n<signed>\n``
    tail: str
    #: the same with a token (the token goes before it)
    tail_token: str


def _invocation_id() -> str:
    """A random (version 4) UUID as text, like botocore's ``str(uuid.uuid4())`` for the
    ``amz-sdk-invocation-id`` header, at a third of its CPU (~1.5 us vs ~4.5 us
    building a ``uuid.UUID``; it is telemetry, unsigned, the same on every attempt)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: the RFC 4122 variant bits (10xx) set on a random hex digit
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


class LeanPutItem:
    """``client.put_item(**kwargs)`` for one DynamoDB client, at a fraction of its CPU.

    Build it with :meth:`for_client`. It reaches into two private attributes of the
    botocore client (its request signer and its HTTP session) so that credentials,
    connection pool and configuration stay exactly the client's; tests pin both.
    Sending is :meth:`_send` ``(call, body)`` for any DynamoDB JSON operation
    (:meth:`_call` spells one), so a second request shape signs and sends the same way.
    """

    #: the operation sent (a subclass sends another one: :class:`LeanTransactWriteItems`)
    operation_name = OPERATION

    def __init__(self, client: BaseClient) -> None:
        meta = client.meta
        # the request path is "/" (as botocore joins endpoint_url and the model's path)
        self._url = meta.endpoint_url.rstrip("/") + "/"
        self._region = meta.region_name
        self._credentials = client._request_signer._credentials
        self._host = _host(self._url)
        #: (secret, day, credential scope, HMAC-SHA256 keyed with the derived key)
        self._key: tuple[str, str, str, Any] | None = None
        #: (epoch second, its x-amz-date)
        self._stamp: tuple[int, str] = (-1, "")
        self._http = client._endpoint.http_session
        self._events = meta.events
        self._service_id = meta.service_model.service_id.hyphenize()
        self._signing_name = meta.service_model.signing_name or "dynamodb"
        self._service_model = meta.service_model
        self._parser = ResponseParserFactory().create_parser(meta.service_model.protocol)
        self._max_attempts = _max_attempts(client)
        #: the amz-sdk-request header of each attempt
        self._attempt_headers = [
            f"attempt={n}; max={self._max_attempts}" for n in range(1, self._max_attempts + 1)
        ]
        self._conditions = standard.StandardRetryConditions(max_attempts=self._max_attempts)
        detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
        self._backoff = standard.ExponentialBackoff(
            service_name="dynamodb", throttling_detector=detector
        )
        self._quota = standard.RetryQuotaChecker(quota.RetryQuota(), detector)
        self._exceptions = client.exceptions
        self._put = self._call(self.operation_name)

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
        return self.put_body(_encode(params).encode())

    def put_body(self, body: bytes) -> dict[str, Any]:
        """:meth:`put_item` for a request body already encoded (the usage ledger spells
        its one request shape as JSON directly: ``adapters/usage.py``)."""
        return self._send(self._put, body)

    def _call(self, operation: str) -> _Call:
        """The fixed parts of every request of ``operation`` (a DynamoDB JSON 1.0
        operation: POST to ``/``, the body is its input, its name in X-Amz-Target)."""
        target = _TARGET_PREFIX + operation
        head = f"POST\n/\n\ncontent-type:{_CONTENT_TYPE}\nhost:{self._host}\nx-amz-date:"
        return _Call(
            operation=operation,
            event=f"before-send.{self._service_id}.{operation}",
            model=self._service_model.operation_model(operation),
            headers={
                "X-Amz-Target": target,
                "Content-Type": _CONTENT_TYPE,
                "User-Agent": _USER_AGENT,
            },
            head=head,
            tail=f"\nx-amz-target:{target}\n\n{_SIGNED}\n",
            tail_token=f"\nx-amz-target:{target}\n\n{_SIGNED_WITH_TOKEN}\n",
        )

    def _send(self, call: _Call, body: bytes) -> dict[str, Any]:
        """Send ``body`` as ``call`` with botocore's standard retries; return the
        response metadata of a 2xx answer (its body unread), else raise the
        ClientError (or the BotoCoreError) ``client.<operation>`` would raise."""
        invocation = _invocation_id()
        request_context: dict[str, Any] = {}
        attempt = 1
        while True:
            http_response, error = self._attempt(call, body, invocation, attempt)
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
                            "HTTPHeaders": headers,  # as botocore: the response's own
                            "RetryAttempts": attempt - 1,
                        }
                    }
                parsed = self._parse_error(call, http_response)
            context = standard.RetryContext(
                attempt_number=attempt,
                operation_model=call.model,
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
            raise error_class(parsed, call.operation)

    def _attempt(
        self, call: _Call, body: bytes, invocation: str, attempt: int
    ) -> tuple[Any, Exception | None]:
        """One signed send: (response, None) or (None, the exception botocore's HTTP
        layer raised)."""
        headers = call.headers.copy()
        headers["Content-Length"] = str(len(body))
        headers["amz-sdk-invocation-id"] = invocation
        headers["amz-sdk-request"] = self._attempt_headers[attempt - 1]
        try:
            # per attempt, as botocore does: a fresh x-amz-date, current credentials
            self._sign(call, headers, body)
            prepared = AWSPreparedRequest("POST", self._url, headers, body, stream_output=False)
            # as botocore.endpoint: every handler is asked, the first answer is used
            answered = first_non_none_response(self._events.emit(call.event, request=prepared))
            return (answered if answered is not None else self._http.send(prepared)), None
        except HTTPClientError as exc:
            return None, exc
        except Exception as exc:  # noqa: BLE001 - as botocore.endpoint: retry decides
            return None, exc

    def _sign(self, call: _Call, headers: dict[str, str], body: bytes) -> None:
        """AWS Signature Version 4 (the algorithm of ``botocore.auth.SigV4Auth``, whose
        generic header handling costs ~0.2 ms; tests check every signature against
        botocore's). Signs content-type, host, x-amz-date, x-amz-security-token and
        x-amz-target; the SDK telemetry headers, like User-Agent, are left unsigned.

        The canonical request is ``call``'s fixed text around the date, the token and
        the body's hash; the date string is kept for its second and the keyed HMAC for
        its (secret, day): signing timed alone took ~7 us instead of ~14 us formatting
        and keying each time (the send as a whole: benchmarks/authorizer.py's glue line,
        "lean PutItem send")."""
        if self._credentials is None:
            raise NoCredentialsError()
        credentials = self._credentials.get_frozen_credentials()  # refreshes if due
        now = int(_wall_clock())
        stamp = self._stamp
        if stamp[0] != now:
            stamp = self._stamp = (now, strftime("%Y%m%dT%H%M%SZ", gmtime(now)))
        amz_date = stamp[1]
        headers["X-Amz-Date"] = amz_date
        token = credentials.token
        body_hash = hashlib.sha256(body).hexdigest()
        if token:
            headers["X-Amz-Security-Token"] = token
            signed = _SIGNED_WITH_TOKEN
            request = (
                f"{call.head}{amz_date}\nx-amz-security-token:{token}{call.tail_token}{body_hash}"
            )
        else:
            signed = _SIGNED
            request = f"{call.head}{amz_date}{call.tail}{body_hash}"
        scope, mac = self._signing_key(credentials.secret_key, amz_date[:8])
        mac = mac.copy()  # the keyed state, copied: no key derivation per request
        mac.update(
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(request.encode()).hexdigest()}".encode()
        )
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={mac.hexdigest()}"
        )

    def _signing_key(self, secret: str, day: str) -> tuple[str, Any]:
        """(credential scope, HMAC-SHA256 keyed with the derived key: four HMACs), kept
        while the secret and the day are the same."""
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == day:
            return cached[2], cached[3]
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, self._signing_name, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        scope = f"{day}/{self._region}/{self._signing_name}/aws4_request"
        mac = hmac.new(key, digestmod=hashlib.sha256)
        self._key = (secret, day, scope, mac)
        return scope, mac

    def _parse_error(self, call: _Call, http_response: Any) -> dict[str, Any]:
        """As botocore.endpoint: the generic error parse, then the modeled error's own
        members (e.g. ConditionalCheckFailedException's ``Item``)."""
        model = call.model
        response = convert_to_response_dict(http_response, model)
        parsed: dict[str, Any] = self._parser.parse(response, model.output_shape)
        code = parsed.get("Error", {}).get("Code")
        shape = model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:
            parsed.update(self._parser.parse(response, shape))
        return parsed


class LeanTransactWriteItems(LeanPutItem):
    """``client.transact_write_items(**kwargs)`` the lean way: the same signing, sending,
    retries and error parsing as :class:`LeanPutItem` (only the operation differs), for
    the edge's folded lease (the usage record and the quota counter in one round trip:
    adapters/usage.py::LeaseTransactions). Retrying is safe: the body carries a
    ``ClientRequestToken``, so DynamoDB runs a repeated identical transaction once; a
    cancelled one (``TransactionCanceledException``, not retried) wrote nothing. Its
    ``CancellationReasons`` (with each refused item's old values) are parsed as
    botocore parses them."""

    operation_name = "TransactWriteItems"

    @classmethod
    def body_sender(cls, client: Any) -> Callable[[bytes], dict[str, Any]] | None:
        """The lean sender of an encoded request body for a botocore DynamoDB client;
        None for anything else (a wrapper, a fake: it keeps ``transact_write_items``)."""
        if isinstance(client, BaseClient) and client.meta.service_model.service_name == (
            "dynamodb"
        ):
            return cls(client).put_body
        return None
