"""Graceful shutdown: on SIGTERM the gateway finishes queued and in-flight requests, then exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.cli import wait_for_gateway
from service.local_triton import LocalTriton, free_port
from tests.service.rest.payloads import PHRASES

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

ROOT = Path(__file__).resolve().parents[3]


def _inflight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("modelgate_inflight_requests "):
            return float(line.split()[1])
    raise AssertionError("no modelgate_inflight_requests gauge in /metrics")


def test_sigterm_drains_queued_requests(triton_server: LocalTriton, model_repository: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MODELGATE_MODEL_REPOSITORY": str(model_repository),
        "MODELGATE_TRITON_URL": triton_server.grpc_url,
        "MODELGATE_PORT": str(port),
        "MODELGATE_GRPC_PORT": str(free_port()),
        "MODELGATE_LOG_LEVEL": "warning",
        # hold batches open for a while so requests are still queued when SIGTERM arrives
        "MODELGATE_MAX_BATCH_DELAY_MS": "1500",
    }
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(url, process, timeout_s=60)
        phrases = list(PHRASES)

        def call(phrase: str) -> int:
            response = httpx.post(
                f"{url}/v1/models/langid_transformer/predict", json={"inputs": phrase}, timeout=30
            )
            return response.status_code

        with ThreadPoolExecutor(len(phrases)) as pool:
            futures = [pool.submit(call, p) for p in phrases]
            # SIGTERM only once every request is inside the gateway (held there by the
            # 1.5 s batch delay): a request still connecting when the listener closes is
            # refused, which is not what this tests.
            give_up = time.monotonic() + 10
            while _inflight(url) < len(phrases):
                assert time.monotonic() < give_up, "requests never all arrived"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            statuses = [f.result() for f in futures]
        assert statuses == [200] * len(phrases)
        # uvicorn re-raises the signal it handled once shutdown is complete
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
