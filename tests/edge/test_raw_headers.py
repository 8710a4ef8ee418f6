"""raw_headers (the edge's one pass over an event's headers) reads exactly what
raw_header_values reads, header by header."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbroker.web.events import raw_header_values, raw_headers, raw_request_url

NAMES = ("Authorization", "DPoP", "X-Forwarded-Proto", "Host")

EVENTS: list[dict[str, Any]] = [
    {  # REST: multiValueHeaders win, case-insensitive, repeated DPoP headers kept
        "multiValueHeaders": {
            "authorization": ["DPoP a"],
            "DPoP": ["p1"],
            "dpop": ["p2"],
            "HOST": ["h.example"],
            "x-forwarded-proto": ["https"],
            "Other": ["x"],
            "bad": "not a list",
        },
        "headers": {"Authorization": "ignored when multiValueHeaders has entries"},
    },
    {"headers": {"Authorization": "DPoP b", "dpop": "p", 7: "not a name", "Host": 3}},
    {"multiValueHeaders": {}, "headers": {"DPoP": "only single"}},
    {"multiValueHeaders": None, "headers": None},
    {},
]


@pytest.mark.parametrize("event", EVENTS)
def test_raw_headers_reads_what_raw_header_values_reads(event: dict[str, Any]) -> None:
    found = raw_headers(event, NAMES)
    assert found == {name.lower(): raw_header_values(event, name) for name in NAMES}


@pytest.mark.parametrize("event", EVENTS)
def test_the_request_url_is_the_same_with_or_without_the_one_pass(event: dict[str, Any]) -> None:
    event = {**event, "path": "/v1/x", "requestContext": {"path": "/prod/v1/x"}}
    assert raw_request_url(event, raw_headers(event, NAMES)) == raw_request_url(event)


def test_repeated_dpop_headers_are_all_seen_so_the_service_can_refuse_them() -> None:
    assert raw_headers(EVENTS[0], NAMES)["dpop"] == ["p1", "p2"]
