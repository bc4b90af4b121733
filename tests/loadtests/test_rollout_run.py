"""A load run through a rollout: the SLA's steps change routing while Locust runs, every step is
waited for until the gateway reports it, and the run passes only with zero failed requests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.model_contract import ROUTING_FILE
from tests.gateway_process import start_gateway_process
from tests.service.versioned_repository import MODEL, add_version, copy_model, set_version_policy

pytestmark = [pytest.mark.gateway, pytest.mark.slow]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    root = tmp_path_factory.mktemp("rollout-run") / "repository"
    model_dir = copy_model(model_repository, root)
    add_version(model_dir, 2, seed=2, labels=tuple(str(i) for i in range(10)))
    set_version_policy(model_dir, "latest { num_versions: 2 }")
    (model_dir / ROUTING_FILE).write_text(json.dumps({"weights": {"1": 100}}))
    return root


@pytest.fixture(scope="module")
def gateway_url(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`modelgate serve` with in-process ONNX Runtime on the two-version repository."""
    log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    settings = {"model_repository": repository, "backend": "embedded", "routing_reload_s": 0.2}
    with start_gateway_process(log_path, settings) as gateway:
        yield gateway.url


def test_promote_and_rollback_during_the_load_cost_no_request(
    gateway_url: str, repository: Path, tmp_path: Path
) -> None:
    sla = tmp_path / "rollout.yaml"
    sla.write_text(
        f"""
model_repository: {repository}
load: {{users: 4, spawn_rate: 4, warmup_s: 2, duration_s: 10}}
targets:
  - {{model: {MODEL}, top_k: 3, budget: {{max_error_ratio: 0, min_throughput_rps: 1}}}}
rollout:
  - {{at_s: 1, command: canary, model: {MODEL}, version: "2", percent: 30}}
  - {{at_s: 3, command: promote, model: {MODEL}}}
  - {{at_s: 6, command: rollback, model: {MODEL}}}
"""
    )
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "modelgate", "loadtest", "--sla", str(sla), "--host", gateway_url,
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Rollout steps during the load:" in result.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["passed"] is True
    steps = verdict["rollout"]
    assert [s["step"]["command"] for s in steps] == ["canary", "promote", "rollback"]
    assert all(s["error"] is None and s["in_force_after_s"] is not None for s in steps), steps
    assert steps[1]["routing"] == "v2 100 %; previous v1"
    assert steps[2]["routing"] == "v1 100 %"
    errors = [line for line in verdict["lines"] if line["metric"] == "error ratio"]
    assert errors and all(line["measured"] == 0 for line in errors), errors
    assert json.loads((repository / MODEL / ROUTING_FILE).read_text()) == {"weights": {"1": 100}}
