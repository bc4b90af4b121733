"""Capacity under SLA: the best passing step before the first breach."""

from __future__ import annotations

from pathlib import Path

from loadtests.capacity import Capacity, StepRecord, read_steps


def step(users: int, ok_rps: float, breached: list[str] | None = None) -> StepRecord:
    return StepRecord(users, 7.0, 0.0, int(ok_rps * 7), 0, ok_rps, 2.0, 4.0, 6.0, breached or [])


def test_best_sustained_step_before_the_first_breach() -> None:
    capacity = Capacity(
        "rest digits_cnn",
        [step(1, 100), step(2, 190), step(4, 180), step(8, 400, ["p99 too high"]), step(16, 900)],
    )
    assert [s.users for s in capacity.sustained] == [1, 2, 4]
    best = capacity.best
    assert best is not None
    assert (best.users, best.ok_rps) == (2, 190)
    assert capacity.limited_by == "8 users: p99 too high"


def test_no_capacity_when_the_first_step_breaches_and_no_breach_when_all_pass() -> None:
    assert Capacity("t", [step(1, 10, ["p50 too high"])]).best is None
    assert "no breach" in Capacity("t", [step(1, 10)]).limited_by


def test_steps_round_trip_through_json_lines(tmp_path: Path) -> None:
    import json

    path = tmp_path / "steps.jsonl"
    records = [step(1, 50), step(2, 80, ["error ratio"])]
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    assert read_steps(path) == records
    assert read_steps(tmp_path / "missing.jsonl") == []
