"""Graceful restarts: SIGTERM to a gateway under keep-alive load drops no request.

One real gateway (`modelgate serve`, one worker process, then two) in front of the session's
real Triton, with a short drain window; 16 keep-alive HTTP clients and 16 stock tritonclient gRPC
clients send requests back to back while the gateway gets SIGTERM (see loadtests/restart_load.py).
The tests below read what every request got. A second scenario restarts one of two gateways behind a
balancer that follows their readiness, as a rolling update does.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient

from loadtests.restart_load import Backend, ReadinessBalancer, RestartRecord, sigterm_under_load
from service.local_triton import LocalTriton
from service.settings import Settings
from tests.gateway_process import GatewayProcess, start_gateway_process

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

DRAIN_S = 2.0
GRACE_S = Settings.model_fields["shutdown_grace_s"].default
CLIENTS = 16


def _start_gateway(
    triton: LocalTriton, repository: Path, log_path: Path, **settings: str
) -> GatewayProcess:
    return start_gateway_process(
        log_path, {"model_repository": repository, "triton_url": triton.grpc_url, **settings}
    )


def _readiness(url: str, grpc_address: str) -> dict[str, object]:
    """Readiness as each protocol reports it, each asked on a fresh connection."""
    client = grpcclient.InferenceServerClient(grpc_address)
    try:
        return {
            "readyz": httpx.get(f"{url}/readyz", timeout=10).status_code,
            "oip_http": httpx.get(f"{url}/v2/health/ready", timeout=10).status_code,
            "oip_grpc": client.is_server_ready(),
        }
    finally:
        client.close()


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-worker", "two-workers"])
def restart(
    triton_server: LocalTriton,
    model_repository: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[RestartRecord]:
    """SIGTERM to a gateway of one worker process, or to the supervisor of two."""
    gateway = _start_gateway(
        triton_server,
        model_repository,
        tmp_path_factory.mktemp("drain") / "gateway.log",
        workers=request.param,
        drain_s=str(DRAIN_S),
        # several connection-age GOAWAYs per gRPC client within the drain window
        grpc_max_connection_age_s="0.5",
    )
    url, grpc_address = gateway.url, gateway.grpc_address
    try:
        before = _readiness(url, grpc_address)
        record = sigterm_under_load(
            gateway.process,
            url,
            grpc_address,
            http_clients=CLIENTS,
            grpc_clients=CLIENTS,
            warmup_s=2.0,
            # fresh connections until well inside the window, clear of the instant it closes
            probe_for_s=DRAIN_S - 0.5,
            exit_timeout_s=DRAIN_S + GRACE_S,
            after_signal=lambda: _readiness(url, grpc_address),
        )
        record.after_signal["before"] = before
        record.after_signal["workers"] = request.param
        record.after_signal["log"] = gateway.log_path.read_text(errors="replace")[-3000:]
        yield record
    finally:
        gateway.kill()


def _window_ends(record: RestartRecord) -> float:
    return record.signalled + DRAIN_S


def test_readiness_turns_false_at_once(restart: RestartRecord) -> None:
    assert restart.after_signal["before"] == {"readyz": 200, "oip_http": 200, "oip_grpc": True}
    after = {k: restart.after_signal[k] for k in ("readyz", "oip_http", "oip_grpc")}
    assert after == {"readyz": 503, "oip_http": 400, "oip_grpc": False}
    probes = restart.of("probe")
    assert {a.status for a in probes if a.done < restart.signalled} == {"200"}
    assert {a.status for a in probes if a.sent >= restart.signalled} == {"503"}


@pytest.mark.parametrize("clients", ["http", "probe"])
def test_every_http_request_gets_an_answer(restart: RestartRecord, clients: str) -> None:
    failed = [a for a in restart.of(clients) if a.outcome == "failed"]
    assert failed == []
    answered_in_window = [
        a for a in restart.of(clients) if a.outcome == "ok" and a.sent >= restart.signalled
    ]
    assert answered_in_window, "nothing was served after SIGTERM"


def test_http_connections_close_with_connection_close(restart: RestartRecord) -> None:
    """Each client's last answer said `Connection: close`; its next connection was refused.

    Two workers share one listening socket, and their windows end moments apart: a client told
    to close by the first may reconnect to the second and be told again. No answer before the
    window's end says close."""
    for index in range(CLIENTS):
        attempts = restart.of(f"http-{index}")
        assert attempts[-1].outcome == "refused", attempts[-3:]
        assert attempts[-2].outcome == "ok" and attempts[-2].connection_close, attempts[-3:]
        early = [a for a in attempts[:-2] if a.connection_close]
        assert all(a.done >= _window_ends(restart) for a in early), early
        assert len(early) < int(str(restart.after_signal["workers"]))


