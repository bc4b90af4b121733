"""Real load runs: Locust against a real gateway in front of a real Triton serving the models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.local_triton import LocalTriton

pytestmark = [pytest.mark.triton, pytest.mark.slow]

GENEROUS = "{p50_ms: 2000, p95_ms: 5000, p99_ms: 10000, max_error_ratio: 0, min_throughput_rps: 1}"


def modelgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelgate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.gateway
def test_generous_budgets_pass_and_write_the_reports(gateway_url: str, tmp_path: Path) -> None:
    sla = write(
        tmp_path / "sla.yaml",
        f"""
load: {{users: 4, spawn_rate: 4, warmup_s: 4, duration_s: 16}}
targets:
  - {{model: digits_cnn, weight: 2, top_k: 3, budget: {GENEROUS}}}
  - {{model: langid_transformer, top_k: 3, budget: {GENEROUS}}}
  - {{model: vowels_gru, top_k: 3, budget: {GENEROUS}}}
""",
    )
    out = tmp_path / "report"
    result = modelgate("loadtest", "--sla", str(sla), "--host", gateway_url, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RESULT: PASS" in result.stdout

    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["passed"] is True
    assert len(verdict["lines"]) == 15
    assert all(line["measured"] is not None for line in verdict["lines"])
    # The gateway's own view of the same window: every model went through Triton.
    triton_stages = {s["model"]: s["count"] for s in verdict["stages"] if s["stage"] == "triton"}
    assert set(triton_stages) == {"digits_cnn", "langid_transformer", "vowels_gru"}
    assert all(count > 0 for count in triton_stages.values())

    stats = (out / "locust_stats.csv").read_text()
    for name in ("rest digits_cnn", "rest langid_transformer", "rest vowels_gru"):
        assert name in stats
    assert "<html" in (out / "locust_report.html").read_text().lower()
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "Result: **PASS**" in (out / "report.md").read_text()


@pytest.mark.gateway
def test_an_impossible_budget_fails_and_names_the_line(gateway_url: str, tmp_path: Path) -> None:
    sla = write(
        tmp_path / "sla.yaml",
        """
load: {users: 2, spawn_rate: 2, warmup_s: 1, duration_s: 6}
targets:
  - {model: digits_cnn, budget: {p99_ms: 0.01, max_error_ratio: 0}}
""",
    )
    out = tmp_path / "report"
    result = modelgate("loadtest", "--sla", str(sla), "--host", gateway_url, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL rest digits_cnn: p99 <= 0.01 ms (measured" in result.stdout
    assert "FAIL rest digits_cnn: error ratio" not in result.stdout
    assert "RESULT: FAIL" in result.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    assert [(line["metric"], line["passed"]) for line in verdict["lines"]] == [
        ("p99", False),
        ("error ratio", True),
    ]


@pytest.mark.gateway
def test_capacity_reports_the_best_step_within_budget(gateway_url: str, tmp_path: Path) -> None:
    sla = write(
        tmp_path / "sla.yaml",
        f"""
load: {{users: 1, spawn_rate: 1, duration_s: 1}}
capacity: {{user_steps: [1, 2], step_s: 5, settle_s: 1}}
targets:
  - {{model: digits_cnn, budget: {GENEROUS}}}
  - {{model: vowels_gru, budget: {GENEROUS}}}
""",
    )
    out = tmp_path / "capacity"
    result = modelgate(
        "capacity", "--sla", str(sla), "--host", gateway_url, "--out", str(out),
        "--target", "digits_cnn",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((out / "capacity.json").read_text())
    assert list(found) == ["rest digits_cnn"]
    digits = found["rest digits_cnn"]
    assert [step["users"] for step in digits["steps"]] == [1, 2]
    assert digits["capacity_ok_rps"] == max(step["ok_rps"] for step in digits["steps"])
    assert digits["capacity_ok_rps"] > 0
    assert "no breach up to the last step" in digits["limited_by"]
    assert (out / "capacity.png").read_bytes()[:4] == b"\x89PNG"


def test_oip_users_against_tritons_own_v2_endpoints(
    triton_server: LocalTriton, model_repository: Path, tmp_path: Path
) -> None:
    """Triton speaks the Open Inference Protocol itself: the v2 HTTP and gRPC users run on it."""
    sla = write(
        tmp_path / "sla.yaml",
        f"""
host: http://{triton_server.http_url}
grpc_url: {triton_server.grpc_url}
model_repository: {model_repository}
load: {{users: 3, spawn_rate: 3, warmup_s: 1, duration_s: 6}}
targets:
  - {{model: digits_cnn, protocol: v2_http, batch: 2, budget: {GENEROUS}}}
  - {{model: digits_cnn, protocol: v2_grpc, budget: {GENEROUS}}}
  - {{model: vowels_gru, protocol: v2_grpc, batch: 2, budget: {GENEROUS}}}
""",
    )
    out = tmp_path / "report"
    result = modelgate("loadtest", "--sla", str(sla), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    measured = {line["target"] for line in verdict["lines"] if line["measured"] is not None}
    assert measured == {"v2_http digits_cnn", "v2_grpc digits_cnn", "v2_grpc vowels_gru"}
    # Triton serves its metrics on another port: the run says so instead of failing.
    assert any("/metrics" in warning for warning in verdict["warnings"])
