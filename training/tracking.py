"""MLflow experiment tracking for `modelgate build`: one run per model build.

Local by default: a SQLite store `mlruns/mlflow.db` next to the model
repository, artifacts in `mlruns/artifacts/`, nothing to start. Any other
tracking URI (a server, another database) is a setting: `--tracking-uri` or
MLflow's own `MLFLOW_TRACKING_URI`. The model repository's version directory
records the run id in `run.json`, so a served version leads back to its run.

Training-side only (the `train` extra): the gateway and its image never import this.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# MLflow 3 reports usage to its maintainers unless told not to; a build stays offline.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.meta_dataset import MetaDataset

from service.model_contract import RUN_FILE
from training.fingerprint import Fingerprint

EXPERIMENT = "modelgate"
STORE_DIR = "mlruns"
STORE_DB = "mlflow.db"
# Written into `<model>/<version>/`; Triton reads only the version's model.onnx.
# Installed versions recorded with every run (the full list goes in environment.txt).
KEY_PACKAGES = (
    "torch",
    "numpy",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "scikit-learn",
    "aeon",
    "wordfreq",
    "tokenizers",
    "mlflow",
)


def _metric_name(text: str) -> str:
    """MLflow keys allow letters, digits, `_ - . / `and space; anything else becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def group_metric(dimension: str, group: str) -> str:
    """The metric key of one group's accuracy, e.g. `group/speaker/speaker_3`."""
    return f"group/{_metric_name(dimension)}/{_metric_name(group)}"


def default_tracking_uri(repository: Path) -> str:
    """The local store beside the model repository: `<parent>/mlruns/mlflow.db`."""
    store = project_dir(repository) / STORE_DIR
    return f"sqlite:///{store / STORE_DB}"


def project_dir(repository: Path) -> Path:
    """The directory holding the model repository (and, by default, the MLflow store)."""
    return repository.resolve().parent


def _local_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside its database; a server chooses its own."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return (database.parent / "artifacts").resolve().as_uri()
    return None


def public_uri(tracking_uri: str) -> str:
    """The tracking URI without any user:password part (it is written into the repository)."""
    parts = urlsplit(tracking_uri)
    if parts.password is None and parts.username is None:
        return tracking_uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def recorded_uri(tracking_uri: str, project: Path) -> str:
    """The URI as written into the repository: no password, and a local store inside
    `project` relative to it (`sqlite:///mlruns/mlflow.db`), so a checkout elsewhere still
    finds it when `mlflow ui` runs from the project directory."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
        if database.is_relative_to(project.resolve()):
            return f"sqlite:///{database.relative_to(project.resolve())}"
    return public_uri(tracking_uri)


def package_versions() -> dict[str, str]:
    versions = {}
    for package in KEY_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def environment_listing() -> str:
    """Every installed distribution as `name==version`, sorted (a run's environment.txt)."""
    names = {
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]
    }
    return "\n".join(sorted(names, key=str.lower)) + "\n"


@dataclass(frozen=True)
class RunReference:
    """Where a model version's training run lives (the content of `run.json`)."""

    run_id: str
    experiment: str
    experiment_id: str
    tracking_uri: str

    def to_json(self) -> dict[str, str]:
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.tracking_uri,
        }


class BuildRun:
    """The active MLflow run of one model build."""

    def __init__(self, run: mlflow.ActiveRun, recorded_uri: str) -> None:
        self.reference = RunReference(
            run_id=run.info.run_id,
            experiment=EXPERIMENT,
            experiment_id=run.info.experiment_id,
            tracking_uri=recorded_uri,
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params({key: str(value) for key, value in params.items()})

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """One training epoch's figures, `epoch` counted from 1 (MLflow's step)."""
        for key, value in metrics.items():
            mlflow.log_metric(key, value, step=epoch)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        mlflow.log_metrics(dict(metrics))

    def log_datasets(self, fingerprints: Mapping[str, Fingerprint]) -> None:
        """Each dataset as an MLflow dataset input (digest = content hash) and as a tag.

        Context "training" for the training part, "evaluation" for everything else.
        """
        for fp in fingerprints.values():
            context = "training" if fp.name.endswith(" train") else "evaluation"
            source = CodeDatasetSource(
                {"package": fp.package, "version": fp.package_version, "split": fp.split}
            )
            # MetaDataset leaves `profile` to subclasses only nominally; MLflow instantiates it.
            dataset = MetaDataset(  # type: ignore[abstract]
                source=source,
                name=fp.name,
                digest=fp.sha256[:36],  # MLflow's digest column holds 36 characters
            )
            mlflow.log_input(dataset, context=context)
            mlflow.set_tag(f"data.{_metric_name(fp.name)}.sha256", fp.sha256)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_text(self, text: str, name: str) -> None:
        mlflow.log_text(text, name)

    def log_dict(self, value: Mapping[str, Any], name: str) -> None:
        mlflow.log_dict(dict(value), name)

    def set_tag(self, key: str, value: str) -> None:
        mlflow.set_tag(key, value)


def _experiment_id(tracking_uri: str) -> str:
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_root = _local_artifact_root(tracking_uri)
    return str(client.create_experiment(EXPERIMENT, artifact_location=artifact_root))


@contextmanager
def build_run(model: str, tracking_uri: str, project: Path) -> Iterator[BuildRun]:
    """An MLflow run for one model build; marked FAILED if the build raises (or is refused).

    `project` is the directory holding the model repository (see `recorded_uri`).
    """
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = _experiment_id(tracking_uri)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{model} build", tags={"model": model}
    ) as run:
        yield BuildRun(run, recorded_uri(tracking_uri, project))


def write_run_file(version_dir: Path, reference: RunReference) -> None:
    (version_dir / RUN_FILE).write_text(
        json.dumps(reference.to_json(), indent=2) + "\n", encoding="utf-8"
    )
