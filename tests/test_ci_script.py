"""scripts/test's parallel set-up and check lanes: a failure anywhere stops the run with a
non-zero exit and the failing log, before pytest. Run against fake venvs (shell scripts
that log their arguments), so nothing is installed and the test takes a second."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test"

_TOOLS = {
    ".venv/bin/python": "",
    ".venv/bin/ruff": "",
    ".venv/bin/mypy": "",
    ".venv/bin/cfn-lint": "",
    ".venv-sam/bin/sam": 'if [ "$1" = --version ]; then echo "SAM CLI, version 1.170.0"; fi',
    ".venv-checkov/bin/checkov": 'if [ "$1" = --version ]; then echo "3.3.30"; fi',
}


def _fake_repo(tmp_path: Path, failing: str | None = None) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "test")
    for relative, body in _TOOLS.items():
        tool = tmp_path / relative
        tool.parent.mkdir(parents=True, exist_ok=True)
        fail = "exit 3" if relative == failing else "exit 0"
        name = Path(relative).name
        tool.write_text(
            f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\n{body}\necho "{name} says hello"\n{fail}\n'
        )
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _run(repo: Path, **env: str) -> tuple[int, str, list[str]]:
    calls = repo / "calls.log"
    calls.touch()
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "test")],
        env={**os.environ, "CALLS": str(calls), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, calls.read_text().splitlines()


def test_with_every_step_passing_the_run_reaches_pytest(tmp_path: Path) -> None:
    code, out, calls = _run(_fake_repo(tmp_path))
    assert code == 0, out
    assert any(c.startswith("python -m pytest") for c in calls)
    # the lanes' logs are printed in the steps' order
    steps = [line.split("   [")[0] for line in out.splitlines() if line.startswith("==> ")]
    assert [s.split()[1] for s in steps[1:]] == [
        "ruff",
        "mypy",
        "cfn-lint",
        "sam",
        "checkov",
        "sam",
        "pytest",
    ]


def test_a_tool_that_keeps_writing_after_its_version_is_not_reinstalled(tmp_path: Path) -> None:
    """The version check reads the whole answer: piped into ``grep -q`` (which leaves at
    its first match) a tool still writing got SIGPIPE, ``pipefail`` called the check
    failed and the run reinstalled the SAM CLI (seen in CI: a 60 s timeout here)."""
    repo = _fake_repo(tmp_path)
    sam = repo / ".venv-sam" / "bin" / "sam"
    sam.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "SAM CLI, version 1.170.0"; '
        "seq 1 200000; fi\n"
    )
    code, out, _ = _run(repo, PYTHON="false")  # an install would fail at once
    assert code == 0, out
    assert "installing aws-sam-cli" not in (repo / "build" / "setup" / "sam.log").read_text()


def test_a_failed_venv_setup_prints_its_log_and_exits_1_before_any_check(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    shutil.rmtree(repo / ".venv-checkov")  # so it must be installed, with a python that fails
    code, out, calls = _run(repo, PYTHON="false")
    assert code == 1
    assert "setup of the checkov venv FAILED" in out
    assert "installing checkov==3.3.30 into .venv-checkov" in out  # its log is shown
    assert not any(c.split()[0] in {"ruff", "mypy", "sam"} and "--version" not in c for c in calls)


@pytest.mark.parametrize(
    ("failing", "lane"), [(".venv/bin/mypy", "python"), (".venv-checkov/bin/checkov", "sam")]
)
def test_a_failed_check_is_named_and_stops_the_run_before_pytest(
    tmp_path: Path, failing: str, lane: str
) -> None:
    repo = _fake_repo(tmp_path, failing=failing)
    if failing.endswith("checkov"):  # its --version must still pass the skip check
        tool = repo / failing
        tool.write_text(tool.read_text().replace("exit 3", '[ "$1" = --version ] || exit 3'))
    code, out, calls = _run(repo)
    assert code == 1
    assert f"FAILED (exit 3): the last step above (build/checks/{lane}.log)" in out
    assert not any(c.startswith("python -m pytest") for c in calls)
