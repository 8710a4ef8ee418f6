"""Done means, on the local stack (``tokenbroker dev --trust-forwarded-for`` in process):
a device seen from 20 networks in a minute is flagged within one stream batch, under
``revoke`` it is refused at the edge within 5 s after that, and the alert is in
``tokenbroker alerts list --output json``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from tokenbroker import bootstrap
from tokenbroker.cli.main import cli
from tokenbroker.client import DeviceKey, DPoPAuth, InvalidGrantError, TokenSource
from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        "127.0.0.1", port=0, stack_name="tokenbroker-sharing-e2e", trust_forwarded_for=True
    ) as local:
        yield local


def test_a_relay_device_is_flagged_revoked_at_the_edge_and_listed(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    bootstrap.default.cache_clear()
    runner = CliRunner()
    admin = bootstrap.default().admin
    app = admin.create_client(name="relay-bot", scope="model:demo:invoke")
    key = DeviceKey.generate()
    admin.enroll_device(client_id=app.client.client_id, jkt=key.jkt)
    contained = runner.invoke(
        cli,
        ["clients", "set-containment", "--client-id", app.client.client_id, "--mode", "revoke"],
    )
    assert contained.exit_code == 0, contained.output

    issuer = stack.exports["TOKENBROKER_ISSUER"]
    source = TokenSource(
        issuer, client_id=app.client.client_id, client_secret=app.client_secret, key=key
    )
    session = requests.Session()
    session.auth = DPoPAuth(source)
    url = f"{issuer}/v1/models/demo/invoke"
    refused_at: float | None = None

    def call(network: int) -> bool:
        """True if allowed. A refusal at the edge (401) makes the SDK fetch a new
        token, which the token endpoint refuses for the revoked device."""
        try:
            answer = session.post(
                url,
                json={"prompt": "hi"},
                headers={"X-Forwarded-For": f"203.0.{network}.9"},
                timeout=10,
            )
        except InvalidGrantError:
            return False
        assert answer.status_code in (200, 401, 403), answer.text
        return answer.status_code == 200

    allowed = 0
    for i in range(20):  # strangers' prompts relayed from 20 networks in a few seconds
        sent_at = time.time()  # the edge decides when the request arrives, not when we read
        if not call(i):
            refused_at = sent_at
            break
        allowed += 1
    assert allowed >= 6  # over the limit of 5 networks before anything could act

    deadline = time.monotonic() + 30
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        listed = runner.invoke(cli, ["alerts", "list", "--output", "json"])
        assert listed.exit_code == 0, listed.output
        alerts = [a for a in json.loads(listed.stdout) if a["rule"] == "device_networks"]
        if alerts:
            break
        time.sleep(0.2)
    [alert] = alerts
    assert alert["jkt"] == key.jkt
    assert alert["client_id"] == app.client.client_id
    assert alert["containment"] == "revoke"
    assert alert["summary"].endswith("in 60s (limit 5)")
    assert int(alert["summary"].split()[0]) >= 6

    # revoked by the stream; the edge's liveness view refuses it within MAX_AGE of the
    # revocation (alert at_ms: when the stream function flagged it, just before)
    flagged_at = alert["at_ms"] / 1000
    while refused_at is None:
        sent_at = time.time()
        if not call(99):
            refused_at = sent_at
            break
        assert time.time() - flagged_at <= MAX_AGE + 2, "still allowed long after"
        time.sleep(0.2)
    devices = runner.invoke(
        cli, ["devices", "list", "--client-id", app.client.client_id, "--output", "json"]
    )
    [device] = json.loads(devices.stdout)
    assert device["status"] == "revoked"
    revoked_at = device["revoked_at_ms"] / 1000  # whole seconds (floor)
    print(
        f"refused {refused_at - flagged_at:.2f}s after the finding,"
        f" {refused_at - revoked_at:.2f}s after the revocation second; {allowed} allowed"
    )
    assert refused_at - revoked_at <= MAX_AGE + 1.0  # + the floor of revoked_at
