"""The import graph keeps its layers: the gateway needs no training or load-test code.

The serving image installs the base dependencies only (no torch, no dataset packages,
no Locust), so a module under service/ that imports training/ or loadtests/ breaks
it sooner or later. Imports inside functions count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file, as absolute dotted names."""
    found: set[str] = set()
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _arrows(source: str, target: str) -> list[str]:
    """`file -> module` for each import from package `source` into package `target`."""
    arrows = []
    for path in sorted((ROOT / source.replace(".", "/")).rglob("*.py")):
        for module in sorted(_imports(path)):
            if module == target or module.startswith(f"{target}."):
                arrows.append(f"{path.relative_to(ROOT)} -> {module}")
    return arrows


@pytest.mark.parametrize("target", ["training", "loadtests", "modelgate"])
def test_the_gateway_does_not_import(target: str) -> None:
    assert _arrows("service", target) == []


def test_load_tests_use_only_the_data_module_of_training() -> None:
    """The load-test image has the dataset packages but no torch: training.data needs none."""
    arrows = _arrows("loadtests", "training")
    assert [a for a in arrows if not a.split(" -> ")[1].startswith("training.data")] == []


TRANSPORT_ARROWS = [("service.rest", "service.oip"), ("service.oip", "service.rest")]


@pytest.mark.parametrize(("source", "target"), TRANSPORT_ARROWS)
def test_no_transport_imports_another(source: str, target: str) -> None:
    assert _arrows(source, target) == []


# Packages of the training, data and load-test extras: none is in the serving image.
NOT_IN_THE_SERVING_IMAGE = ("torch", "onnx", "sklearn", "aeon", "wordfreq", "locust", "matplotlib")


def test_the_gateway_and_the_command_line_import_without_training_packages() -> None:
    """Every gateway module and the `modelgate` command load with those packages missing."""
    modules = [_module_name(p) for p in sorted((ROOT / "service").rglob("*.py"))]
    script = f"""
import importlib, importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_THE_SERVING_IMAGE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, Absent())
for module in {modules!r} + ["modelgate.cli"]:
    importlib.import_module(module)
import typer.main
from modelgate.cli import app
print(sorted(typer.main.get_command(app).commands))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    commands = ["build", "profile", "show", "triton", "serve", "up", "loadtest", "capacity"]
    commands += ["verdict", "repository", "rollout"]
    assert done.stdout.split("\n")[0] == str(sorted(commands))
