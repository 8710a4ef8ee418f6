"""The Lambda layer: exactly what the functions need, and every handler loads from it.

The dev venv has everything (moto pulls in aws_xray_sdk, the CLI brings click), so an
import that works here can still crash at load in Lambda. These tests build the layer
with the same Makefile ``sam build`` runs (src/Makefile, for the host platform instead
of the runtime's), then import every ``functions/*/app.py`` in a fresh interpreter that
sees only the standard library, the layer and the function's own directory: Lambda's
``/var/task`` + ``/opt/python``.

The pinned dependencies are installed once per requirements/Makefile content into the
gitignored ``build/`` area and reused (a few seconds only on the first run).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
REQUIREMENTS = SRC / "requirements.txt"
MAKEFILE = SRC / "Makefile"
HANDLERS = sorted((ROOT / "functions").glob("*/app.py"))
# The subpackages no function imports: the layer leaves them out.
EXCLUDED = ("cli", "local", "client")


def _pins(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement {line!r}"
            pins[name.strip().lower()] = version.strip()
    return pins


def _make(target: str, artifacts: Path, *extra: str) -> None:
    # The host's wheels (PIP_PLATFORM empty): the same pins, importable on this machine.
    subprocess.run(
        ["make", "--no-print-directory", "-f", str(MAKEFILE), target,
         f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}", "PIP_PLATFORM=", *extra],
        cwd=SRC,
        check=True,
        capture_output=True,
        timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="session")
def layer_deps() -> Path:
    """The pinned requirements alone, cached under build/ by content."""
    key = hashlib.sha256(
        REQUIREMENTS.read_bytes() + MAKEFILE.read_bytes() + sys.version.encode()
    ).hexdigest()[:16]
    cache = ROOT / "build" / "layer-deps" / key
    if not (cache / "done").exists():
        shutil.rmtree(cache, ignore_errors=True)
        _make("layer-deps", cache)
        (cache / "done").write_text("ok\n", encoding="utf-8")
    return cache / "python"


@pytest.fixture(scope="session")
def layer_package(tmp_path_factory: pytest.TempPathFactory, layer_deps: Path) -> Path:
    """The package's files exactly as the layer ships them, with the authorizers' cut
    botocore data (``layer-data``: from the layer's botocore, here in ``layer_deps``)."""
    artifacts = tmp_path_factory.mktemp("layer")
    _make("layer-package", artifacts)
    _make("layer-data", artifacts, f"LAYER_DEPS={layer_deps}")
    return artifacts / "python"


def test_the_layer_pins_exactly_the_runtime_dependencies_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert _pins(REQUIREMENTS.read_text(encoding="utf-8").splitlines()) == _pins(
        project["dependencies"]
    )


def test_the_layer_is_built_by_the_makefile_for_the_lambda_runtime() -> None:
    from tokenbroker.local.template import load_template

    resources = load_template(ROOT / "template.yaml").document()["Resources"]
    layer = resources["SharedLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"] == "src/"
    text = MAKEFILE.read_text(encoding="utf-8")
    assert "manylinux2014_aarch64" in text
    assert "--python-version 3.13" in text
    assert "--only-binary=:all:" in text
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_the_layer_ships_the_package_without_cli_local_stack_or_client_sdk(
    layer_package: Path,
) -> None:
    shipped = {p.name for p in (layer_package / "tokenbroker").iterdir() if p.is_dir()}
    assert shipped.isdisjoint(EXCLUDED)
    assert {"domain", "services", "adapters", "web"} <= shipped
    assert not list(layer_package.rglob("__pycache__"))


def _layer_python(script: str, task_root: Path, layer: tuple[Path, Path], **env: str) -> str:
    """stdout of ``script`` run as Lambda loads a function: the function's directory and
    the layer (package, dependencies) on the path, -S so no site-packages (neither the
    dev venv's nor the user's), only the stdlib; fails the test with its last error line."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=task_root,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": os.pathsep.join(map(str, (task_root, *layer))),
            "PYTHONDONTWRITEBYTECODE": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
    return result.stdout


_IMPORT = """
import json, sys
import app
assert callable(app.handler), "app.handler is not callable"
print(json.dumps(sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})))
"""


@pytest.mark.parametrize("handler", HANDLERS, ids=[h.parent.name for h in HANDLERS])
def test_every_handler_imports_from_the_layer_alone(
    handler: Path, layer_deps: Path, layer_package: Path, tmp_path: Path
) -> None:
    task_root = tmp_path / "task"
    shutil.copytree(handler.parent, task_root)
    stdout = _layer_python(
        _IMPORT,
        task_root,
        (layer_package, layer_deps),
        LAMBDA_TASK_ROOT=str(task_root),
        AWS_LAMBDA_FUNCTION_NAME=handler.parent.name,
    )
    stdlib = sysconfig.get_paths()["stdlib"]
    allowed = (str(task_root), str(layer_package), str(layer_deps), stdlib)
    loaded = [f for f in json.loads(stdout) if f]
    foreign = [f for f in loaded if not f.startswith(allowed)]
    assert foreign == [], "modules loaded from outside the layer"
    assert not any(re.search(r"tokenbroker/(cli|local|client)/", f) for f in loaded)


_COLD = """
import json, sys
import app
from tokenbroker import bootstrap
container = bootstrap.default()
ddb, kms = container.client("dynamodb"), container.client("kms")
print(json.dumps({
    "search_paths": [ddb._loader.search_paths, kms._loader.search_paths],
    "operations": sorted(ddb.meta.service_model.operation_names),
    "boto3": "boto3" in sys.modules,
}))
"""


@pytest.mark.parametrize("name", ["authorizer", "http_api_authorizer"])
def test_the_authorizers_build_their_clients_from_the_layers_cut_data_without_boto3(
    name: str, layer_deps: Path, layer_package: Path
) -> None:
    from tokenbroker.local.template import load_template

    data = layer_package / "tokenbroker" / "_botocore_data"
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    pins = _pins(REQUIREMENTS.read_text(encoding="utf-8").splitlines())
    assert manifest["botocore"] == pins["botocore"]  # cut from the layer's own botocore
    functions = load_template(ROOT / "template.yaml").document()["Resources"]
    function = {
        "authorizer": "AuthorizerFunction",
        "http_api_authorizer": "HttpApiAuthorizerFunction",
    }[name]
    variables = functions[function]["Properties"]["Environment"]["Variables"]
    assert variables["BOTOCORE_DATA"] == "edge"
    task_root = ROOT / "functions" / name
    loaded = json.loads(
        _layer_python(
            _COLD,
            task_root,
            (layer_package, layer_deps),
            AWS_ACCESS_KEY_ID="x",
            AWS_SECRET_ACCESS_KEY="x",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            BOTOCORE_DATA="edge",
        )
    )
    assert loaded["search_paths"] == [[str(data)], [str(data)]]
    # the cut: the gate's rules Query is in it (review), an operation no authorizer
    # calls (Scan) is not
    assert "Query" in loaded["operations"]
    assert "Scan" not in loaded["operations"]
    assert "PutItem" in loaded["operations"]
    assert loaded["boto3"] is False


_EDGE_COLD = """
import json, sys
import app
container = app.container()
ddb = container.client("dynamodb")
print(json.dumps({
    "search_paths": ddb._loader.search_paths,
    "operations": sorted(ddb.meta.service_model.operation_names),
}))
"""


def test_the_lambda_at_edge_bundle_builds_its_clients_from_its_own_cut_data(
    layer_deps: Path, tmp_path: Path
) -> None:
    """infra/edge.yaml's bundle (no layer: the package at the bundle's root) gets the
    same cut botocore data, by the same layer-data target, and its container reads it."""
    bundle = tmp_path / "bundle"
    _make("layer-package", tmp_path / "pkg")
    shutil.move(tmp_path / "pkg" / "python" / "tokenbroker", bundle / "tokenbroker")
    _make("layer-data", tmp_path, f"DATA_ROOT={bundle}", f"LAYER_DEPS={layer_deps}")
    data = bundle / "tokenbroker" / "_botocore_data"
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    assert (
        manifest["botocore"]
        == _pins(REQUIREMENTS.read_text(encoding="utf-8").splitlines())["botocore"]
    )
    shutil.copy(ROOT / "functions" / "edge_authorizer" / "app.py", bundle / "app.py")
    config = {"ISSUER": "https://broker.example", "AUDIENCE": "https://api.example"}
    (bundle / "config.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = json.loads(
        _layer_python(
            _EDGE_COLD,
            bundle,
            (layer_deps,),
            AWS_ACCESS_KEY_ID="x",
            AWS_SECRET_ACCESS_KEY="x",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
    )
    assert loaded["search_paths"] == [str(data)]
    assert "PutItem" in loaded["operations"]
    assert "Scan" not in loaded["operations"]
    # the recipe infra/edge.yaml's build runs calls the same target on the bundle root
    recipe = MAKEFILE.read_text(encoding="utf-8").split("build-EdgeAuthorizerFunction:")[-1]
    assert 'layer-data DATA_ROOT="$(ARTIFACTS_DIR)"' in recipe


@pytest.fixture(scope="module")
def sam_build() -> Path:
    built = os.environ.get("TOKENBROKER_SAM_BUILD")
    if not built:
        pytest.skip("TOKENBROKER_SAM_BUILD is not set: scripts/test runs `sam build` and sets it")
    return Path(built)


def test_sam_build_made_the_layer_for_python313_on_arm64_without_cli_local_or_sdk(
    sam_build: Path,
) -> None:
    python = sam_build / "SharedLayer" / "python"
    shipped = {p.name for p in (python / "tokenbroker").iterdir()}
    assert shipped.isdisjoint(EXCLUDED)
    binaries = [p.name for p in python.rglob("*.so")]
    assert binaries, "no compiled dependency in the layer"
    assert all("x86_64" not in name for name in binaries)
    assert any("cpython-313-aarch64" in name for name in binaries)  # cffi's backend
    assert "aws_xray_sdk" not in {p.name for p in python.iterdir()}
    # the authorizers' cut botocore data, from the layer's own botocore (make layer-data)
    manifest = json.loads((python / "tokenbroker" / "_botocore_data" / "manifest.json").read_text())
    assert (
        manifest["botocore"]
        == _pins(REQUIREMENTS.read_text(encoding="utf-8").splitlines())["botocore"]
    )
    for name in _pins(REQUIREMENTS.read_text(encoding="utf-8").splitlines()):
        assert list(python.glob(f"{name.replace('-', '_')}-*.dist-info")), name


def test_sam_build_copied_every_function_handler(sam_build: Path) -> None:
    for handler in HANDLERS:
        name = handler.parent.name
        if name == "edge_authorizer":  # infra/edge.yaml builds it (one bundle, no layer)
            continue
        built = [p for p in sam_build.glob("*/app.py") if p.read_bytes() == handler.read_bytes()]
        assert built, f"functions/{name}/app.py is in no built function"
