"""Rollout steps of an SLA file, without a load: applied on schedule, failures recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from loadtests.rollout_steps import RolloutSchedule
from loadtests.sla import RolloutStep
from service.model_contract import CONFIG_FILE, ROUTING_FILE


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    model = tmp_path / "m"
    for version in ("1", "2"):
        (model / version).mkdir(parents=True)
    (model / CONFIG_FILE).write_text('name: "m"\nversion_policy: { latest: { num_versions: 2 } }\n')
    (model / ROUTING_FILE).write_text(json.dumps({"weights": {"1": 100}}))
    return tmp_path


def test_a_step_that_cannot_apply_is_recorded_and_later_steps_still_run(repo: Path) -> None:
    steps = [
        RolloutStep(at_s=0, command="rollback", model="m"),  # nothing to roll back yet
        RolloutStep(at_s=0, command="canary", model="m", version="9", percent=5),  # not served
    ]
    schedule = RolloutSchedule(steps, repo, "http://127.0.0.1:9")  # never reached
    schedule.start()
    give_up = time.monotonic() + 10
    while any(o.applied_at_s is None for o in schedule.outcomes) and time.monotonic() < give_up:
        time.sleep(0.01)  # both steps are due at once; let the schedule's thread reach them
    outcomes = schedule.finish()
    assert [o.error is not None for o in outcomes] == [True, True]
    assert "nothing to roll back" in (outcomes[0].error or "")
    assert "serves no version 9" in (outcomes[1].error or "")
    assert "FAILED" in outcomes[0].describe()
    assert json.loads((repo / "m" / ROUTING_FILE).read_text()) == {"weights": {"1": 100}}


def test_steps_not_yet_due_when_the_load_ends_are_failures(repo: Path) -> None:
    schedule = RolloutSchedule(
        [RolloutStep(at_s=60, command="promote", model="m")], repo, "http://127.0.0.1:9"
    )
    schedule.start()
    (outcome,) = schedule.finish()
    assert outcome.error == "the load ended before this step"
    assert json.loads((repo / "m" / ROUTING_FILE).read_text()) == {"weights": {"1": 100}}


def test_a_schedule_that_never_started_fails_every_step(repo: Path) -> None:
    schedule = RolloutSchedule(
        [RolloutStep(at_s=1, command="promote", model="m")], repo, "http://127.0.0.1:9"
    )
    (outcome,) = schedule.finish()
    assert outcome.error == "never started (the warm-up did not end)"
