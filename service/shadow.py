"""Shadow traffic: a copy of a request also runs on a candidate version and is only compared.

The primary's answer is ready before the copy starts (`Shadow.offer` is called after it), and
the copy runs as its own task: it never delays, changes or fails the primary. It is dropped
first under load: when `max_inflight` copies already run, or when a batch queue it would use is
above `queue_fraction` of its limit (so shadow rows never fill a queue that real requests need).
Every drop is counted in `modelgate_shadow_dropped_total{reason}`.

Agreement per model and version pair, as counters from which PromQL computes the ratios:
- `modelgate_shadow_compared_total`   rows answered by both versions
- `modelgate_shadow_top1_agree_total` rows whose best class is the same in both
- `modelgate_shadow_abs_diff` (histogram; `_sum` / compared = mean absolute difference) per row:
  the mean over classes of |p_primary - p_shadow|, p the softmax of each version's logits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from service.postprocess import softmax

log = logging.getLogger(__name__)

ABS_DIFF_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
DROP_REASONS = ("busy", "queue", "failed", "incomparable", "shutdown")


@dataclass(frozen=True)
class Agreement:
    """How two versions' answers to the same rows compare."""

    rows: int
    top1_agree: int
    abs_diff: np.ndarray  # per row: mean over classes of |p_primary - p_shadow|


def compare(
    primary: np.ndarray,
    shadow: np.ndarray,
    primary_labels: Sequence[str] = (),
    shadow_labels: Sequence[str] = (),
) -> Agreement:
    """Compare two [rows, classes] logit arrays row by row.

    When the versions list their classes differently but share names (a new version may add or
    reorder labels), the shadow's columns are matched to the primary's by label; classes only one
    side has count as probability 0 on the other. Labels with no name in common (renamed) are
    compared by position. `ValueError` when the outputs cannot be matched.
    """
    if primary.ndim != 2 or shadow.ndim != 2 or primary.shape[0] != shadow.shape[0]:
        raise ValueError(f"cannot compare outputs of shapes {primary.shape} and {shadow.shape}")
    p, q = softmax(primary), softmax(shadow)
    if _match_by_label(primary_labels, shadow_labels):
        names = list(dict.fromkeys([*primary_labels, *shadow_labels]))
        p, q = _align(p, primary_labels, names), _align(q, shadow_labels, names)
    elif p.shape[1] != q.shape[1]:
        raise ValueError(f"{p.shape[1]} classes against {q.shape[1]} and no labels to match")
    agree = int(np.count_nonzero(np.argmax(p, axis=1) == np.argmax(q, axis=1)))
    return Agreement(int(p.shape[0]), agree, np.mean(np.abs(p - q), axis=1))


def _match_by_label(primary: Sequence[str], shadow: Sequence[str]) -> bool:
    """Match classes by name when the versions share some names but list them differently;
    equal lists, a missing list, or wholly renamed labels (no name in common) go by position."""
    if not primary or not shadow or list(primary) == list(shadow):
        return False
    return bool(set(primary) & set(shadow))


def _align(probs: np.ndarray, labels: Sequence[str], names: list[str]) -> np.ndarray:
    if probs.shape[1] != len(labels):
        raise ValueError(f"{probs.shape[1]} outputs but {len(labels)} labels")
    out = np.zeros((probs.shape[0], len(names)), dtype=probs.dtype)
    index = {name: i for i, name in enumerate(names)}
    out[:, [index[label] for label in labels]] = probs
    return out


