"""`modelgate up --otlp-url` traces the gateway and its Triton into one OTLP/HTTP endpoint."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.local_triton import PROJECT_ROOT, free_port
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = [pytest.mark.triton, pytest.mark.gateway, pytest.mark.slow]

# `up` talks gRPC to Triton, which drops a few propagated contexts (test_tracing_e2e.py).
ATTEMPTS = 5


def both_services(spans: list[ReceivedSpan]) -> bool:
    return {"InferRequest", "postprocess"} <= {s.name for s in spans}


def test_up_with_otlp_url_traces_gateway_and_triton(
    receiver: OtlpReceiver, model_repository: Path
) -> None:
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "up", "-r", str(model_repository)]
    command += ["--port", str(port), "--grpc-port", str(free_port())]
    process = subprocess.Popen(
        [*command, "--otlp-url", receiver.http_endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OTEL_BSP_SCHEDULE_DELAY": "50"},
        cwd=PROJECT_ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    try:
        give_up = time.monotonic() + 120
        while not any("Press Ctrl-C" in line for line in output):
            assert time.monotonic() < give_up and process.poll() is None, "".join(output)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=1))
        assert any(f"OTLP/HTTP to {receiver.http_endpoint}" in line for line in output)

        for _attempt in range(ATTEMPTS):
            trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/models/langid_transformer/predict",
                json={"inputs": ["je voudrais un café"], "top_k": 1},
                headers={"traceparent": f"00-{trace_id}-{parent}-01"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            spans = receiver.wait_for(both_services, trace_id, timeout_s=5)
            if both_services(spans):
                break
        else:
            pytest.fail(f"no trace with Triton's spans in {ATTEMPTS} attempts: {spans}")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)

    services = {s.service for s in spans}
    assert services == {"modelgate", "triton"}
    (server,) = [s for s in spans if s.parent_span_id == parent]
    assert server.service == "modelgate"
    (call,) = [s for s in spans if s.name == "triton"]
    (request,) = [s for s in spans if s.name == "InferRequest"]
    assert request.parent_span_id == call.span_id and call.parent_span_id == server.span_id
    # the gateway exported OTLP/HTTP protobuf, Triton OTLP/HTTP JSON, to the same endpoint
    assert {"application/x-protobuf", "application/json"} <= set(receiver.content_types)
