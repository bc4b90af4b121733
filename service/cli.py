"""The `modelgate` command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from service.local_triton import (
    DEFAULT_REPOSITORY,
    LocalTriton,
    LocalTritonError,
    serve_until_stopped,
)

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


@app.command()
def triton(
    repository: Path = typer.Option(
        DEFAULT_REPOSITORY, "--repository", "-r", help="Triton model repository to serve."
    ),
    http_port: int = typer.Option(8000, envvar="MODELGATE_TRITON_HTTP_PORT", help="HTTP port."),
    grpc_port: int = typer.Option(8001, envvar="MODELGATE_TRITON_GRPC_PORT", help="gRPC port."),
    metrics_port: int = typer.Option(
        8002, envvar="MODELGATE_TRITON_METRICS_PORT", help="Prometheus metrics port."
    ),
    host: str = typer.Option(
        "127.0.0.1", envvar="MODELGATE_TRITON_HOST", help="Address to listen on (0.0.0.0: all)."
    ),
    model_control_mode: str = typer.Option(
        "none", help="Triton model control mode: none, poll or explicit."
    ),
    load_model: list[str] = typer.Option(
        [], "--load-model", help="Model to load at start (explicit mode; '*' for all)."
    ),
    log_verbose: int = typer.Option(0, help="Triton --log-verbose level."),
) -> None:
    """Run a real Triton Inference Server (pip-shipped binary) on the model repository."""
    if model_control_mode not in ("none", "poll", "explicit"):
        typer.echo("error: --model-control-mode must be none, poll or explicit", err=True)
        raise typer.Exit(2)
    server = LocalTriton(
        repository,
        http_port,
        grpc_port,
        metrics_port,
        host=host,
        model_control_mode=model_control_mode,  # type: ignore[arg-type]
        load_models=load_model,
        log_verbose=log_verbose,
    )
    try:
        raise typer.Exit(serve_until_stopped(server, typer.echo))
    except LocalTritonError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
