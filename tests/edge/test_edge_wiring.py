"""The Lambda@Edge authorizer is wired by the composition root like every function:
``bootstrap.build`` with a client factory for the tables' home region."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from edge import _support as s
from tokenbroker import bootstrap

ROOT = Path(__file__).resolve().parents[2]


def test_regional_clients_are_built_in_the_region_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws = bootstrap.regional_clients("eu-west-1")
    assert aws("dynamodb").meta.region_name == "eu-west-1"
    assert bootstrap.lambda_clients("dynamodb").meta.region_name == "us-east-1"


def test_the_edge_container_uses_the_bundled_home_region(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # where the edge function runs
    app = _edge_app("fn_edge_wiring")
    config = {"AUDIENCE": s.AUDIENCE, "ISSUER": s.ISSUER, "AWS_REGION": "ap-southeast-2"}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setattr(app, "CONFIG", tmp_path / "config.json")
    container = app.container()
    assert isinstance(container, bootstrap.Container)
    assert container.client("dynamodb").meta.region_name == "ap-southeast-2"
    assert container.client("kms").meta.region_name == "ap-southeast-2"


def _edge_app(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "functions" / "edge_authorizer" / "app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def test_the_edge_reads_cut_botocore_data_when_its_config_or_bundle_has_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from botocore.loaders import Loader

    from tokenbroker.adapters.aws_models import generate

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    data = tmp_path / "data"
    generate(data)
    base = {"AUDIENCE": s.AUDIENCE, "ISSUER": s.ISSUER, "AWS_REGION": "eu-west-1"}
    seen = {}
    for case, extra in (("path", {"BOTOCORE_DATA": str(data)}), ("none", {})):
        app = _edge_app(f"fn_edge_data_{case}")
        config = tmp_path / f"{case}.json"
        config.write_text(json.dumps({**base, **extra}), encoding="utf-8")
        monkeypatch.setattr(app, "CONFIG", config)
        ddb = app.container().client("dynamodb")
        assert ddb.meta.region_name == "eu-west-1"
        seen[case] = ddb._loader.search_paths
    assert seen["path"] == [str(data)]
    # no bundled data here: botocore's own search path (its full models)
    assert seen["none"] == Loader().search_paths
