"""Graceful shutdown: on SIGTERM the gateway finishes queued and in-flight requests, then exits."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service.local_triton import LocalTriton
from tests.gateway_process import start_gateway_process
from tests.service.rest.payloads import PHRASES

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def _inflight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("modelgate_inflight_requests "):
            return float(line.split()[1])
    raise AssertionError("no modelgate_inflight_requests gauge in /metrics")


def test_sigterm_drains_queued_requests(
    triton_server: LocalTriton, model_repository: Path, tmp_path: Path
) -> None:
    gateway = start_gateway_process(
        tmp_path / "gateway.log",
        {
            "model_repository": model_repository,
            "triton_url": triton_server.grpc_url,
            # hold batches open for a while so requests are still queued when SIGTERM arrives
            "max_batch_delay_ms": 1500,
        },
    )
    process, url = gateway.process, gateway.url
    try:
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
        gateway.kill()
