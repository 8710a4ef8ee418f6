"""Every ledger writer is handed the deployment's hot window (issue 9), read from the
code: each call that builds a usage item passes a window, and the composition root gives
every adapter that writes the usage table ``settings.usage_hot_window_days``. (The
behaviour per writer, on moto: tests/lifecycle/test_hot_window_ttl.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.local.template import load_template
from tokenbroker.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src" / "tokenbroker"
#: the functions that build a usage item, and the position of their window argument
BUILDERS = {"to_item": 1, "usage_item": 1, "item_values": 1, "usage_item_json": 1, "ledger_put": 2}
#: adapters that only read the usage table (no item is written through them)
READERS = {"HotIndex", "HotLedgerHashes"}


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]


def _passes_window(call: ast.Call, position: int) -> bool:
    return len(call.args) > position or any(k.arg == "hot_window_days" for k in call.keywords)


def test_every_usage_item_built_in_the_code_is_given_a_hot_window() -> None:
    missing = [
        f"{path.relative_to(SRC)}:{call.lineno} {_name(call)}"
        for path in sorted(SRC.rglob("*.py"))
        for call in _calls(path)
        if _name(call) in BUILDERS and not _passes_window(call, BUILDERS[_name(call)])
    ]
    assert missing == []


def test_the_composition_root_hands_every_usage_writer_the_deployments_window() -> None:
    missing = []
    for call in _calls(SRC / "bootstrap.py"):
        keywords = {k.arg: k.value for k in call.keywords}
        writes_usage = "usage_table" in keywords or (
            _name(call) == "DynamoKeyEvents" and len(call.args) > 1
        )
        if not writes_usage or _name(call) in READERS:
            continue
        window = keywords.get("hot_window_days")
        if not (isinstance(window, ast.Attribute) and window.attr == "usage_hot_window_days"):
            missing.append(f"bootstrap.py:{call.lineno} {_name(call)}")
    assert missing == []


def test_the_default_window_is_the_templates_and_the_settings() -> None:
    default = load_template().parameters_defaults()["HotWindowDays"]
    assert int(default) == HOT_WINDOW_DAYS == Settings().usage_hot_window_days


def test_every_function_that_knows_the_usage_table_knows_the_hot_window() -> None:
    functions = load_template().resources("AWS::Serverless::Function")
    lacking = [
        name
        for name, props in functions.items()
        if "USAGE_TABLE" in (variables := props.get("Environment", {}).get("Variables", {}))
        and variables.get("USAGE_HOT_WINDOW_DAYS") != {"Ref": "HotWindowDays"}
    ]
    assert lacking == []
