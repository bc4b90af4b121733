"""The Grafana dashboard's structure (its queries are run against a real Prometheus elsewhere)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import REPO_ROOT

GRAFANA = REPO_ROOT / "deploy" / "grafana"
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads((GRAFANA / "dashboards" / "modelgate.json").read_text())
    assert isinstance(data, dict)
    return data


def test_identity_and_ids(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "modelgate"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    used = set()
    for panel in dashboard["panels"]:
        used |= set(re.findall(r"\$(\w+)", panel["title"]))
        if "repeat" in panel:
            used.add(panel["repeat"])
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\$(\w+)", target["expr"]))
    assert used - BUILTIN_VARIABLES <= defined


def test_the_required_views_are_there(dashboard: dict[str, Any]) -> None:
    """Per model: rate, percentiles, stages, batch sizes, errors, shedding, queues, Triton split."""
    queries = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    for needle in (
        "rate(modelgate_requests_total",
        "histogram_quantile(0.5, sum by (protocol, le) (rate(modelgate_request_duration_seconds",
        "histogram_quantile(0.95, sum by (protocol, le) (rate(modelgate_request_duration_seconds",
        "histogram_quantile(0.99, sum by (protocol, le) (rate(modelgate_request_duration_seconds",
        "modelgate_stage_duration_seconds",
        "modelgate_batch_size",
        'modelgate_requests_total{model=~"$model", status_class="5xx"}',
        'reason="overload"',
        "modelgate_queue_depth",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_request_success",
        "modelgate_drift_psi",
        "modelgate_drift_window_items",
    ):
        assert needle in queries, needle
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    assert any(row.get("repeat") == "model" for row in rows), "no per-model row"
    drift_rows = [row for row in rows if "Drift" in row["title"]]
    assert [row.get("repeat") for row in drift_rows] == ["model"], "no per-model drift row"


def test_provisioning_points_at_the_dashboard(dashboard: dict[str, Any]) -> None:
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "modelgate.yml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    variable_sources = {v["datasource"]["uid"] for v in dashboard["templating"]["list"]}
    assert variable_sources == {datasource["uid"]}


def test_the_rollout_row_shows_routing_and_shadow_agreement(dashboard: dict[str, Any]) -> None:
    """Weights in force per version, agreement ratio against the alert's floor, mean absolute
    difference, and shadow copies compared and dropped."""
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    (row,) = [r for r in rows if r["title"].startswith("Rollout")]
    assert "repeat" not in row
    queries = " ".join(
        target["expr"]
        for panel in dashboard["panels"]
        if panel["gridPos"]["y"] > row["gridPos"]["y"]
        and panel["gridPos"]["y"]
        < min(
            [r["gridPos"]["y"] for r in rows if r["gridPos"]["y"] > row["gridPos"]["y"]] or [10**6]
        )
        for target in panel.get("targets", [])
    )
    for needle in (
        "modelgate_routing_weight",
        "rate(modelgate_shadow_top1_agree_total",
        "rate(modelgate_shadow_compared_total",
        "rate(modelgate_shadow_abs_diff_sum",
        "modelgate_shadow_dropped_total",
        "modelgate:shadow_top1_agreement_floor",
    ):
        assert needle in queries, needle
