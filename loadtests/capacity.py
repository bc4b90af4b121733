"""Capacity under SLA: the highest sustained throughput of a step load that met the budgets.

The step shape (`loadtests/capacity_shape.py`) writes one `StepRecord` per
finished step. A step passes when its latency and error budgets hold; the
capacity is the best successful throughput among the passing steps before the
first failing one (a load that only passes again after a breach is not
sustained). `min_throughput_rps` is not a ceiling and plays no part in the
search; the capacity is then compared with it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.verdict import Measurement


@dataclass(frozen=True)
class StepRecord:
    """One step of a capacity run."""

    users: int
    seconds: float
    ended_at: float  # time.time() when the step was closed
    requests: int
    failures: int
    ok_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    breached: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.breached

    @classmethod
    def from_measurement(
        cls,
        users: int,
        seconds: float,
        ended_at: float,
        measured: Measurement | None,
        breached: list[str],
    ) -> StepRecord:
        if measured is None:
            return cls(users, seconds, ended_at, 0, 0, 0.0, None, None, None, breached)
        return cls(
            users=users,
            seconds=seconds,
            ended_at=ended_at,
            requests=measured.requests,
            failures=measured.failures,
            ok_rps=measured.ok_rps,
            p50_ms=measured.p50_ms,
            p95_ms=measured.p95_ms,
            p99_ms=measured.p99_ms,
            breached=breached,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**data)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "BREACH: " + "; ".join(self.breached)
        return (
            f"{self.users} users: {self.ok_rps:.1f} ok req/s, p50 {self.p50_ms} ms, "
            f"p95 {self.p95_ms} ms, p99 {self.p99_ms} ms, {self.failures}/{self.requests} "
            f"failed -> {verdict}"
        )


def read_steps(path: Path) -> list[StepRecord]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [StepRecord.from_json(json.loads(line)) for line in lines if line.strip()]


@dataclass(frozen=True)
class Capacity:
    """The answer for one target."""

    target: str
    steps: list[StepRecord]

    @property
    def sustained(self) -> list[StepRecord]:
        """The passing steps before the first breach."""
        passing = []
        for step in self.steps:
            if not step.passed:
                break
            passing.append(step)
        return passing

    @property
    def best(self) -> StepRecord | None:
        return max(self.sustained, key=lambda s: s.ok_rps, default=None)

    @property
    def limited_by(self) -> str:
        """Why the search stopped: the first breach, or the end of the steps."""
        for step in self.steps:
            if not step.passed:
                return f"{step.users} users: " + "; ".join(step.breached)
        return "no breach up to the last step (raise capacity.user_steps)"
