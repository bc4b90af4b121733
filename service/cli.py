"""The `modelgate` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="modelgate: train, export and serve models behind Triton.",
    pretty_exceptions_enable=False,
)

RepositoryOption = Annotated[
    Path, typer.Option("--repository", "-r", help="Triton model repository directory.")
]


@app.callback()
def main() -> None:
    """modelgate command line."""


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
) -> None:
    """Train every model on its real data, export to ONNX, check parity and write the repository."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # The ONNX exporter's optimiser logs every rewrite at INFO; keep the build's progress readable.
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Imported here: the serving image has no torch.
    from training.build import build as build_repository
    from training.recipes import RECIPES

    unknown = sorted(set(model or []) - set(RECIPES))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; known: {sorted(RECIPES)}")
    build_repository(repository, model, new_version)
    show(repository)


@app.command()
def show(repository: RepositoryOption = Path("model_repository")) -> None:
    """List the models in the repository with their versions and held-out accuracy."""
    if not repository.is_dir():
        typer.echo(f"error: no model repository at {repository}; run `modelgate build`", err=True)
        raise typer.Exit(2)
    for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        summary = ""
        evaluation = model_dir / "evaluation.json"
        if evaluation.is_file():
            record = json.loads(evaluation.read_text())
            held_out = record["held_out"]
            summary = f"held-out accuracy {held_out['accuracy']:.4f} (n={held_out['size']})"
        typer.echo(f"{model_dir.name:<20} versions {versions}  {summary}")
