"""The verdict: every budget of every target against what Locust measured after the warm-up.

Locust's own statistics are the source (its `*_stats.csv`, or its live
`StatsEntry` objects during a capacity run): the figures a user sees in
Locust's report are the figures the verdict judges.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loadtests.sla import Target

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class Measurement:
    """What Locust measured for one request name over the measured window."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def ok_rps(self) -> float:
        """Successful requests per second (Locust's Requests/s less the failed share)."""
        return self.rps * (1.0 - self.error_ratio)


def _number(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def read_locust_stats(path: Path) -> dict[str, Measurement]:
    """Locust's final `<prefix>_stats.csv`, one `Measurement` per request name."""
    measurements = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            measurements[row["Name"]] = Measurement(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=float(row["Requests/s"]),
                p50_ms=_number(row["50%"]),
                p95_ms=_number(row["95%"]),
                p99_ms=_number(row["99%"]),
            )
    return measurements


@dataclass(frozen=True)
class VerdictLine:
    """One budget of one target: the budget, what was measured, pass or fail."""

    target: str
    metric: str
    comparator: Literal["<=", ">="]
    budget: float
    measured: float | None
    unit: str

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        if self.comparator == "<=":
            return self.measured <= self.budget
        return self.measured >= self.budget

    @property
    def budget_text(self) -> str:
        return f"{self.metric} {self.comparator} {_fmt(self.budget)} {self.unit}".rstrip()

    @property
    def measured_text(self) -> str:
        if self.measured is None:
            return "no requests"
        return f"{_fmt(self.measured)} {self.unit}".rstrip()

    def describe(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return f"{status} {self.target}: {self.budget_text} (measured {self.measured_text})"


def _fmt(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.4f}".rstrip("0").rstrip(".")


def evaluate(
    target: Target, measured: Measurement | None, *, include_throughput: bool = True
) -> list[VerdictLine]:
    """The verdict lines of one target; a target with no requests fails every line."""
    seen = measured if measured is not None and measured.requests > 0 else None
    budget = target.budget
    lines = []
    for metric, limit, attribute in (
        ("p50", budget.p50_ms, "p50_ms"),
        ("p95", budget.p95_ms, "p95_ms"),
        ("p99", budget.p99_ms, "p99_ms"),
    ):
        if limit is not None:
            value = getattr(seen, attribute) if seen else None
            lines.append(VerdictLine(target.name, metric, "<=", limit, value, "ms"))
    if budget.max_error_ratio is not None:
        ratio = seen.error_ratio if seen else None
        lines.append(
            VerdictLine(target.name, "error ratio", "<=", budget.max_error_ratio, ratio, "")
        )
    if include_throughput and budget.min_throughput_rps is not None:
        rps = seen.ok_rps if seen else None
        lines.append(
            VerdictLine(target.name, "throughput", ">=", budget.min_throughput_rps, rps, "req/s")
        )
    return lines


def evaluate_all(
    targets: Iterable[Target], measurements: dict[str, Measurement]
) -> list[VerdictLine]:
    lines: list[VerdictLine] = []
    for target in targets:
        lines += evaluate(target, measurements.get(target.name))
    return lines


def breaches(lines: Iterable[VerdictLine]) -> list[VerdictLine]:
    return [line for line in lines if not line.passed]
