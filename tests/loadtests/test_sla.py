"""The SLA schema: the shipped file is valid, and every kind of bad file gets a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadtests.sla import SlaError, load_sla, parse_sla
from modelgate.cli import app

SHIPPED = Path(__file__).resolve().parents[2] / "loadtests" / "sla.yaml"

MINIMAL = """
load: {users: 2, spawn_rate: 2, duration_s: 10}
targets:
  - {model: digits_cnn, budget: {p99_ms: 100}}
"""


def test_shipped_sla_is_valid() -> None:
    sla = load_sla(SHIPPED)
    assert {t.model for t in sla.targets} == {"digits_cnn", "langid_transformer", "vowels_gru"}
    assert all(t.budget.p99_ms for t in sla.targets)


def test_shipped_drift_scenario_shifts_every_model() -> None:
    sla = load_sla(SHIPPED.parent / "drift.yaml")
    shifts = {t.model: t.shift for t in sla.targets}
    assert shifts == {
        "digits_cnn": "inverted",
        "langid_transformer": "foreign",
        "vowels_gru": "scaled",
    }
    assert {t.name for t in sla.targets} >= {"rest digits_cnn inverted"}


def test_minimal_file_gets_defaults() -> None:
    sla = parse_sla(MINIMAL)
    target = sla.targets[0]
    assert (target.protocol, target.kind, target.name) == ("rest", "image", "rest digits_cnn")
    assert sla.load.warmup_s == 5.0
    assert sla.capacity.user_steps[0] == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL.replace("users: 2", "users: 0"),
            "load.users: Input should be greater than 0",
        ),
        (
            MINIMAL.replace("duration_s: 10", "duration_s: 10, warmup: 3"),
            "load.warmup: unknown field",
        ),
        (
            MINIMAL.replace("p99_ms: 100", "p95_ms: 200, p99_ms: 100"),
            "targets[0].budget: p95_ms (200.0) must not exceed p99_ms (100.0)",
        ),
        (MINIMAL.replace("p99_ms: 100", ""), "targets[0].budget: a budget needs at least one"),
        (
            MINIMAL.replace("p99_ms: 100", "max_error_ratio: 1.5"),
            "targets[0].budget.max_error_ratio: Input should be less than or equal to 1",
        ),
        (
            MINIMAL.replace("model: digits_cnn", "model: mystery"),
            "model 'mystery' is not one of",
        ),
        (
            MINIMAL.replace("model: digits_cnn", "model: digits_cnn, protocol: grpc"),
            "targets[0].protocol: Input should be 'rest', 'v2_http' or 'v2_grpc'",
        ),
        (
            MINIMAL.replace("model: digits_cnn", "model: digits_cnn, protocol: v2_grpc"),
            "set grpc_url",
        ),
        (
            MINIMAL + "  - {model: digits_cnn, budget: {p50_ms: 5}}\n",
            "repeated: ['rest digits_cnn']",
        ),
        (
            MINIMAL.replace("model: digits_cnn", "model: vowels_gru, encoding: multipart"),
            "multipart is only for image models",
        ),
        (
            MINIMAL.replace("model: digits_cnn", "model: digits_cnn, shift: foreign"),
            "shift 'foreign' does not apply to image payloads",
        ),
        (
            MINIMAL.replace("model: digits_cnn", "model: digits_cnn, shift: upside_down"),
            "targets[0].shift: Input should be",
        ),
        (MINIMAL + "capacity: {user_steps: [4, 2]}\n", "user_steps must increase strictly"),
        (MINIMAL.replace("load:", "host: localhost:8000\nload:"), "host: String should match"),
        ("load: {users: 2\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("load: {users: 2, spawn_rate: 1, duration_s: 5}\n", "targets: Field required"),
    ],
)
def test_bad_file_names_the_field(text: str, expected: str) -> None:
    with pytest.raises(SlaError) as caught:
        parse_sla(text, "bad.yaml")
    message = str(caught.value)
    assert message.startswith("bad.yaml: ")
    assert expected in message


def test_missing_file() -> None:
    with pytest.raises(SlaError, match="cannot read SLA file"):
        load_sla("/nonexistent/sla.yaml")


def test_cli_rejects_a_bad_file_before_any_load(tmp_path: Path) -> None:
    bad = tmp_path / "sla.yaml"
    bad.write_text(MINIMAL.replace("p99_ms: 100", "p99_ms: -1"))
    result = CliRunner().invoke(app, ["loadtest", "--sla", str(bad), "--host", "http://x:1"])
    assert result.exit_code == 2
    assert "targets[0].budget.p99_ms: Input should be greater than 0" in result.output
    assert not (tmp_path / "reports").exists()


def test_cli_names_an_unreachable_gateway(tmp_path: Path) -> None:
    good = tmp_path / "sla.yaml"
    good.write_text(MINIMAL)
    result = CliRunner().invoke(
        app, ["capacity", "--sla", str(good), "--host", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert "cannot reach the gateway at http://127.0.0.1:9" in result.output


ROLLOUT = SHIPPED.with_name("rollout.yaml")


def test_shipped_rollout_sla_allows_no_error_and_promotes_then_rolls_back() -> None:
    sla = load_sla(ROLLOUT)
    assert all(t.budget.max_error_ratio == 0 for t in sla.targets)
    commands = [step.command for step in sla.rollout]
    assert "promote" in commands and "rollback" in commands
    assert commands.index("promote") < commands.index("rollback")
    assert sla.model_repository


WITH_STEPS = MINIMAL + "model_repository: repo\nrollout:\n"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("  - {at_s: 1, command: canary, model: m, version: '2'}", "needs `version` and `percent`"),
        ("  - {at_s: 1, command: promote, model: m, percent: 5}", "`percent` is only for a canary"),
        ("  - {at_s: 1, command: rollback, model: m, version: '1'}", "takes no `version`"),
        ("  - {at_s: 1, command: launch, model: m}", "rollout[0].command"),
        ("  - {at_s: 5, command: promote, model: m}\n  - {at_s: 2, command: rollback, model: m}",
         "must be in time order"),
        ("  - {at_s: 10, command: promote, model: m}", "must come before the measured window ends"),
    ],
)  # fmt: skip
def test_bad_rollout_steps_are_named(steps: str, message: str) -> None:
    with pytest.raises(SlaError) as caught:
        parse_sla(WITH_STEPS + steps, "bad.yaml")
    assert message in str(caught.value)


def test_rollout_steps_need_the_repository() -> None:
    with pytest.raises(SlaError, match="set model_repository"):
        parse_sla(MINIMAL + "rollout:\n  - {at_s: 1, command: rollback, model: m}\n")