@pytest.mark.parametrize("clients", ["http", "grpc"])
def test_new_connections_are_refused_only_after_the_drain_window(
    restart: RestartRecord, clients: str
) -> None:
    refused = [a for a in restart.of(clients) if a.outcome == "refused"]
    assert refused, "no connection was refused: the gateway never closed its listener"
    assert all(a.sent >= _window_ends(restart) for a in refused), refused[:3]


def test_probes_on_fresh_connections_are_answered_in_the_window(restart: RestartRecord) -> None:
    in_window = [
        a
        for a in restart.of("probe")
        if restart.signalled <= a.sent < _window_ends(restart) and a.outcome == "ok"
    ]
    assert len(in_window) > 1


def test_grpc_calls_sent_in_the_drain_window_all_succeed(restart: RestartRecord) -> None:
    in_window = [a for a in restart.of("grpc") if a.sent < _window_ends(restart)]
    assert [a for a in in_window if a.outcome != "ok"] == []
    assert any(a.sent >= restart.signalled for a in in_window)


def test_the_gateway_exits_zero_within_drain_and_grace(restart: RestartRecord) -> None:
    assert restart.exit_code == 0, restart.after_signal["log"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_signal_ends_the_drain_window(
    triton_server: LocalTriton, model_repository: Path, tmp_path: Path, workers: str
) -> None:
    """A drain window of 10 minutes, cut short by SIGINT after SIGTERM: the gateway exits (with
    two workers the supervisor passes the second signal on to them)."""
    gateway = _start_gateway(
        triton_server, model_repository, tmp_path / "gateway.log", drain_s="600", workers=workers
    )
    process = gateway.process
    try:
        process.send_signal(signal.SIGTERM)
        assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 503
        # still serving inside the window
        response = httpx.post(
            f"{gateway.url}/v1/models/langid_transformer/predict",
            json={"inputs": "hej"},
            timeout=10,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=GRACE_S + 30) == 0
    finally:
        gateway.kill()


# -- a rolling restart: two gateways behind a load balancer that follows their readiness -------


def _backend(address: str, url: str) -> Backend:
    host, _, port = address.rpartition(":")
    return Backend(host, int(port), f"{url}/readyz")


@pytest.fixture(scope="module")
def rolling_restart(
    triton_server: LocalTriton, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RestartRecord]:
    """SIGTERM to one of two gateways behind balancers (HTTP and gRPC), clients on the balancers."""
    logs = tmp_path_factory.mktemp("rolling")
    settings = {"drain_s": str(DRAIN_S), "grpc_max_connection_age_s": "0.5"}
    with ExitStack() as started:  # each gateway is killed at the end, even if the next fails
        stopping = _start_gateway(
            triton_server, model_repository, logs / "stopping.log", **settings
        )
        started.callback(stopping.kill)
        staying = _start_gateway(triton_server, model_repository, logs / "staying.log", **settings)
        started.callback(staying.kill)
        gateways = (stopping, staying)
        http = [_backend(gateway.address, gateway.url) for gateway in gateways]
        grpc = [_backend(gateway.grpc_address, gateway.url) for gateway in gateways]
        with ReadinessBalancer(http) as http_lb, ReadinessBalancer(grpc) as grpc_lb:
            record = sigterm_under_load(
                stopping.process,
                f"http://127.0.0.1:{http_lb.port}",
                f"127.0.0.1:{grpc_lb.port}",
                http_clients=CLIENTS,
                grpc_clients=CLIENTS,
                warmup_s=2.0,
                exit_timeout_s=DRAIN_S + GRACE_S,
                load_after_exit_s=1.0,
            )
        record.after_signal["connections"] = {
            "http": [b.connections for b in http],
            "grpc": [b.connections for b in grpc],
        }
        yield record


@pytest.mark.parametrize("clients", ["http", "grpc", "probe"])
def test_a_rolling_restart_fails_and_refuses_nothing(
    rolling_restart: RestartRecord, clients: str
) -> None:
    attempts = rolling_restart.of(clients)
    assert [a for a in attempts if a.outcome != "ok"] == []
    # the other gateway answered once the stopped one was gone
    assert any(a.sent > rolling_restart.exited for a in attempts)


def test_the_restarted_gateway_exits_zero(rolling_restart: RestartRecord) -> None:
    assert rolling_restart.exit_code == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_balancer_spread_connections_over_both_gateways(
    rolling_restart: RestartRecord, protocol: str
) -> None:
    connections = rolling_restart.after_signal["connections"]
    assert isinstance(connections, dict)
    stopping, staying = connections[protocol]
    assert stopping > 0 and staying > 0
