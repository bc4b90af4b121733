"""A real gateway in front of the session's real Triton, for the load runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import wait_for_gateway
from service.local_triton import LocalTriton, free_port


@pytest.fixture(scope="module")
def gateway_url(
    triton_server: LocalTriton, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`modelgate serve` on a free port, talking gRPC to the session's Triton."""
    port = free_port()
    env = {
        **os.environ,
        "MODELGATE_MODEL_REPOSITORY": str(model_repository),
        "MODELGATE_TRITON_URL": triton_server.grpc_url,
        "MODELGATE_HOST": "127.0.0.1",
        "MODELGATE_PORT": str(port),
        "MODELGATE_GRPC_PORT": str(free_port()),
    }
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"], env=env, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_gateway(url, process, timeout_s=60)
    except RuntimeError as exc:
        process.kill()
        process.wait()
        pytest.fail(f"gateway did not start: {exc}\n{log.read_text()[-2000:]}", pytrace=False)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
