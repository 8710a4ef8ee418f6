"""The HTTP API and Lambda@Edge authorizers as the Lambda modules platform teams deploy:
the same core through the real handler functions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"fn_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def world(fixed_clock: FixedClock) -> dict[str, Any]:
    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = s.build_container(
        s.settings(), clock=fixed_clock, key_cache=issuer.key_cache(fixed_clock), usage=ledger
    )
    device = DeviceKey.generate("ES256")
    return {
        "issuer": issuer,
        "ledger": ledger,
        "container": container,
        "device": device,
        "now": int(fixed_clock()),
    }


def _token_and_proof(world: dict[str, Any], htu: str) -> tuple[str, str]:
    token = world["issuer"].token(world["now"], world["device"].jkt)
    return token, s.proof(world["device"], token, htu=htu, iat=world["now"])


def test_the_http_api_handler_authorizes_a_valid_request_and_refuses_its_replay(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "default", lambda: world["container"])
    app = _load("http_api_authorizer")
    token, proof = _token_and_proof(world, s.url_for(s.WHOAMI))
    event = s.http_api_event({"authorization": f"DPoP {token}", "dpop": proof})
    allowed = app.handler(event, s.LambdaContext())
    assert allowed["isAuthorized"] is True
    assert allowed["context"]["principal"] == s.PRINCIPAL
    assert app.handler(event, s.LambdaContext())["isAuthorized"] is False


def test_the_edge_handler_reads_its_bundled_configuration_and_fails_closed_without_it(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = _load("edge_authorizer")
    monkeypatch.setattr(app, "CONFIG", tmp_path / "config.json")  # not there: fail closed
    token, proof = _token_and_proof(world, f"https://{s.EDGE_HOST}{s.WHOAMI}")
    event = s.edge_event(s.dpop_headers(token, proof))
    assert app.handler(event, s.LambdaContext())["status"] == "401"

    config = {
        "AUDIENCE": s.AUDIENCE,
        "ISSUER": s.ISSUER,
        "ROUTE_SCOPES": json.dumps(dict(s.ROUTE_SCOPES)),
        "AWS_REGION": "us-east-1",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    app._loaded.cache_clear()
    assert dict(app.container().settings.route_scopes) == dict(s.ROUTE_SCOPES)
    monkeypatch.setattr(app, "_loaded", lambda: world["container"])
    event = s.edge_event(s.dpop_headers(token, proof))
    passed = app.handler(event, s.LambdaContext())
    assert "status" not in passed  # the request goes on to the origin
    assert passed["headers"]["x-tokenbroker-principal"][0]["value"] == s.PRINCIPAL
