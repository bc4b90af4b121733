"""Tracing tests: a real OTLP receiver, a real Triton exporting its spans to it, and real
gateways (the REST area's fixture) exporting theirs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.local_triton import LocalTriton, LocalTritonError
from tests.otlp_receiver import OtlpReceiver
from tests.service.rest.conftest import onnx_reference  # noqa: F401 - shared fixture

# Triton exports every 5 s by default; the tests wait for its spans, so export sooner.
TRITON_EXPORT_DELAY_MS = 50


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """OTLP/gRPC and OTLP/HTTP on free ports, collecting every export request."""
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_triton(model_repository: Path, receiver: OtlpReceiver) -> Iterator[LocalTriton]:
    """The pip-shipped Triton with OpenTelemetry tracing on (as `modelgate triton --otlp-url`),
    exporting to the receiver's OTLP/HTTP endpoint."""
    server = LocalTriton(
        model_repository,
        trace_otlp_url=receiver.http_endpoint,
        extra_args=[f"--trace-config=opentelemetry,bsp_schedule_delay={TRITON_EXPORT_DELAY_MS}"],
    )
    try:
        server.start()
    except LocalTritonError as exc:
        pytest.fail(f"cannot start a traced Triton: {exc}", pytrace=False)
    yield server
    server.stop()
