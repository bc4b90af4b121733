"""The `modelgate` command line."""

from __future__ import annotations

from pathlib import Path

import typer

from service.local_triton import (
    DEFAULT_REPOSITORY,
    LocalTriton,
    LocalTritonError,
    serve_until_stopped,
)

app = typer.Typer(
    no_args_is_help=True, help="modelgate: train, export and serve models behind Triton."
)


@app.callback()
def main() -> None:
    """modelgate command line."""


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
