"""`modelgate serve`: fails fast on bad settings; several workers serve and share one /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from service.local_triton import LocalTriton
from tests.gateway_process import start_gateway_process, worker_counters

ROOT = Path(__file__).resolve().parents[2]


def serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELGATE_MAX_QUEUE_SIZE": "-3"}, "max_queue_size"),
        ({"MODELGATE_TRITON_URL": "grpc://x:1"}, "triton_url"),
        ({"MODELGATE_MODEL_REPOSITORY": "/no/such/dir"}, "not a directory"),
    ],
)
def test_invalid_settings_stop_startup_with_the_reason(
    env: dict[str, str], message: str, tiny_repository: Path
) -> None:
    process = serve({"MODELGATE_MODEL_REPOSITORY": str(tiny_repository), **env})
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert message in output and "invalid settings" in output
    assert "Traceback" not in output


REST_PREDICTIONS = (
    "modelgate_requests_total",
    {
        "endpoint": "predict",
        "model": "langid_transformer",
        "protocol": "rest",
        "status_class": "2xx",
        "version": "1",
    },
)
MAX_REQUESTS = 200  # the kernel hands new connections to either worker; both soon get some


def predictions_served_by(worker: psutil.Process, scratch: Path) -> float:
    """The REST predictions one worker counted, read from its own multiprocess metrics file."""
    name, labels = REST_PREDICTIONS
    return worker_counters(worker, scratch).get_sample_value(name, labels) or 0.0


@pytest.mark.triton
@pytest.mark.gateway
def test_two_workers_serve_and_share_metrics(
    triton_server: LocalTriton, model_repository: Path, tmp_path: Path
) -> None:
    gateway = start_gateway_process(
        tmp_path / "gateway.log",
        {
            "model_repository": model_repository,
            "triton_url": triton_server.grpc_url,
            # each worker keeps its own drift window and refreshes its gauges on a timer
            "drift_min_items": 1,
            "drift_refresh_s": 0.2,
        },
        env={"PROMETHEUS_MULTIPROC_DIR": ""},  # let the command create a fresh one
        args=["--workers", "2"],
        ready_timeout_s=90,
    )
    url = gateway.url
    try:
        workers = gateway.workers()
        assert len(workers) == 2, workers
        assert len({w.environ()["PROMETHEUS_MULTIPROC_DIR"] for w in workers}) == 1
        # The directories the command made for its workers, which it removes when it exits.
        scratch = [
            Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]),
            Path(workers[0].environ()["MODELGATE_ADMIN_LOG"]).parent,
        ]
        assert all(d.is_dir() for d in scratch), scratch
        sent = 0
        served: dict[int, float] = {}
        with httpx.Client(base_url=url, timeout=30) as client:
            while sent < MAX_REQUESTS and not (len(served) == 2 and all(served.values())):
                response = client.post(
                    "/v1/models/langid_transformer/predict",
                    json={"inputs": "hej hur mår du"},
                    headers={"Connection": "close"},  # a new connection: either worker may take it
                )
                assert response.status_code == 200
                sent += 1
                served = {w.pid: predictions_served_by(w, tmp_path) for w in workers}
            metrics = client.get("/metrics").text
        assert all(served.values()), f"one worker served all {sent} requests: {served}"
        assert sum(served.values()) == sent
        # /metrics, answered by one worker, sums both workers' files.
        name, labels = REST_PREDICTIONS
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        assert f"{name}{{{label_text}}} {float(sent)}" in metrics
        # Drift gauges merge as the largest worker value: the busier worker's window fill.
        time.sleep(1.0)  # a few refresh periods
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        fill = 'modelgate_drift_window_items{model="langid_transformer",version="1"}'
        assert f"{fill} {max(served.values())}" in metrics
        assert 'modelgate_drift_psi{feature="tokens",model="langid_transformer"' in metrics
    finally:
        gateway.stop(grace_s=60)
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert not [d for d in scratch if d.exists()], scratch
