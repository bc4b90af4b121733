"""Several workers of one real gateway: an admin unload or load answered by one worker is made
in every worker, also in one started after it (service/workers.py `AdminLog`)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.gateway_process import GatewayProcess, start_gateway_process, worker_counters

MODEL = "langid_transformer"
PREDICT = f"/v1/models/{MODEL}/predict"
BODY = {"inputs": "hej hur mår du"}
# The kernel hands each new connection to whichever worker accepts first: both soon get some,
# and one still starting gets none until it listens.
ANSWERED_TIMEOUT_S = 90.0


def _answers_counted_by(worker: psutil.Process, scratch: Path, status_class: str) -> float:
    """Predict answers of one status class that one worker counted, from its own metrics file."""
    return sum(
        sample.value
        for metric in worker_counters(worker, scratch).collect()
        for sample in metric.samples
        if sample.name == "modelgate_requests_total"
        and sample.labels.get("endpoint") == "predict"
        and sample.labels.get("status_class") == status_class
    )


def _send_until_every_worker_answered(
    gateway: GatewayProcess, workers: list[psutil.Process], status_class: str, scratch: Path
) -> list[int]:
    """Predict requests, each on a new connection, until every one of `workers` has answered at
    least one more with `status_class`; returns every status code received."""

    def counted() -> dict[int, float]:
        return {w.pid: _answers_counted_by(w, scratch, status_class) for w in workers}

    before = counted()
    codes: list[int] = []
    give_up = time.monotonic() + ANSWERED_TIMEOUT_S
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        while time.monotonic() < give_up:
            response = client.post(PREDICT, json=BODY, headers={"Connection": "close"})
            codes.append(response.status_code)
            now = counted()
            if all(now[pid] > before[pid] for pid in now):
                return codes
    raise AssertionError(f"not every worker answered {len(codes)} requests: {before} -> {now}")


@pytest.fixture(scope="module")
def two_workers(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> GatewayProcess:
    log_dir = tmp_path_factory.mktemp("two-workers")
    gateway = start_gateway_process(
        log_dir / "gateway.log",
        {
            "model_repository": model_repository,
            "backend": "embedded",
            "watch_interval_s": 0,  # no repository watch: only the admin log can tell a worker
        },
        env={"PROMETHEUS_MULTIPROC_DIR": ""},  # let the command create a fresh one
        args=["--workers", "2"],
        ready_timeout_s=120,
    )
    try:
        yield gateway
    finally:
        gateway.stop(grace_s=60)


@pytest.mark.gateway
@pytest.mark.slow
def test_admin_changes_reach_every_worker_and_a_restarted_one(
    two_workers: GatewayProcess, tmp_path: Path
) -> None:
    gateway = two_workers
    workers = gateway.workers()
    assert len(workers) == 2, workers

    # Unloaded through one worker: every worker answers 404 from the moment the call returns.
    assert httpx.post(f"{gateway.url}/v2/repository/models/{MODEL}/unload", timeout=60).json() == {}
    codes = _send_until_every_worker_answered(gateway, workers, "4xx", tmp_path)
    assert set(codes) == {404}, codes

    # A worker that dies is replaced by the supervisor; the new one unloads it as it starts.
    victim = workers[0].pid
    workers[0].send_signal(signal.SIGKILL)
    give_up = time.monotonic() + ANSWERED_TIMEOUT_S
    while time.monotonic() < give_up:
        now = gateway.workers()
        if len(now) == 2 and victim not in {w.pid for w in now}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"worker {victim} was not replaced: {gateway.log_tail()}")
    new = [w for w in now if w.pid != workers[1].pid]
    codes = _send_until_every_worker_answered(gateway, new, "4xx", tmp_path)
    assert set(codes) == {404}, codes

    # Loaded again through one worker: every worker serves it when the call returns.
    response = httpx.post(f"{gateway.url}/v2/repository/models/{MODEL}/load", timeout=120)
    assert response.status_code == 200, response.text
    codes = _send_until_every_worker_answered(gateway, now, "2xx", tmp_path)
    assert set(codes) == {200}, codes
    # The index, asked of either worker, says the same.
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for _ in range(10):
            index = client.post(
                "/v2/repository/index", json={}, headers={"Connection": "close"}
            ).json()
            assert {"name": MODEL, "version": "1", "state": "READY", "reason": ""} in index
