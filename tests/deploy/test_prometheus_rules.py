"""Prometheus config and alert rules: promtool accepts them, the alerts fire on synthetic breaches
(promtool's rule unit tests), and the latency budgets are the SLA file's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_support import REPO_ROOT, require_tool

pytestmark = pytest.mark.prometheus

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("promtool", "run scripts/ensure-prometheus.sh")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT
    )


def test_promtool_check_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_breaches_and_stay_quiet_when_healthy() -> None:
    tests = Path(__file__).parent / "prometheus" / "alerts_test.yml"
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(a[5m])\n"
    )
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0


def test_latency_budgets_are_the_sla_files() -> None:
    """modelgate:sla_p99_budget_seconds holds each model's tightest p99 in loadtests/sla.yaml."""
    sla = yaml.safe_load((REPO_ROOT / "loadtests" / "sla.yaml").read_text())
    expected: dict[str, float] = {}
    for target in sla["targets"]:
        p99 = target["budget"].get("p99_ms")
        if p99 is not None:
            model = target["model"]
            expected[model] = min(expected.get(model, float("inf")), p99 / 1000.0)
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    budgets = {
        rule["labels"]["model"]: float(rule["expr"].removeprefix("vector(").removesuffix(")"))
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("record") == "modelgate:sla_p99_budget_seconds"
    }
    assert budgets == expected
