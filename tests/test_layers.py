"""The layers of aecore/ARCHITECTURE.md: a module imports only from its own layer or lower ones, nothing
in `aecore` imports streamlit, and the app does not reach for the command line or the zoo build."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {   # lowest first, as in aecore/ARCHITECTURE.md
    "base": {"__init__", "errors", "config", "atomic", "paths", "device", "noise", "pca", "viz"},
    "data": {"data"},
    "models": {"models"},
    "training": {"train", "checkpoint", "distributed"},
    "results": {"evaluate", "maps", "measures", "store", "pipeline"},
    "lab": {"lab"},
    "tools": {"cli", "zoo", "zoo_table", "__main__"},
}
RANK = {name: rank for rank, names in enumerate(LAYERS.values()) for name in names}
NOT_FOR_THE_APP = {"cli", "zoo", "__main__"}


def _part(module: str) -> str | None:
    """The layer key of an aecore module ('aecore.data.mnist' -> 'data'); None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aecore" else None


def _imports(file: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, aecore's `from aecore import x` spelled aecore.x."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "aecore":
                found += [(node.lineno, f"aecore.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _where(file: Path) -> str:
    return file.relative_to(ROOT).as_posix()


def test_every_aecore_module_has_a_layer():
    unplaced = {_part(".".join(f.relative_to(ROOT).with_suffix("").parts)) for f in (ROOT / "aecore").rglob("*.py")}
    assert unplaced - {None} - set(RANK) == set(), "add the new module to LAYERS and aecore/ARCHITECTURE.md"


def test_a_module_imports_only_its_own_layer_or_lower_ones():
    wrong = []
    for file in sorted((ROOT / "aecore").rglob("*.py")):
        own = _part(".".join(file.relative_to(ROOT).with_suffix("").parts))
        if own is None:
            continue
        for line, module in _imports(file):
            if module.split(".")[0] == "streamlit":
                wrong.append(f"{_where(file)}:{line} imports streamlit")
            other = _part(module)
            if other is not None and other in RANK and RANK[other] > RANK[own]:
                wrong.append(f"{_where(file)}:{line} ({own}) imports {module} ({other}, a higher layer)")
    assert wrong == []


def test_the_app_does_not_import_the_command_line_or_the_zoo_build():
    wrong = [f"{_where(file)}:{line} imports {module}"
             for file in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
             for line, module in _imports(file) if _part(module) in NOT_FOR_THE_APP]
    assert wrong == []


@pytest.mark.parametrize("source, module", [
    ("from aecore.lab import jobs\n", "aecore.lab"),
    ("from aecore import cli\n", "aecore.cli"),
    ("def f():\n    import streamlit as st\n", "streamlit"),
])
def test_the_scan_sees_every_spelling_of_an_import(tmp_path, source, module):
    """The checks above are only as good as `_imports`: it must see each spelling, inside functions too."""
    file = tmp_path / "m.py"
    file.write_text(source)
    assert [found for _, found in _imports(file)] == [module]
