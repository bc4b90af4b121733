"""Step load for `modelgate capacity`: raise the users step by step until a budget breaks.

    locust -f loadtests/locustfile.py,loadtests/capacity_shape.py ...

Each step holds one user count from the SLA's `capacity.user_steps` for
`step_s` seconds; the first `settle_s` seconds are left out (users still
starting, queues filling). At the end of each step the shape judges the
step's latency and error budgets with Locust's live statistics, appends the
step to the JSON-lines file named by `MODELGATE_CAPACITY_STEPS`, and stops
the test at the first breached step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from locust import LoadTestShape
from locust.stats import StatsEntry

from loadtests.capacity import StepRecord
from loadtests.contract import CAPACITY_STEPS_ENV, SLA_ENV, TARGETS_ENV
from loadtests.sla import load_sla
from loadtests.verdict import Measurement, evaluate

logger = logging.getLogger("modelgate.capacity")


class SlaStepShape(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        sla = load_sla(os.environ[SLA_ENV])
        names = [n.strip() for n in os.environ.get(TARGETS_ENV, "").split(",") if n.strip()]
        if len(names) != 1:
            raise SystemExit(f"a capacity run measures one target: set {TARGETS_ENV}")
        self.target = sla.target(names[0])
        self.profile = sla.capacity
        self.steps_file = Path(os.environ[CAPACITY_STEPS_ENV])
        self.step = -1
        self.measure_started: float | None = None

    def _entry(self) -> StatsEntry | None:
        assert self.runner is not None
        for entry in self.runner.stats.entries.values():
            if entry.name == self.target.name:
                return entry
        return None

    def _close_step(self) -> bool:
        """Record the step just finished; True when it met every latency and error budget."""
        entry = self._entry()
        elapsed = time.time() - self.measure_started if self.measure_started else 0.0
        measured = None
        if entry is not None and entry.num_requests and elapsed > 0:
            measured = Measurement(
                name=self.target.name,
                requests=entry.num_requests,
                failures=entry.num_failures,
                rps=entry.num_requests / elapsed,
                p50_ms=entry.get_response_time_percentile(0.50),
                p95_ms=entry.get_response_time_percentile(0.95),
                p99_ms=entry.get_response_time_percentile(0.99),
            )
        lines = evaluate(self.target, measured, include_throughput=False)
        record = StepRecord.from_measurement(
            users=self.profile.user_steps[self.step],
            seconds=elapsed,
            ended_at=time.time(),
            measured=measured,
            breached=[line.describe() for line in lines if not line.passed],
        )
        with self.steps_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record.to_json()) + "\n")
        logger.info("capacity step: %s", record.summary())
        return record.passed

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        index = int(run_time // self.profile.step_s)
        if index != self.step:
            if self.step >= 0 and not self._close_step():
                return None
            if index >= len(self.profile.user_steps):
                return None
            self.step, self.measure_started = index, None
        if self.measure_started is None and run_time - index * self.profile.step_s >= (
            self.profile.settle_s
        ):
            assert self.runner is not None
            self.runner.stats.reset_all()
            self.measure_started = time.time()
        return self.profile.user_steps[self.step], self.profile.spawn_rate
