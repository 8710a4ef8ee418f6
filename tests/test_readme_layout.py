"""README's Layout section matches the tree: every path it names exists, and every
package and top-level folder of the project is named."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_paths() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_every_path_the_layout_names_exists() -> None:
    paths = _layout_paths()
    assert paths
    for path in paths:
        assert (ROOT / path.replace("<name>", "token_endpoint")).exists(), path


def test_every_package_and_top_level_folder_is_in_the_layout() -> None:
    named = {p.rstrip("/") for p in _layout_paths()}
    packages = {
        str(init.parent.relative_to(ROOT))
        for init in (ROOT / "src" / "tokenbroker").glob("**/__init__.py")
        if init.parent != ROOT / "src" / "tokenbroker"
    }
    assert packages <= named, sorted(packages - named)
    tops = {d.name for d in ROOT.iterdir() if d.is_dir() and not d.name.startswith(".")}
    tops -= {"src", "build", "dist"} | {d for d in tops if d.endswith(".egg-info")}
    assert tops <= {p.split("/")[0] for p in named}, sorted(tops - named)
