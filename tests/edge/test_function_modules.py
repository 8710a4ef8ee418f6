"""The HTTP API and Lambda@Edge authorizers as the Lambda modules platform teams deploy:
the same core through the real handler functions."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import time
import urllib.request
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
    # the replay is another request (API Gateway gives it its own request id)
    replay = copy.deepcopy(event)
    replay["requestContext"]["requestId"] = "replayed-request"
    assert app.handler(replay, s.LambdaContext())["isAuthorized"] is False


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


# ---------------------------------------------------------------- Lambda@Edge limits


def _edge_config(tmp_path: Path, **overrides: str) -> Path:
    config = {
        "AUDIENCE": s.AUDIENCE,
        "ISSUER": s.ISSUER,
        "ROUTE_SCOPES": json.dumps(dict(s.ROUTE_SCOPES)),
        "AWS_REGION": "us-east-1",
        "USAGE_TABLE": "usage",
        "CLIENTS_TABLE": "clients",
        "DEVICES_TABLE": "devices",
        "SIGNING_KEY_ID": "arn:aws:kms:us-east-1:123456789012:key/edge",
        **overrides,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in config.items() if v}))
    return path


def test_the_edge_without_issuer_in_its_config_denies_every_request_and_logs_it_once(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = _load("edge_authorizer")
    monkeypatch.setattr(app, "CONFIG", _edge_config(tmp_path, ISSUER=""))
    errors: list[tuple[str, Any]] = []
    monkeypatch.setattr(app.logger, "error", lambda msg, **kw: errors.append((msg, kw)))
    token, proof = _token_and_proof(world, f"https://{s.EDGE_HOST}{s.WHOAMI}")

    statuses = [
        app.handler(s.edge_event(s.dpop_headers(token, proof)), s.LambdaContext())["status"]
        for _ in range(3)
    ]

    assert statuses == ["401"] * 3
    assert errors == [
        ("edge configuration unavailable", {"extra": {"error_type": "ConfigurationError"}})
    ]
    assert world["ledger"].records == {}


def test_the_edge_never_takes_its_issuer_from_the_viewers_host(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, fixed_clock: FixedClock
) -> None:
    # a container whose settings have no issuer: the edge must not fall back on Host
    container = s.build_container(
        s.settings(issuer=""),
        clock=fixed_clock,
        key_cache=world["issuer"].key_cache(fixed_clock),
        usage=world["ledger"],
    )
    app = _load("edge_authorizer")
    monkeypatch.setattr(app, "_loaded", lambda: container)
    attacker_issuer = f"https://{s.EDGE_HOST}"
    token = world["issuer"].token(world["now"], world["device"].jkt, iss=attacker_issuer)
    proof = s.proof(
        world["device"], token, htu=f"https://{s.EDGE_HOST}{s.WHOAMI}", iat=world["now"]
    )

    response = app.handler(s.edge_event(s.dpop_headers(token, proof)), s.LambdaContext())

    assert response["status"] == "401"
    assert world["ledger"].records == {}


def test_the_edge_aws_clients_give_up_well_inside_cloudfronts_five_seconds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = _load("edge_authorizer")
    monkeypatch.setattr(app, "CONFIG", _edge_config(tmp_path))
    container = app.container()

    for service in ("dynamodb", "kms"):
        config = container.client(service).meta.config
        assert config.connect_timeout == app.CONNECT_TIMEOUT_S
        assert config.read_timeout == app.READ_TIMEOUT_S
        assert config.retries["total_max_attempts"] == 1
    assert app.EDGE_WORST_CASE_S <= 0.8 * app.VIEWER_REQUEST_LIMIT_S


def test_a_hung_dependency_at_the_edge_is_one_attempt_per_call_and_a_deny(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from botocore.exceptions import ReadTimeoutError

    app = _load("edge_authorizer")
    monkeypatch.setattr(app, "CONFIG", _edge_config(tmp_path))
    container = app.container()
    attempts: list[str] = []

    def hang(event_name: str, **kwargs: Any) -> None:
        attempts.append(event_name.rsplit(".", 1)[-1])
        raise ReadTimeoutError(endpoint_url="https://hung")

    for service in ("dynamodb", "kms"):
        container.client(service).meta.events.register("before-send", hang)
    fetches: list[tuple[str, float]] = []

    def hung_jwks(request: Any, timeout: float) -> Any:
        fetches.append((request.full_url, timeout))
        raise TimeoutError("timed out")

    # the signing keys are the broker's published JWKS (functions/edge_authorizer)
    monkeypatch.setattr(urllib.request, "urlopen", hung_jwks)
    now = int(time.time())  # the container _build makes runs on the wall clock
    token = world["issuer"].token(now, world["device"].jkt)
    proof = s.proof(world["device"], token, htu=f"https://{s.EDGE_HOST}{s.WHOAMI}", iat=now)

    response = app.handler(s.edge_event(s.dpop_headers(token, proof)), s.LambdaContext())

    assert response["status"] == "401"
    # the key fetch hangs: one attempt within the read timeout, then the Deny (no retry,
    # no AWS call after it)
    assert fetches == [(s.ISSUER + "/.well-known/jwks.json", app.READ_TIMEOUT_S)]
    assert attempts == []


def _emf_metric_names(output: str) -> list[list[str]]:
    """The metric names of each EMF line in ``output`` (other log lines skipped)."""
    names = []
    for line in output.splitlines():
        doc = json.loads(line) if line.startswith("{") else {}
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            names.append([m["Name"] for m in directive["Metrics"]])
    return names


@pytest.mark.parametrize("name", ["authorizer", "http_api_authorizer"])
def test_the_api_gateway_authorizers_write_an_emf_line_for_denials_only(
    name: str,
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bootstrap, "default", lambda: world["container"])
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")
    app = _load(name)
    token, proof = _token_and_proof(world, s.url_for(s.WHOAMI))
    headers = {"authorization": f"DPoP {token}", "dpop": proof}
    if name == "authorizer":
        event = s.rest_event(list(headers.items()))
    else:
        event = s.http_api_event(headers)
    capsys.readouterr()
    app.handler(copy.deepcopy(event), s.LambdaContext())  # allowed: its record is the count
    assert world["ledger"].decisions() == [("allow", "ok")]
    assert _emf_metric_names(capsys.readouterr().out) == []

    # the same proof in another request: a replay of an authentic token, denied, counted
    replay = copy.deepcopy(event)
    replay["requestContext"]["requestId"] = "replayed-request"
    refused = (
        pytest.raises(Exception, match="Unauthorized")
        if name == "authorizer"
        else contextlib.nullcontext()
    )
    with refused:
        app.handler(replay, s.LambdaContext())
    assert _emf_metric_names(capsys.readouterr().out) == [["RequestsDenied"]]


@pytest.mark.parametrize("name", ["authorizer", "http_api_authorizer"])
def test_the_api_gateway_authorizers_do_not_import_the_event_data_classes(name: str) -> None:
    """Their package imports every event class (~2.8 MiB resident, ~20 ms of cold
    init): the authorizers read the raw event (benchmarks/authorizer.py measures it)."""
    import subprocess
    import sys

    app = str(ROOT / "functions" / name / "app.py")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('app', {app!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(sorted(m for m in sys.modules if 'data_classes' in m))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[]"
