"""The layers depend one way: the engine runs artifacts without the exporter or the UI, and the
exporter converts checkpoints without the UI (the wizard drives it, not the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"engine": {"exporter", "ui"}, "exporter": {"ui"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports by absolute name, wherever the import sits."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_from_the_layers_above_it(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in modules
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert wrong == {}


def test_an_import_inside_a_function_is_seen(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from exporter.quantize import quantize_int8\n    import ui.app\n")
    assert imported_packages(module) == {"exporter", "ui"}
