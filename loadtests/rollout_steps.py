"""Rollout steps during a load test: the SLA's `rollout` list, applied on schedule.

Each step is what `modelgate rollout <command>` does (a routing.json change in the gateway's
repository, service/rollout.py), timed from the end of the warm-up; the runner then waits until
the gateway's /metrics reports the new weights in force and records how long that took. The
verdict judges the load as usual, so an SLA with `max_error_ratio: 0` proves that the steps
cost no request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.sla import RolloutStep
from service import rollout
from service.rollout_cli import wait_until_applied
from service.routing import RoutingPolicy

APPLY_WAIT_S = 15.0


@dataclass
class StepOutcome:
    """What one step did."""

    step: RolloutStep
    applied_at_s: float | None = None  # seconds after the warm-up ended
    routing: str | None = None
    in_force_after_s: float | None = None
    error: str | None = None

    def describe(self) -> str:
        step = self.step
        what = f"{step.command} {step.model}" + (f" v{step.version}" if step.version else "")
        if step.percent is not None:
            what += f" {step.percent:g} %"
        if self.error is not None:
            return f"at {step.at_s:g} s: {what}: FAILED: {self.error}"
        return (
            f"at {self.applied_at_s:.1f} s: {what} -> {self.routing}; in force at the gateway "
            f"after {self.in_force_after_s:.1f} s"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.step.model_dump(),
            "applied_at_s": self.applied_at_s,
            "routing": self.routing,
            "in_force_after_s": self.in_force_after_s,
            "error": self.error,
        }


def apply(step: RolloutStep, repository: Path) -> RoutingPolicy:
    """Apply one step to the repository (raises `rollout.RolloutError`)."""
    if step.command == "hold":
        return rollout.hold(repository, step.model, step.version)
    if step.command == "canary":
        assert step.version is not None and step.percent is not None  # checked by the schema
        return rollout.canary(repository, step.model, step.version, step.percent)
    if step.command == "shadow":
        return rollout.set_shadow(repository, step.model, step.version)
    if step.command == "promote":
        return rollout.promote(repository, step.model, step.version)
    return rollout.rollback(repository, step.model)


class RolloutSchedule:
    """Runs the steps in a background thread, starting when `start` is called."""

    def __init__(self, steps: list[RolloutStep], repository: Path, host: str) -> None:
        self.outcomes = [StepOutcome(step) for step in steps]
        self._repository = repository
        self._host = host
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.outcomes and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rollout-steps", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for outcome in self.outcomes:
            if self._stop.wait(max(0.0, started + outcome.step.at_s - time.monotonic())):
                outcome.error = "the load ended before this step"
                continue
            outcome.applied_at_s = time.monotonic() - started
            try:
                policy = apply(outcome.step, self._repository)
                outcome.routing = rollout.describe_policy(policy)
                outcome.in_force_after_s = wait_until_applied(self._host, policy, APPLY_WAIT_S)
            except rollout.RolloutError as exc:
                outcome.error = str(exc)

    def finish(self) -> list[StepOutcome]:
        """Stop waiting for steps not yet due, and return every step's outcome."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=APPLY_WAIT_S + 5)
        for outcome in self.outcomes:
            if outcome.error is None and outcome.applied_at_s is None:
                outcome.error = "never started (the warm-up did not end)"
        return self.outcomes

    @property
    def failed(self) -> list[StepOutcome]:
        return [o for o in self.outcomes if o.error is not None]
