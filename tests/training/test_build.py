"""`modelgate build` rebuilds the whole repository from scratch, and adds new versions."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from modelgate.cli import app
from service import model_contract as contract
from service.repository import load_model
from training.recipes import RECIPES

COMMITTED = Path(__file__).resolve().parents[2] / "model_repository"

# Training all three models takes about two minutes on 2 idle cores; allow for a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    result = CliRunner().invoke(app, ["build", "--repository", str(repo)])
    assert result.exit_code == 0, result.output
    return repo


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_rebuild_reaches_the_committed_accuracy(rebuilt: Path, name: str) -> None:
    fresh = json.loads((rebuilt / name / contract.EVALUATION_FILE).read_text())
    committed = json.loads((COMMITTED / name / contract.EVALUATION_FILE).read_text())
    assert fresh["version"] == 1
    # Same data, seeds and code: the same model up to thread-order noise.
    assert fresh["held_out"]["accuracy"] >= committed["held_out"]["accuracy"] - 0.03
    assert all(c["max_abs_diff"] < 1e-4 for c in fresh["parity"]["cases"])
    # The build fits and calibrates the version's out-of-distribution detector.
    assert (rebuilt / name / "1" / contract.OOD_FILE).is_file()
    assert fresh["ood"]["false_positive_rate"] <= 0.05
    for config_file in (contract.CONFIG_FILE, contract.GPU_CONFIG_FILE):
        committed_config = (COMMITTED / name / config_file).read_text()
        assert (rebuilt / name / config_file).read_text() == committed_config


def test_new_version_is_added_beside_the_old_one(rebuilt: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", "--repository", str(rebuilt), "--model", "digits_cnn", "--new-version"]
    )
    assert result.exit_code == 0, result.output
    model_dir = rebuilt / "digits_cnn"
    assert (model_dir / "1" / contract.MODEL_FILE).is_file()
    assert (model_dir / "2" / contract.MODEL_FILE).is_file()
    record = json.loads((model_dir / contract.EVALUATION_FILE).read_text())
    assert record["version"] == 2
    config = contract.parse_config(model_dir / contract.CONFIG_FILE)
    assert config.version_policy.latest.num_versions == 1  # Triton serves version 2
    # Version 2 carries its own preprocessing and labels; version 1 keeps the model-level ones.
    for artifact in (contract.PREPROCESSING_FILE, contract.LABELS_FILE):
        assert contract.artifact_path(model_dir, 2, artifact) == model_dir / "2" / artifact
        assert contract.artifact_path(model_dir, 1, artifact) == model_dir / artifact
    spec = load_model(model_dir)
    assert (spec.version, spec.versions) == ("2", ("2",))


def test_unknown_model_is_refused() -> None:
    result = CliRunner().invoke(app, ["build", "--model", "nope"])
    assert result.exit_code != 0
    assert "unknown model" in result.output


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_rebuild_is_traced_with_groups_and_fingerprints(rebuilt: Path, name: str) -> None:
    fresh = json.loads((rebuilt / name / contract.EVALUATION_FILE).read_text())
    # (digits_cnn may already hold version 2 from the new-version test.)
    run = json.loads((rebuilt / name / str(fresh["version"]) / contract.RUN_FILE).read_text())
    assert run == fresh["run"]
    # The default store sits beside the repository; the version names a finished run in it.
    store = rebuilt.parent / "mlruns" / "mlflow.db"
    assert mlflow.MlflowClient(f"sqlite:///{store}").get_run(run["run_id"]).info.status == (
        "FINISHED"
    )
    assert fresh["groups"]["worst"]["accuracy"] >= RECIPES[name].group_floor
    assert any(d["name"].endswith(" train") for d in fresh["data"])
    card = (rebuilt / name / contract.CARD_FILE).read_text()
    assert "## Groups" in card
    assert f"Worst group overall: **{fresh['groups']['worst']['dimension']}" in card
