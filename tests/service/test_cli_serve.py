"""`modelgate serve`: fails fast on bad settings; several workers share one /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.cli import wait_for_gateway
from service.local_triton import LocalTriton, free_port

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


@pytest.mark.triton
@pytest.mark.gateway
def test_two_workers_share_metrics(triton_server: LocalTriton, model_repository: Path) -> None:
    port = free_port()
    process = serve(
        {
            "MODELGATE_MODEL_REPOSITORY": str(model_repository),
            "MODELGATE_TRITON_URL": triton_server.grpc_url,
            "MODELGATE_LOG_LEVEL": "warning",
            "PROMETHEUS_MULTIPROC_DIR": "",  # let the command create a fresh one
            "MODELGATE_GRPC_PORT": str(free_port()),
        },
        "--port",
        str(port),
        "--workers",
        "2",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(url, process, timeout_s=90)  # type: ignore[arg-type]
        sent = 12
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(sent):  # new connections, so both workers take some
                response = client.post(
                    "/v1/models/langid_transformer/predict",
                    json={"inputs": "hej hur mår du"},
                    headers={"Connection": "close"},
                )
                assert response.status_code == 200
            metrics = client.get("/metrics").text
        line = (
            'modelgate_requests_total{endpoint="predict",model="langid_transformer",'
            'protocol="rest",status_class="2xx"}'
        )
        assert f"{line} {float(sent)}" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
