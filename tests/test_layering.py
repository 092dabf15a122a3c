"""The import direction of DESIGN §2, checked by parsing every module with ``ast``.

Subpackages are named by their place in ``pruneguard``: ``pruneguard.registry.errors`` counts
as ``registry``. A bare ``import registry`` is another distribution's package, never ours.
"""

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


def _name(module: str) -> str:
    """``pruneguard.registry.errors`` -> ``registry``; ``torch.nn`` -> ``torch``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "pruneguard" and len(parts) > 1 else parts[0]


def _imports(tree: ast.AST, *, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(_name(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "pruneguard" and node.level == 0:
            found.update(alias.name for alias in node.names)  # from pruneguard import registry
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_name(node.module))
    return found


def _bare_imports(tree: ast.AST) -> set[str]:
    """Our subpackages imported under their folder names (``from registry import x``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & {*PACKAGES, "pruneguard_demo", "pruneguard_cli"}


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


def test_every_import_names_the_pruneguard_package() -> None:
    sources = [ROOT / "pruneguard", ROOT / "tests", ROOT / "bench", *(ROOT / p for p in PACKAGES)]
    for path in sorted({p.resolve() for d in sources for p in d.rglob("*.py")}):
        bare = _bare_imports(ast.parse(path.read_text()))
        assert not bare, f"{path.relative_to(ROOT)} imports {bare}: write pruneguard.{min(bare)}"


def test_checker_sees_a_violation() -> None:
    tree = ast.parse("def f():\n    import pruneguard.deploy.service\n")
    assert _imports(tree, top_level_only=False) == {"deploy"}
    tree = ast.parse("from pruneguard import agent, registry\n")
    assert _imports(tree, top_level_only=False) == {"agent", "registry"}
    assert _bare_imports(ast.parse("from registry.errors import ConfigError\n")) == {"registry"}
