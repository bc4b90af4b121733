"""The `modelgate build` command (merged into the command line by modelgate/cli.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from service.cli import RepositoryOption, show

app = typer.Typer()


@app.command()
def build(
    repository: RepositoryOption = Path("model_repository"),
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only this model (repeatable).")
    ] = None,
    new_version: Annotated[
        bool,
        typer.Option(help="Add the export as the next version instead of replacing version 1."),
    ] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow tracking URI for the build runs "
            "(default: sqlite store mlruns/mlflow.db beside the repository).",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Train this many epochs instead of the recipe's (experiments)."),
    ] = None,
    ood_only: Annotated[
        bool,
        typer.Option(
            help="Only fit and calibrate the out-of-distribution detector of each model's newest "
            "committed version (no retraining; the ONNX file and other figures stay as they are)."
        ),
    ] = False,
) -> None:
    """Train every model on its real data, export to ONNX, check parity and write the repository.

    Each model's build is one MLflow run; the version directory records its id in run.json.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # The ONNX exporter's optimiser logs every rewrite at INFO; keep the build's progress readable.
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Imported here: torch loads only when a build runs, not for every command.
    from training.build import build as build_repository
    from training.recipes import RECIPES
    from training.slices import GroupFloorError

    unknown = sorted(set(model or []) - set(RECIPES))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; known: {sorted(RECIPES)}")
    if ood_only:
        from training.ood import refit

        for name in model or sorted(RECIPES):
            figures = refit(repository / name)
            typer.echo(
                f"{name}: OOD threshold {figures['threshold']}, held-out false positives "
                f"{figures['false_positive_rate']:.2%}"
            )
        return
    try:
        build_repository(repository, model, new_version, tracking_uri, epochs)
    except GroupFloorError as refused:
        typer.echo(f"error: build refused: {refused}", err=True)
        raise typer.Exit(1) from None
    show(repository)


@app.command()
def profile(
    repository: RepositoryOption = Path("model_repository"),
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only this model (repeatable).")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(min=1, help="Profile this version instead of each model's newest."),
    ] = None,
) -> None:
    """Write the reference profile (reference_profile.json) of versions already built, without
    retraining: input-feature and output distributions on the held-out data, which the
    gateway's drift monitor compares live traffic with. `build` writes it for new versions."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from service.model_contract import is_model_dir, version_dirs
    from training.profile import write_profile

    dirs = {p.name: p for p in sorted(repository.iterdir()) if is_model_dir(p)}
    unknown = sorted(set(model or []) - set(dirs))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; in {repository}: {sorted(dirs)}")
    for name in model or list(dirs):
        versions = version_dirs(dirs[name])
        chosen = version if version is not None else versions[-1]
        if chosen not in versions:
            raise typer.BadParameter(f"{name} has no version {chosen} (versions: {versions})")
        typer.echo(write_profile(dirs[name], chosen))
