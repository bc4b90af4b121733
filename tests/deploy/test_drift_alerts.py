"""Drift monitoring end to end: a real Prometheus scrapes a real gateway in front of a real
Triton. Held-out traffic keeps the drift gauges low and the drift alerts quiet; shifted traffic
(inverted digits, phrases in other languages, scaled sequences) makes the gauges rise and the
alerts go pending, then firing.

The rules are the shipped deploy/prometheus/alerts.yml with only the drift alerts' `for:`
shortened (10 minutes there; promtool's unit tests cover the shipped durations).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from loadtests.payloads import held_out_items
from loadtests.sla import PayloadKind, Shift
from service.local_triton import LocalTriton
from tests.deploy.deploy_support import start_gateway, wait_until
from tests.deploy.test_prometheus_scrape import RULES, PrometheusServer, local_config
from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.prometheus, pytest.mark.triton, pytest.mark.gateway, pytest.mark.slow]

DRIFT_ALERTS = ("ModelgateInputDrift", "ModelgatePredictionDrift")
TEST_FOR = "4s"
THRESHOLD = 0.25
WINDOW_ITEMS = 500  # the gateway's default drift window
ITEMS_PER_REQUEST = 16
# The shift each model is sent, and the input features it must move past the threshold.
SHIFTS: dict[str, tuple[PayloadKind, Shift, tuple[str, ...]]] = {
    "digits_cnn": ("image", "inverted", ("dark_on_light", "intensity_mean")),
    "langid_transformer": ("text", "foreign", ("non_latin_share", "rare_token_share")),
    "vowels_gru": ("sequence", "scaled", ("spread_0", "spread_1")),
}


def json_item(kind: PayloadKind, item: Any) -> Any:
    if kind == "image":
        return base64.b64encode(item).decode("ascii")
    if kind == "sequence":
        return np.asarray(item).tolist()
    return item


def send_items(
    gateway: GatewayProcess, model: str, kind: PayloadKind, items: Sequence[Any]
) -> None:
    """`WINDOW_ITEMS` + 100 items, shuffled and cycled, in requests of ITEMS_PER_REQUEST."""
    order = np.random.default_rng(5).permutation(len(items))
    picks = [items[order[i % len(order)]] for i in range(WINDOW_ITEMS + 100)]
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        for start in range(0, len(picks), ITEMS_PER_REQUEST):
            batch = [json_item(kind, item) for item in picks[start : start + ITEMS_PER_REQUEST]]
            response = client.post(f"/v1/models/{model}/predict", json={"inputs": batch})
            assert response.status_code == 200, response.text


def rules_with_short_drift_for(tmp_path: Path) -> Path:
    """alerts.yml with the drift alerts' `for:` shortened; every other rule unchanged."""
    rules = yaml.safe_load(RULES.read_text())
    changed = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in DRIFT_ALERTS:
                rule["for"] = TEST_FOR
                changed += 1
    assert changed == len(DRIFT_ALERTS)
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture(scope="module")
def drift_gateway(
    triton_server: LocalTriton, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway with the default drift settings (drift monitoring is on by default)."""
    with start_gateway(
        model_repository, [triton_server.grpc_url], tmp_path_factory.mktemp("drift-gateway")
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def prometheus(
    drift_gateway: GatewayProcess,
    triton_server: LocalTriton,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("drift-prometheus")
    targets = {
        "modelgate": [drift_gateway.address],
        "triton": [f"{triton_server.host}:{triton_server.metrics_port}"],
    }
    server = PrometheusServer(local_config(targets, rules_with_short_drift_for(workdir)), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def psi_by_feature(prometheus: PrometheusServer, model: str) -> dict[str, float]:
    result = prometheus.query(f'modelgate_drift_psi{{model="{model}"}}')
    return {sample["metric"]["feature"]: float(sample["value"][1]) for sample in result}


def drift_alerts(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    alerts = prometheus.api("alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] in DRIFT_ALERTS]


def test_held_out_traffic_stays_quiet_then_shifted_traffic_fires(
    drift_gateway: GatewayProcess, prometheus: PrometheusServer
) -> None:
    models = sorted(SHIFTS)
    # 1. Held-out traffic fills every window.
    for model in models:
        kind = SHIFTS[model][0]
        send_items(drift_gateway, model, kind, held_out_items(kind))

    def all_published() -> bool:
        """Every window full (as scraped after the last request) and every PSI a number."""
        published = prometheus.query(
            "count by (model) (modelgate_drift_psi == modelgate_drift_psi)"  # not NaN
        )
        fill = prometheus.query(f"modelgate_drift_window_items == {WINDOW_ITEMS}")
        return (
            {s["metric"]["model"] for s in published}
            == set(models)
            == {s["metric"]["model"] for s in fill}
        )

    wait_until(all_published, 30.0, "full drift windows of every model in Prometheus")
    # Quiet for well past the test rules' `for:` (several evaluations of each rule).
    quiet_until = time.monotonic() + 12.0
    while time.monotonic() < quiet_until:
        assert drift_alerts(prometheus) == []
        time.sleep(0.5)
    for model in models:
        psi = psi_by_feature(prometheus, model)
        print(f"held-out {model}: largest PSI {max(psi.values()):.3f}")  # shown with -s
        assert psi and max(psi.values()) < THRESHOLD, (model, psi)
    peak = prometheus.query("max(max_over_time(modelgate_drift_psi[15s]))")
    assert float(peak[0]["value"][1]) < THRESHOLD

    # 2. Shifted traffic replaces every window.
    for model in models:
        kind, shift, _moved = SHIFTS[model]
        send_items(drift_gateway, model, kind, held_out_items(kind, shift=shift))

    seen: dict[str, set[str]] = {model: set() for model in models}

    def input_drift_firing_everywhere() -> bool:
        for alert in drift_alerts(prometheus):
            if alert["labels"]["alertname"] == "ModelgateInputDrift":
                seen[alert["labels"]["model"]].add(alert["state"])
        return all("firing" in states for states in seen.values())

    wait_until(input_drift_firing_everywhere, 60.0, "ModelgateInputDrift firing for every model")
    for model in models:
        psi = psi_by_feature(prometheus, model)
        print(f"shifted {model}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(psi.items())))
        for feature in SHIFTS[model][2]:
            assert psi[feature] > THRESHOLD, (model, feature, psi)
    # Each went through pending first: Prometheus wrote a pending ALERTS series for it.
    history = prometheus.api(
        "query", query='ALERTS{alertname="ModelgateInputDrift", alertstate="pending"}[2m]'
    )["result"]
    assert {series["metric"]["model"] for series in history} == set(models)
