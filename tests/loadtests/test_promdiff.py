"""The gateway's histograms diffed between two scrapes, with PromQL's quantile interpolation."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtests import promdiff
from service.metrics import LATENCY_BUCKETS


def gateway_registry() -> tuple[CollectorRegistry, Histogram, Histogram]:
    registry = CollectorRegistry()
    stage = Histogram(
        "modelgate_stage_duration_seconds",
        "stage",
        ["model", "stage"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    request = Histogram(
        "modelgate_request_duration_seconds",
        "request",
        ["model", "endpoint", "protocol", "status_class"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return registry, stage, request


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_only_the_runs_observations_count() -> None:
    registry, stage, _ = gateway_registry()
    for _ in range(1000):  # before the run: slow, must not leak into the run's figures
        stage.labels("digits_cnn", "triton").observe(0.9)
    before = scrape(registry)
    for _ in range(100):
        stage.labels("digits_cnn", "triton").observe(0.0025)
    stage.labels("digits_cnn", "decode").observe(0.0004)
    after = scrape(registry)

    figures = {(f.model, f.stage): f for f in promdiff.stage_breakdown(before, after)}
    triton = figures[("digits_cnn", "triton")]
    assert triton.count == 100
    assert triton.mean_ms == pytest.approx(2.5)
    # All 100 fall in (2 ms, 3 ms]: PromQL interpolates linearly inside that bucket.
    assert triton.p95_ms == pytest.approx(2.95)
    assert triton.p99_ms == pytest.approx(2.99)
    assert figures[("digits_cnn", "decode")].count == 1
    assert [f.stage for f in promdiff.stage_breakdown(before, after)] == ["decode", "triton"]


def test_quantile_matches_promql_edge_cases() -> None:
    registry, stage, _ = gateway_registry()
    for value in (0.0002, 0.0002, 0.0002, 0.0002, 7.0):  # one above the last finite bound
        stage.labels("m", "triton").observe(value)
    (histogram,) = promdiff.parse_histograms(scrape(registry), promdiff.STAGE_METRIC).values()
    # Lowest bucket interpolates from zero; the +Inf bucket answers with the last finite bound.
    assert promdiff.quantile(histogram, 0.5) == pytest.approx(0.0005 * 2.5 / 4)
    assert promdiff.quantile(histogram, 0.99) == 5.0
    empty = promdiff.Histogram(((0.1, 0.0), (float("inf"), 0.0)), 0.0, 0.0)
    assert promdiff.quantile(empty, 0.5) is None


def test_a_restarted_gateway_counts_from_zero() -> None:
    registry, stage, _ = gateway_registry()
    for _ in range(50):
        stage.labels("m", "triton").observe(0.001)
    before = scrape(registry)
    fresh, fresh_stage, _ = gateway_registry()  # the gateway restarted: counters start again
    for _ in range(10):
        fresh_stage.labels("m", "triton").observe(0.004)
    (figure,) = promdiff.stage_breakdown(before, scrape(fresh))
    assert figure.count == 10
    assert figure.mean_ms == pytest.approx(4.0)


def test_end_to_end_figures_merge_protocols_and_skip_errors() -> None:
    registry, _, request = gateway_registry()
    before = scrape(registry)
    for _ in range(30):
        request.labels("vowels_gru", "predict", "rest", "2xx").observe(0.006)
    for _ in range(5):
        request.labels("vowels_gru", "predict", "rest", "4xx").observe(0.0001)
    (figure,) = promdiff.request_breakdown(before, scrape(registry))
    assert (figure.model, figure.stage, figure.count) == ("vowels_gru", "total (rest)", 30)
