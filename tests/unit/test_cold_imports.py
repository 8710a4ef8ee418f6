"""The authorizers' cold path imports no boto3 and builds its clients from the cut
botocore data (issue 13: cold init).

Each test runs a fresh interpreter configured as template.yaml configures the function
(benchmarks/authorizer.py's environment, ``BOTOCORE_DATA`` a copy cut from this venv's
botocore): it imports ``functions/<name>/app.py``, calls ``bootstrap.default()``, answers
the clients' sends in-process (botocore ``before-send``) and serves one allowed request
through the handler, then reports what it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks import authorizer as bench

from tokenbroker.adapters.aws_models import EDGE_OPERATIONS

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import importlib.util, json, os, sys, time
APP, KIND = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("app_under_test", APP)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
from tokenbroker import bootstrap
container = bootstrap.default()
ddb, kms = container.client("dynamodb"), container.client("kms")
from benchmarks import authorizer as bench  # imports no boto3 (asserted below)
keys = bench.Keys.generate()
stub = bench.AwsStub(kms_key_id=bench.KEY_ARN, kms_public_key_der=keys.spki_der)
stub.attach(ddb)
stub.attach(kms)
item = bench.make_item(keys, "cold-", now=int(time.time()), with_request=False)
event = json.loads(item.event_json)
if KIND == "http":  # the same request as an HTTP API payload 2.0 event
    rest = event
    event = {
        "version": "2.0", "type": "REQUEST",
        "routeArn": rest["methodArn"], "routeKey": f"{bench.METHOD} {bench.ROUTE}",
        "rawPath": rest["requestContext"]["path"], "rawQueryString": "",
        "headers": {k.lower(): v for k, v in rest["headers"].items()},
        "pathParameters": {}, "stageVariables": {},
        "requestContext": {
            "accountId": bench.ACCOUNT, "apiId": bench.API_ID, "stage": bench.STAGE,
            "domainName": bench.DOMAIN, "requestId": rest["requestContext"]["requestId"],
            "routeKey": f"{bench.METHOD} {bench.ROUTE}",
            "http": {"method": bench.METHOD, "path": rest["requestContext"]["path"],
                     "sourceIp": bench.SOURCE_IP, "userAgent": bench.USER_AGENT},
        },
    }
answer = module.handler(event, item.context)
print(json.dumps({
    "answer": answer,
    "sends": dict(stub.sends),
    "boto3": sorted(m for m in sys.modules if m == "boto3" or m.startswith("boto3.")),
    "search_paths": {"dynamodb": ddb._loader.search_paths, "kms": kms._loader.search_paths},
    "operations": {"dynamodb": sorted(ddb.meta.service_model.operation_names),
                   "kms": sorted(kms.meta.service_model.operation_names)},
    "adapters": sorted(m for m in sys.modules if m.startswith("tokenbroker.adapters.")),
}))
"""


def serve_cold(app: str, kind: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(ROOT / "functions" / app / "app.py"), kind],
        cwd=ROOT,
        env=bench.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module", params=[("authorizer", "rest"), ("http_api_authorizer", "http")])
def cold(request: pytest.FixtureRequest) -> dict[str, Any]:
    app, kind = request.param
    return serve_cold(app, kind)


def _allowed(answer: dict[str, Any]) -> bool:
    if "isAuthorized" in answer:
        return answer["isAuthorized"] is True
    return bool(answer["policyDocument"]["Statement"][0]["Effect"] == "Allow")


def test_the_cold_request_is_allowed_with_its_usual_round_trips(cold: dict[str, Any]) -> None:
    assert _allowed(cold["answer"]), cold["answer"]
    assert cold["sends"] == bench.COLD_SENDS


def test_the_authorizers_cold_path_never_imports_boto3(cold: dict[str, Any]) -> None:
    assert cold["boto3"] == []


def test_the_authorizers_clients_read_only_the_cut_data(cold: dict[str, Any]) -> None:
    data = bench.botocore_data()
    assert cold["search_paths"] == {"dynamodb": [data], "kms": [data]}
    for service in ("dynamodb", "kms"):
        expected = set(EDGE_OPERATIONS[service])
        if service == "dynamodb":
            expected.add("DescribeEndpoints")  # its endpoint-discovery operation
        assert set(cold["operations"][service]) == expected
