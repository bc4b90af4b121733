"""Experiment tracking is a training concern: the gateway runs without MLflow (or torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_modules_import_neither_mlflow_nor_torch() -> None:
    # A fresh interpreter (this test process may already hold both) imports every gateway
    # module; the load-test tooling is left out (it patches sockets with gevent on import).
    probe = (
        "import importlib, pkgutil, sys, service\n"
        "names = [m.name for m in pkgutil.walk_packages(service.__path__, 'service.')]\n"
        "gateway = [n for n in names if not n.startswith('service.loadtest')]\n"
        "for name in gateway:\n"
        "    importlib.import_module(name)\n"
        "print(len(gateway), sorted(m for m in ('mlflow', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    count, heavy = result.stdout.strip().split(" ", 1)
    assert int(count) > 10  # the walk really found the gateway
    assert heavy == "[]"


def test_mlflow_is_a_train_extra_only() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("mlflow") for d in project["dependencies"])
    assert any(d.startswith("mlflow") for d in project["optional-dependencies"]["train"])
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("mlflow==") for line in constraints)
