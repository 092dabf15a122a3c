"""The import direction of DESIGN §2, checked by parsing every module with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "registry", "pruning", "deploy")
ALLOWED = {
    "registry": set(),
    "pruning": {"registry"},
    "deploy": {"registry"},
    "agent": {"registry"},
}
HEAVY = {"torch", "evidently", "bentoml", "transformers", "onnxruntime", "torch_pruning", "pandas"}


def _imports(tree: ast.AST, *, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package: str) -> None:
    forbidden = set(PACKAGES) - ALLOWED[package] - {package}
    for path in _modules(package):
        used = _imports(ast.parse(path.read_text()), top_level_only=False)
        assert not used & forbidden, f"{path.relative_to(ROOT)} imports {used & forbidden}"


@pytest.mark.parametrize("package", PACKAGES)
def test_cli_modules_import_nothing_heavy_at_top_level(package: str) -> None:
    cli = ROOT / package / "cli.py"
    if not cli.exists():
        pytest.skip(f"{package} has no cli.py yet")
    used = _imports(ast.parse(cli.read_text()), top_level_only=True)
    assert not used & HEAVY, f"{package}/cli.py imports {used & HEAVY} at module level"


def test_checker_sees_a_violation() -> None:
    tree = ast.parse("def f():\n    import deploy.service\n")
    assert _imports(tree, top_level_only=False) == {"deploy"}
