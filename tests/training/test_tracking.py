"""`modelgate build` of a small model, end to end, into a temporary repository and MLflow store.

One epoch of digits_cnn keeps each build to seconds; the run is then read back
with MLflow's own client, as a person comparing builds in the MLflow UI would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from modelgate.cli import app
from service import model_contract as contract
from training import recipes, tracking

MODEL = "digits_cnn"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


def _build(repo: Path, store: str, *extra: str) -> str:
    """`modelgate build` of one epoch of MODEL; returns the command's output."""
    result = CliRunner().invoke(
        app,
        ["build", "-r", str(repo), "-m", MODEL, "--epochs", "1", "--tracking-uri", store, *extra],
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, store: str) -> Path:
    repo = tmp_path_factory.mktemp("first") / "model_repository"
    _build(repo, store)
    return repo


def _record(repo: Path) -> dict:
    return json.loads((repo / MODEL / contract.EVALUATION_FILE).read_text())


def _run_id(repo: Path) -> str:
    reference = json.loads((repo / MODEL / "1" / contract.RUN_FILE).read_text())
    return str(reference["run_id"])


def test_version_directory_names_its_run(built: Path, store: str) -> None:
    reference = json.loads((built / MODEL / "1" / contract.RUN_FILE).read_text())
    assert reference["tracking_uri"] == store
    assert reference["experiment"] == tracking.EXPERIMENT
    run = mlflow.MlflowClient(store).get_run(reference["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == MODEL
    assert _record(built)["run"]["run_id"] == reference["run_id"]
    card = (built / MODEL / contract.CARD_FILE).read_text()
    assert f"MLflow run `{reference['run_id']}`" in card


def test_show_prints_the_run_id(built: Path) -> None:
    result = CliRunner().invoke(app, ["show", "-r", str(built)])
    assert result.exit_code == 0, result.output
    assert f"MLflow run {_run_id(built)}" in result.output


def test_run_holds_parameters(built: Path, store: str) -> None:
    client = mlflow.MlflowClient(store)
    run_id = _run_id(built)
    params = client.get_run(run_id).data.params
    training = _record(built)["training"]
    # The recipe's own settings, but the one epoch asked for.
    expected = {
        "optimizer": "AdamW",
        "schedule": "OneCycleLR",
        "epochs": "1",
        "threads": "2",
        **{k: str(training[k]) for k in ("seed", "clip_norm", "learning_rate", "batch_size")},
        "weight_decay": str(training["weight_decay"]),
    }
    assert {k: params[k] for k in expected} == expected
    architecture = Path(client.download_artifacts(run_id, "architecture.txt")).read_text()
    assert architecture.startswith(f"{params['architecture']}(")
    assert params["version.torch"] == tracking.package_versions()["torch"]
    assert params["version.mlflow"] == mlflow.__version__


def test_run_holds_per_epoch_and_final_metrics(built: Path, store: str) -> None:
    client = mlflow.MlflowClient(store)
    run_id = _run_id(built)
    record = _record(built)
    for key in ("train_loss", "held_out_loss", "held_out_accuracy_torch"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [1], key
    losses = client.get_metric_history(run_id, "train_loss")
    assert round(losses[0].value, 5) == record["training"]["epoch_losses"][0]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["held_out_accuracy"] == pytest.approx(record["held_out"]["accuracy"])
    assert metrics["worst_group_accuracy"] == record["groups"]["worst"]["accuracy"]
    assert metrics["train_seconds"] > 0
    assert metrics["export_seconds"] > 0


def test_run_holds_the_artifacts(built: Path, store: str) -> None:
    client = mlflow.MlflowClient(store)
    run_id = _run_id(built)
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"parity.json", "environment.txt", "architecture.txt", "model"} <= names
    model_files = {a.path for a in client.list_artifacts(run_id, "model")}
    for file in (
        contract.MODEL_FILE,
        contract.CARD_FILE,
        contract.EVALUATION_FILE,
        contract.CONFIG_FILE,
    ):
        assert f"model/{file}" in model_files
    local = Path(client.download_artifacts(run_id, f"model/{contract.MODEL_FILE}"))
    assert local.read_bytes() == (built / MODEL / "1" / contract.MODEL_FILE).read_bytes()
    parity = json.loads(Path(client.download_artifacts(run_id, "parity.json")).read_text())
    assert parity == _record(built)["parity"]
    environment = Path(client.download_artifacts(run_id, "environment.txt")).read_text()
    assert f"mlflow=={mlflow.__version__}" in environment.splitlines()


def test_run_records_the_data_fingerprints(built: Path, store: str) -> None:
    run = mlflow.MlflowClient(store).get_run(_run_id(built))
    data = {d["name"]: d for d in _record(built)["data"]}
    assert {"digits train", "digits held-out", "digits held-out inverted"} <= set(data)
    logged = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(logged) == set(data)
    for name, fingerprint in data.items():
        assert logged[name].dataset.digest == fingerprint["sha256"][:36]
        context = {t.key: t.value for t in logged[name].tags}["mlflow.data.context"]
        assert context == ("training" if name.endswith(" train") else "evaluation")
    card = (built / MODEL / contract.CARD_FILE).read_text()
    for fingerprint in data.values():
        assert f"`{fingerprint['sha256'][:16]}`" in card


def test_unchanged_rebuild_reproduces_fingerprints_and_figures(
    built: Path, store: str, tmp_path: Path
) -> None:
    again = tmp_path / "model_repository"
    _build(again, store)
    first, second = _record(built), _record(again)
    assert second["run"]["run_id"] != first["run"]["run_id"]  # a new run ...
    assert second["data"] == first["data"]  # ... on the very same examples
    assert second["held_out"] == first["held_out"]  # fixed seeds: the same figures
    assert second["groups"] == first["groups"]
    assert second["training"]["epoch_losses"] == first["training"]["epoch_losses"]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_floor_above_the_worst_group_refuses_and_writes_nothing(
    built: Path, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worst = _record(built)["groups"]["worst"]
    floor = round(worst["accuracy"] + 0.005, 4)
    monkeypatch.setitem(recipes.RECIPES, MODEL, replace(recipes.RECIPES[MODEL], group_floor=floor))
    repo = tmp_path / "model_repository"
    shutil.copytree(built, repo)
    before = _tree_digest(repo)
    result = CliRunner().invoke(
        app,
        ["build", "-r", str(repo), "-m", MODEL, "--epochs", "1", "--tracking-uri", store],
    )
    assert result.exit_code == 1
    assert "build refused" in result.output
    assert f"{worst['dimension']} '{worst['group']}'" in result.output
    assert f"floor {floor:.4f}" in result.output
    assert _tree_digest(repo) == before  # the served model is untouched
    # The refused build is still a run, marked FAILED, that says why.
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment is not None
    failed = client.search_runs([experiment.experiment_id], "attributes.status = 'FAILED'")
    assert len(failed) == 1
    assert worst["group"] in failed[0].data.tags["refused"]
