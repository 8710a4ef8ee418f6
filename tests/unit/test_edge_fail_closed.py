"""Whatever goes wrong inside the authorizer, the answer is a Deny."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.services.authorization import ResourceRequest
from tokenbroker.web import edge


class Broken:
    """A container whose authorization service has a bug."""

    @property
    def authorization(self) -> Any:
        raise RuntimeError("a bug with request data: DPoP eyJ...")


def _itself(outcome: edge.Outcome) -> edge.Outcome:
    return outcome


REQUEST = ResourceRequest(
    authorization=("DPoP x",),
    dpop=("y",),
    method="GET",
    url="https://a/v1/whoami",
    route="/v1/whoami",
)


def test_an_unexpected_exception_is_a_deny_not_a_crash(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # a unique service name: Powertools keeps one logger (and its stdout handler) per name
    logger = Logger(service=f"t-{id(capsys)}")
    outcome = edge.authorize(Broken, REQUEST, "https://a", logger, Metrics(namespace="t"), _itself)
    assert outcome.grant is None
    assert isinstance(outcome.error, TemporarilyUnavailable)
    logged = capsys.readouterr()
    assert "RuntimeError" in logged.out
    captured = " ".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "eyJ" not in logged.out + logged.err + captured  # the message is not logged


def test_a_config_failure_in_the_composition_root_is_a_deny() -> None:
    def no_settings() -> Any:
        raise TemporarilyUnavailable("USAGE_TABLE is not configured")

    outcome = edge.authorize(
        no_settings, REQUEST, "https://a", Logger(service="t"), Metrics(namespace="t"), _itself
    )
    assert outcome.grant is None
