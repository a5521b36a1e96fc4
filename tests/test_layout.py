"""Dependencies point one way (docs/architecture.md): shared ← receiver, worker ← ops ← devkit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Which top-level packages each package may import (besides itself and third-party code).
ALLOWED = {
    "shared": set(),
    "receiver": {"shared"},
    "worker": {"shared"},
    "ops": {"shared", "receiver", "worker", "devkit"},  # devkit only for `rainbridge sandbox`
    "devkit": {"shared", "receiver", "worker", "ops"},
}
OURS = set(ALLOWED)


def imported_packages(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no {package}/ package?"
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imported_packages(path) & OURS
        if name != package and name not in ALLOWED[package]
    }
    assert not wrong, sorted(wrong)


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.deliver import AepClient\n    import receiver.app\n")
    assert imported_packages(module) == {"worker", "receiver"}
