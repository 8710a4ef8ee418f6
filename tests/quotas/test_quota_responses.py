"""A spent quota at each edge shape, and the SDK's report_usage input checks (no AWS)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenbroker.domain.errors import InvalidRequest
from tokenbroker.domain.quotas import QuotaExceeded
from tokenbroker.services.quotas import check_units
from tokenbroker.web import edge
from tokenbroker.web.quota_responses import quota_refusal, quota_response
from tokenbroker.web.usage_report import authorizer_context, report_usage

SPENT = QuotaExceeded("requests_per_minute", 17)
ARN = "arn:aws:execute-api:eu-west-1:1:api/prod/POST/v1/models/llama3:8b/invoke"


def test_the_rest_answer_allows_with_a_grantless_context() -> None:
    answer = quota_response(ARN, SPENT)
    assert answer["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [ARN]}
    ]
    assert answer["context"] == {
        "quota_exceeded": "quota_exceeded:requests_per_minute",
        "retry_after": "17",
    }


def test_the_http_api_answer_allows_with_the_same_context() -> None:
    answer = edge.http_api_response(edge.Outcome(None, SPENT))
    assert answer["isAuthorized"] is True
    assert answer["context"]["retry_after"] == "17"
    assert "principal" not in answer["context"]


def test_cloudfront_answers_429_with_retry_after_itself() -> None:
    answer = edge.edge_response({"headers": {}}, edge.Outcome(None, SPENT))
    assert answer["status"] == "429"
    assert answer["headers"]["retry-after"] == [{"key": "Retry-After", "value": "17"}]
    assert json.loads(answer["body"])["reason"] == "quota_exceeded:requests_per_minute"


@pytest.mark.parametrize(
    ("context", "retry_after"),
    [
        ({"quota_exceeded": "quota_exceeded:units_per_day", "retry_after": "3600"}, "3600"),
        ({"quota_exceeded": "quota_exceeded:units_per_day", "retry_after": "1; rm"}, "60"),
    ],
)
def test_the_protected_function_refusal(context: dict[str, str], retry_after: str) -> None:
    refusal = quota_refusal(context)
    assert refusal is not None
    assert refusal["statusCode"] == 429
    assert refusal["headers"]["Retry-After"] == retry_after


def test_the_refusal_reads_an_http_api_context_too() -> None:
    refusal = quota_refusal({"lambda": {"quota_exceeded": "x", "retry_after": "5"}})
    assert refusal is not None
    assert refusal["headers"]["Retry-After"] == "5"


def test_no_refusal_for_a_grant() -> None:
    assert quota_refusal({"principal": "p", "usage_id": "u"}) is None
    assert quota_refusal(None) is None


def test_report_usage_reads_the_authorizer_context_and_checks_units_before_any_aws() -> None:
    """(A grant without a quota records its units event too: tests/quotas/
    test_quota_store.py::test_a_grant_without_a_quota_still_records_its_units_event.)"""
    event: dict[str, Any] = {"requestContext": {"authorizer": {"usage_id": "u1"}}}
    assert authorizer_context(event) == {"usage_id": "u1"}
    with pytest.raises(InvalidRequest):
        authorizer_context({"requestContext": {}})
    with pytest.raises(InvalidRequest):
        report_usage(event, units=-1)


@pytest.mark.parametrize("units", [-1, 10**9 + 1, True, 1.5, "3"])
def test_units_must_be_a_bounded_integer(units: Any) -> None:
    with pytest.raises(InvalidRequest, match="units"):
        check_units(units)