class ShadowMetrics:
    """The shadow metrics, registered beside the gateway's others."""

    def __init__(self, registry: CollectorRegistry, models: Sequence[str] = ()) -> None:
        labels = ["model", "primary", "shadow"]
        self.compared = Counter(
            "modelgate_shadow_compared",
            "Rows answered by both the primary and the shadow version.",
            labels,
            registry=registry,
        )
        self.top1_agree = Counter(
            "modelgate_shadow_top1_agree",
            "Compared rows whose best class is the same for the primary and the shadow version.",
            labels,
            registry=registry,
        )
        self.abs_diff = Histogram(
            "modelgate_shadow_abs_diff",
            "Per compared row: mean over classes of |primary - shadow| probability.",
            labels,
            buckets=ABS_DIFF_BUCKETS,
            registry=registry,
        )
        self.dropped = Counter(
            "modelgate_shadow_dropped",
            "Shadow copies not compared: busy (in-flight bound), queue (batch queue above the "
            "shadow fraction), failed (the shadow version erred), incomparable, shutdown.",
            ["model", "reason"],
            registry=registry,
        )
        for model in models:  # zero series up front: rates and alerts work from the start
            for reason in DROP_REASONS:
                self.dropped.labels(model=model, reason=reason)

    def record(self, model: str, primary: str, shadow: str, agreement: Agreement) -> None:
        key = (model, primary, shadow)
        self.compared.labels(*key).inc(agreement.rows)
        self.top1_agree.labels(*key).inc(agreement.top1_agree)
        histogram = self.abs_diff.labels(*key)
        for value in agreement.abs_diff:
            histogram.observe(float(value))


ShadowRun = Callable[[], Awaitable[np.ndarray]]


class Shadow:
    """Runs shadow copies in the background, bounded, and records their agreement."""

    def __init__(self, metrics: ShadowMetrics, max_inflight: int, queue_fraction: float) -> None:
        if max_inflight < 1 or not 0 < queue_fraction <= 1:
            raise ValueError("max_inflight must be >= 1 and queue_fraction in (0, 1]")
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.queue_fraction = queue_fraction
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def inflight(self) -> int:
        """Shadow copies running now."""
        return len(self._tasks)

    def offer(
        self,
        model: str,
        primary: str,
        shadow: str,
        primary_logits: np.ndarray,
        run: ShadowRun,
        queue_load: float,
        labels: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> bool:
        """Start a shadow copy unless the gateway is busy; True when it was started.

        `run` (called only when accepted) returns the shadow version's logits for the same
        rows; `queue_load` is the fuller of the queues involved, as a fraction of its limit.
        """
        reason = None
        if self._closing:
            reason = "shutdown"
        elif len(self._tasks) >= self.max_inflight:
            reason = "busy"
        elif queue_load > self.queue_fraction:
            reason = "queue"
        if reason is not None:
            self.metrics.dropped.labels(model=model, reason=reason).inc()
            return False
        task = asyncio.get_running_loop().create_task(
            self._run(model, primary, shadow, primary_logits, run, labels)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self,
        model: str,
        primary: str,
        shadow: str,
        primary_logits: np.ndarray,
        run: ShadowRun,
        labels: tuple[Sequence[str], Sequence[str]],
    ) -> None:
        try:
            shadow_logits = await run()
        except asyncio.CancelledError:
            self.metrics.dropped.labels(model=model, reason="shutdown").inc()
            raise
        except Exception as exc:  # the shadow's failure is only counted, never surfaced
            self.metrics.dropped.labels(model=model, reason="failed").inc()
            log.debug("shadow %s version %s failed: %s", model, shadow, exc)
            return
        try:
            agreement = compare(primary_logits, shadow_logits, *labels)
        except ValueError as exc:
            self.metrics.dropped.labels(model=model, reason="incomparable").inc()
            log.warning("shadow %s %s vs %s not comparable: %s", model, primary, shadow, exc)
            return
        self.metrics.record(model, primary, shadow, agreement)

    async def close(self) -> None:
        """Stop taking copies and cancel those running (shadow work never holds a shutdown)."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def describe(agreement: Agreement) -> dict[str, Any]:
    """JSON-friendly summary (benchmarks, tests)."""
    rows = max(agreement.rows, 1)
    return {
        "rows": agreement.rows,
        "top1_agreement": agreement.top1_agree / rows,
        "mean_abs_diff": float(np.sum(agreement.abs_diff)) / rows,
    }
