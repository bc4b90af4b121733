"""Prometheus metrics of the gateway (names and labels: docs/architecture.md).

With several uvicorn workers set `PROMETHEUS_MULTIPROC_DIR` before the workers start (the CLI
does): every process then writes its samples to files there and `render` aggregates them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from service.monitoring.ood import OodMetrics

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip
# Stages (decode, preprocess, queue wait, backend call, postprocess) of a small model take tens
# of microseconds to a few milliseconds: finer buckets at the bottom, so a p95 of 40 us does not
# read as the 0.5 ms of the request buckets.
STAGE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075,
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ERROR_REASONS = (
    "bad_input", "not_found", "too_large", "unsupported_media", "overload", "timeout",
    "upstream", "unauthorized", "forbidden", "load_failed", "internal",
)  # fmt: skip
UNKNOWN_MODEL = (
    "unknown"  # label for requests naming a model that does not exist (bounded cardinality)
)
# `version` label of requests that ended before a version was chosen (unknown model or version,
# refused before routing); otherwise the label is a version directory on disk (bounded).
NO_VERSION = "none"


def status_class(status: int) -> str:
    """`2xx`, `4xx` or `5xx`."""
    return f"{status // 100}xx"


def multiprocess_dir() -> str | None:
    """The multiprocess directory when several worker processes share the metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ModelObserver:
    """The batcher's measurements for one model version, written into the shared metrics."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._queue_depth = metrics.queue_depth.labels(model=model, version=version)
        self._queue_wait = metrics.stage_duration.labels(
            model=model, version=version, stage="queue_wait"
        )
        self._triton = metrics.stage_duration.labels(model=model, version=version, stage="triton")
        self._batch_size = metrics.batch_size.labels(model=model, version=version)

    def queue_depth(self, rows: int) -> None:
        self._queue_depth.set(rows)

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        self._batch_size.observe(rows)
        self._triton.observe(seconds)


class Metrics:
    """All gateway metrics, registered in their own registry (one per app)."""

    def __init__(
        self,
        models: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "modelgate_request_duration_seconds",
            "End-to-end request latency in the gateway.",
            ["model", "version", "endpoint", "protocol", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "modelgate_stage_duration_seconds",
            "Latency of one stage: decode, preprocess, queue_wait, triton, postprocess.",
            ["model", "version", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "modelgate_batch_size",
            "Rows per batch sent to the backend.",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "modelgate_requests",
            "Requests handled.",
            ["model", "version", "endpoint", "protocol", "status_class"],
            registry=r,
        )
        self.errors = Counter(
            "modelgate_errors", "Failed requests by reason.", ["model", "reason"], registry=r
        )
        self.inflight = Gauge(
            "modelgate_inflight_requests",
            "Requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "modelgate_queue_depth",
            "Rows waiting in the model version's batch queue.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.triton_up = Gauge(
            "modelgate_triton_up",
            "1 when the Triton endpoint answered the last health check, else 0.",
            ["endpoint"],
            registry=r,
            multiprocess_mode="max",
        )
        self.ood = OodMetrics(r)
        for (
            model
        ) in models:  # zero series up front, so rates and alerts work before the first error
            for reason in ERROR_REASONS:
                self.errors.labels(model=model, reason=reason)
        # Labelled children by label values: `.labels(...)` takes a lock and builds a key on
        # every call, which shows on the request path; the label sets are small and bounded.
        self._request_children: dict[tuple[str, str, str, str, str], tuple[Any, Any]] = {}
        self._stage_children: dict[tuple[str, str, str], Any] = {}
        # Called before each render: gauges computed on scrape, not per request (drift).
        self.before_render: list[Callable[[], None]] = []

    def observer(self, model: str, version: str) -> ModelObserver:
        """The batcher observer for one version of `model` (its queue depth starts at 0)."""
        observer = ModelObserver(self, model, version)
        observer.queue_depth(0)
        return observer

    def observe_stage(self, model: str, version: str, stage: str, seconds: float) -> None:
        """Record one stage duration."""
        key = (model, version, stage)
        child = self._stage_children.get(key)
        if child is None:
            child = self._stage_children.setdefault(
                key, self.stage_duration.labels(model=model, version=version, stage=stage)
            )
        child.observe(seconds)

    def observe_request(
        self,
        model: str,
        version: str,
        endpoint: str,
        protocol: str,
        status: int,
        seconds: float,
        reason: str | None,
    ) -> None:
        """Record one finished request (and its error reason when it failed)."""
        key = (model, version, endpoint, protocol, status_class(status))
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children.setdefault(
                key, (self.request_duration.labels(*key), self.requests.labels(*key))
            )
        duration, count = children
        duration.observe(seconds)
        count.inc()
        if reason is not None:
            self.errors.labels(model=model, reason=reason).inc()

    def render(self) -> tuple[bytes, str]:
        """Exposition text and content type (summed over workers in multiprocess mode)."""
        for hook in self.before_render:
            hook()
        if multiprocess_dir() is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
