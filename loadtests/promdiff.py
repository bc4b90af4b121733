"""The gateway's own view of a run: Prometheus histograms scraped before and after, diffed.

Prometheus histograms are cumulative since the gateway started, so the run's
share is `after - before`, bucket by bucket. Quantiles of that difference use
the same linear interpolation as PromQL's `histogram_quantile`, which is what
a dashboard over the same metrics would show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

STAGE_METRIC = "modelgate_stage_duration_seconds"
REQUEST_METRIC = "modelgate_request_duration_seconds"
STAGE_ORDER = ("decode", "preprocess", "queue_wait", "triton", "postprocess")

LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound `le`, count) ending with +Inf, plus the sum."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    sum: float


def parse_histograms(text: str, metric: str) -> dict[LabelKey, Histogram]:
    """Every series of histogram `metric` in a Prometheus text exposition, keyed by labels."""
    buckets: dict[LabelKey, dict[float, float]] = {}
    sums: dict[LabelKey, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = tuple(sorted(labels.items()))
            if sample.name == f"{metric}_bucket":
                buckets.setdefault(key, {})[float(sample.labels["le"])] = float(sample.value)
            elif sample.name == f"{metric}_sum":
                sums[key] = float(sample.value)
    result = {}
    for key, by_bound in buckets.items():
        ordered = tuple(sorted(by_bound.items()))
        result[key] = Histogram(ordered, ordered[-1][1] if ordered else 0.0, sums.get(key, 0.0))
    return result


def diff(before: Histogram | None, after: Histogram) -> Histogram:
    """The observations made between two scrapes of one series.

    A series that went down was reset (the gateway restarted): then `after`
    alone is the best account of the run.
    """
    if before is None or after.total < before.total:
        return after
    earlier = dict(before.buckets)
    buckets = tuple((le, count - earlier.get(le, 0.0)) for le, count in after.buckets)
    return Histogram(buckets, after.total - before.total, after.sum - before.sum)


def quantile(histogram: Histogram, q: float) -> float | None:
    """PromQL `histogram_quantile(q, ...)` of one histogram; None when it is empty."""
    if histogram.total <= 0 or not histogram.buckets:
        return None
    rank = q * histogram.total
    lower, below = 0.0, 0.0
    finite = [le for le, _ in histogram.buckets if not math.isinf(le)]
    for upper, cumulative in histogram.buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                # Past the last finite bound: PromQL answers with that bound.
                return finite[-1] if finite else None
            in_bucket = cumulative - below
            if in_bucket <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / in_bucket
        lower, below = upper, cumulative
    return finite[-1] if finite else None


@dataclass(frozen=True)
class StageFigure:
    """One model's one stage over the run, in milliseconds."""

    model: str
    stage: str
    count: int
    mean_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def _figure(model: str, stage: str, run: Histogram) -> StageFigure:
    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000.0

    mean = run.sum / run.total if run.total > 0 else None
    return StageFigure(
        model=model,
        stage=stage,
        count=round(run.total),
        mean_ms=ms(mean),
        p95_ms=ms(quantile(run, 0.95)),
        p99_ms=ms(quantile(run, 0.99)),
    )


def _stage_rank(figure: StageFigure) -> tuple[str, int, str]:
    order = STAGE_ORDER.index(figure.stage) if figure.stage in STAGE_ORDER else len(STAGE_ORDER)
    return figure.model, order, figure.stage


def stage_breakdown(before_text: str, after_text: str) -> list[StageFigure]:
    """Per model and stage: requests seen in the run, mean, p95 and p99 (ms)."""
    before = parse_histograms(before_text, STAGE_METRIC)
    after = parse_histograms(after_text, STAGE_METRIC)
    figures = []
    for key, histogram in after.items():
        labels = dict(key)
        run = diff(before.get(key), histogram)
        if run.total > 0:
            figures.append(_figure(labels.get("model", "?"), labels.get("stage", "?"), run))
    return sorted(figures, key=_stage_rank)


def request_breakdown(before_text: str, after_text: str) -> list[StageFigure]:
    """The gateway's end-to-end request latency per model and protocol (successes only)."""
    before = parse_histograms(before_text, REQUEST_METRIC)
    after = parse_histograms(after_text, REQUEST_METRIC)
    merged: dict[tuple[str, str], Histogram] = {}
    for key, histogram in after.items():
        labels = dict(key)
        if labels.get("status_class", "2xx") != "2xx":
            continue
        run = diff(before.get(key), histogram)
        group = (labels.get("model", "?"), labels.get("protocol", "?"))
        merged[group] = _add(merged[group], run) if group in merged else run
    return [
        _figure(model, f"total ({protocol})", run)
        for (model, protocol), run in sorted(merged.items())
        if run.total > 0
    ]


def _add(a: Histogram, b: Histogram) -> Histogram:
    counts = dict(a.buckets)
    buckets = tuple((le, counts.get(le, 0.0) + count) for le, count in b.buckets)
    return Histogram(buckets, a.total + b.total, a.sum + b.sum)


def scrape(base_url: str, api_key: str | None = None, timeout_s: float = 5.0) -> str:
    """The gateway's `/metrics` text; raises `httpx.HTTPError` when it cannot be read."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{base_url.rstrip('/')}/metrics", headers=headers, timeout=timeout_s)
    response.raise_for_status()
    return response.text
