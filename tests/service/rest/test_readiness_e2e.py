"""Readiness follows Triton: 503 with the reason while it is down, 200 again when it is back."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from service.local_triton import LocalTriton
from tests.service.rest.conftest import GatewayFactory

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def wait_for_status(url: str, status: int, timeout_s: float = 30) -> httpx.Response:
    give_up = time.monotonic() + timeout_s
    while True:
        response = httpx.get(url, timeout=10)
        if response.status_code == status or time.monotonic() > give_up:
            return response
        time.sleep(0.2)


def test_readiness_flips_with_triton(
    start_gateway: GatewayFactory, model_repository: Path, tmp_path: Path
) -> None:
    # A one-model repository keeps this private Triton quick to (re)start.
    repository = tmp_path / "repo"
    shutil.copytree(model_repository / "vowels_gru", repository / "vowels_gru")
    triton = LocalTriton(repository)
    triton.start()
    try:
        gateway = start_gateway(model_repository=repository, triton_url=triton.grpc_url)
        assert httpx.get(f"{gateway.url}/readyz").json()["ready"] is True
        body = {"inputs": [[0.1] * 12] * 10}
        predict = f"{gateway.url}/v1/models/vowels_gru/predict"
        assert httpx.post(predict, json=body).status_code == 200

        triton.stop()
        down = httpx.get(f"{gateway.url}/readyz")
        assert down.status_code == 503
        assert down.json()["ready"] is False and "unreachable" in down.json()["reason"]
        failed = httpx.post(predict, json=body, timeout=30)
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "upstream"
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # alive, just not ready
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert f'modelgate_triton_up{{endpoint="{triton.grpc_url}"}} 0.0' in metrics

        triton = LocalTriton(repository, triton.http_port, triton.grpc_port, triton.metrics_port)
        triton.start()
        back = wait_for_status(f"{gateway.url}/readyz", 200)
        assert back.status_code == 200, back.text
        assert httpx.post(predict, json=body, timeout=30).status_code == 200
    finally:
        triton.stop()
