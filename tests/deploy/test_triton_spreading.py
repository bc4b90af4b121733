"""Client-side spreading over several Triton replicas, with real servers.

In Kubernetes the gateway is given every Triton replica (MODELGATE_TRITON_URL=a,b,...) because one
long-lived gRPC connection to a Service would pin all its batches to a single pod. Here two real
Tritons stand in for two replicas: both must receive work, and a replica that is down must cost
no request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.local_triton import LocalTriton, free_port
from tests.deploy.deploy_support import start_gateway
from tests.deploy.deploy_traffic import send, valid_requests
from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.triton, pytest.mark.gateway, pytest.mark.slow]


def successful_inferences(server: LocalTriton) -> int:
    """Requests Triton answered successfully, summed over its models (its statistics API)."""
    stats = httpx.get(f"http://{server.http_url}/v2/models/stats", timeout=10.0).json()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in stats["model_stats"])


def triton_up(gateway: GatewayProcess) -> dict[str, float]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10.0).text
    return {
        sample.labels["endpoint"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "modelgate_triton_up"
        for sample in family.samples
    }


def test_batches_go_to_both_tritons(
    gateway_over_two_tritons: GatewayProcess,
    triton_server: LocalTriton,
    second_triton: LocalTriton,
    model_repository: Path,
) -> None:
    servers = (triton_server, second_triton)
    before = [successful_inferences(s) for s in servers]
    requests = valid_requests(model_repository, count=8)
    with httpx.Client(base_url=gateway_over_two_tritons.url) as client:
        statuses = [send(client, request).status_code for request in requests]
    assert statuses == [200] * len(requests)
    served = [successful_inferences(s) - b for s, b in zip(servers, before, strict=True)]
    # One request at a time: every batch holds one request, and batches alternate between replicas.
    assert sum(served) == len(requests), served
    assert min(served) >= len(requests) // 4, f"uneven spreading: {served}"


@pytest.fixture
def dead_replica() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def gateway_with_a_dead_replica(
    dead_replica: str, triton_server: LocalTriton, model_repository: Path, tmp_path: Path
) -> Iterator[GatewayProcess]:
    with start_gateway(
        model_repository, [dead_replica, triton_server.grpc_url], tmp_path
    ) as gateway:
        yield gateway


def test_a_replica_that_is_down_costs_no_request(
    gateway_with_a_dead_replica: GatewayProcess,
    dead_replica: str,
    triton_server: LocalTriton,
    model_repository: Path,
) -> None:
    gateway = gateway_with_a_dead_replica
    dead, live = dead_replica, triton_server.grpc_url
    before = successful_inferences(triton_server)
    requests = valid_requests(model_repository, count=6)
    with httpx.Client(base_url=gateway.url) as client:
        statuses = [send(client, request).status_code for request in requests]
        readiness = client.get("/readyz").json()
    assert statuses == [200] * len(requests)
    assert successful_inferences(triton_server) - before >= len(requests)
    assert readiness["endpoints"] == {dead: False, live: True}
    assert triton_up(gateway) == {dead: 0.0, live: 1.0}
