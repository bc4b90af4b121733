"""Fixtures of the deployment tests: parsed deployment files and the local serving stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.local_triton import LocalTriton
from tests.conftest import running_triton
from tests.deploy.deploy_support import (
    REPO_ROOT,
    Dockerfile,
    parse_dockerfile,
    start_gateway,
)
from tests.gateway_process import GatewayProcess


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def compose_gpu() -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "docker-compose.gpu.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(REPO_ROOT / "Dockerfile")


# Package scope: the second server and the gateway stop when the deployment tests are done.
@pytest.fixture(scope="package")
def second_triton(triton_server: LocalTriton, model_repository: Path) -> Iterator[LocalTriton]:
    """Another real Triton on the same repository: two replicas for client-side spreading."""
    with running_triton(model_repository, "a second local Triton server") as server:
        yield server


@pytest.fixture(scope="package")
def gateway_over_two_tritons(
    triton_server: LocalTriton,
    second_triton: LocalTriton,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """A real gateway given both Tritons as MODELGATE_TRITON_URL=a,b."""
    with start_gateway(
        model_repository,
        [triton_server.grpc_url, second_triton.grpc_url],
        tmp_path_factory.mktemp("gateway"),
    ) as gateway:
        yield gateway
