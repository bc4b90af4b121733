"""A real gateway in front of the session's real Triton, for the load runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.local_triton import LocalTriton
from tests.gateway_process import start_gateway_process


@pytest.fixture(scope="module")
def gateway_url(
    triton_server: LocalTriton, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`modelgate serve` on a free port, talking gRPC to the session's Triton."""
    log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    settings = {"model_repository": model_repository, "triton_url": triton_server.grpc_url}
    with start_gateway_process(log_path, settings) as gateway:
        yield gateway.url
