"""The `modelgate` command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from service import rollout_cli
from service.examples import curl_command
from service.local_triton import (
    DEFAULT_REPOSITORY,
    LocalTriton,
    LocalTritonError,
    port_in_use,
    serve_until_stopped,
)
from service.model_contract import EVALUATION_FILE, RUN_FILE, is_model_dir, version_dirs
from service.repository import RepositoryError, load_repository
from service.settings import Settings

# The gateway's commands; modelgate/cli.py adds training's and the load tests' beside them.
app = typer.Typer(
    no_args_is_help=True,
    help="modelgate gateway: serve the model repository behind Triton.",
    pretty_exceptions_enable=False,
)
app.add_typer(rollout_cli.app, name="rollout")

RepositoryOption = Annotated[
    Path, typer.Option("--repository", "-r", help="Triton model repository directory.")
]


@app.command()
def show(repository: RepositoryOption = Path("model_repository")) -> None:
    """List the models in the repository with their versions and held-out accuracy."""
    if not repository.is_dir():
        typer.echo(f"error: no model repository at {repository}; run `modelgate build`", err=True)
        raise typer.Exit(2)
    for model_dir in sorted(p for p in repository.iterdir() if is_model_dir(p)):
        versions = version_dirs(model_dir)
        summary = ""
        evaluation = model_dir / EVALUATION_FILE
        if evaluation.is_file():
            record = json.loads(evaluation.read_text())
            held_out = record["held_out"]
            summary = f"held-out accuracy {held_out['accuracy']:.4f} (n={held_out['size']})"
        if versions and (model_dir / str(versions[-1]) / RUN_FILE).is_file():
            run = json.loads((model_dir / str(versions[-1]) / RUN_FILE).read_text())
            summary += f"  MLflow run {run['run_id']}"
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
    otlp_url: str | None = typer.Option(
        None,
        envvar="MODELGATE_TRITON_OTLP_URL",
        help="Export OpenTelemetry spans of requests that carry a W3C traceparent to this "
        "OTLP/HTTP URL (e.g. http://127.0.0.1:4318/v1/traces).",
    ),
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
        trace_otlp_url=otlp_url or None,
    )
    try:
        raise typer.Exit(serve_until_stopped(server, typer.echo))
    except LocalTritonError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _settings_from(overrides: dict[str, object]) -> Settings:
    """Export command-line overrides as MODELGATE_* variables (workers read them), then validate."""
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"MODELGATE_{key.upper()}"] = str(value)
    try:
        settings = Settings()
        load_repository(settings.model_repository)
    except ValidationError as exc:
        typer.echo(f"error: invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from None
    except RepositoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to bind (MODELGATE_HOST)."),
    port: int | None = typer.Option(None, help="Port (MODELGATE_PORT)."),
    grpc_port: int | None = typer.Option(
        None, help="OIP gRPC port (MODELGATE_GRPC_PORT; MODELGATE_GRPC_ENABLED=false: none)."
    ),
    workers: int | None = typer.Option(
        None, help="uvicorn workers (MODELGATE_WORKERS; 0: what fits the machine)."
    ),
    triton_url: str | None = typer.Option(
        None, help="Triton host:port, comma-separated for several (MODELGATE_TRITON_URL)."
    ),
    backend: str | None = typer.Option(None, help="triton or embedded (MODELGATE_BACKEND)."),
    repository: Path | None = typer.Option(
        None, "--repository", "-r", help="Model repository (MODELGATE_MODEL_REPOSITORY)."
    ),
) -> None:
    """Run the gateway (settings from MODELGATE_* variables; options override them)."""
    import uvicorn

    from service import drain
    from service import workers as workers_module

    settings = _settings_from(
        {
            "host": host,
            "port": port,
            "grpc_port": grpc_port,
            "workers": workers,
            "triton_url": triton_url,
            "backend": backend,
            "model_repository": repository,
        }
    )
    count = workers_module.worker_count(settings)
    created: list[str] = []  # scratch directories made here, removed when the gateway exits
    if count > 1:
        # Each worker reads its settings from the environment: the count they share, where each
        # writes its metric samples (/metrics in any worker sums them), and where they share
        # admin loads and unloads.
        os.environ["MODELGATE_WORKERS"] = str(count)
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            created.append(tempfile.mkdtemp(prefix="modelgate-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = created[-1]
        if settings.admin_log is None:
            created.append(tempfile.mkdtemp(prefix="modelgate-workers-"))
            os.environ["MODELGATE_ADMIN_LOG"] = os.path.join(created[-1], "admin.jsonl")
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": count,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace_s)),
    }
    config = uvicorn.Config("service.app:create_app_from_env", **options)
    # SIGTERM: not ready at once, serve through the drain window, close cleanly, exit 0
    try:
        if count == 1:
            drain.run(config, settings.drain_s)
        else:
            drain.run_workers(config, settings.drain_s)
    finally:
        for directory in created:
            shutil.rmtree(directory, ignore_errors=True)


def wait_for_gateway(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll `url`/readyz until 200; fail early if the process exits. The error says why it never
    got ready: the exit code, or the last answer (status and body) or connection error."""
    give_up = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(
                f"the gateway exited with code {process.returncode} before it was ready"
            )
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2.0) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read().decode(errors='replace')[:200]}"
        except (urllib.error.URLError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise RuntimeError(
        f"the gateway at {url} was not ready within {timeout_s:.0f} s (last: {last})"
    )


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@app.command()
def up(
    host: str = typer.Option("127.0.0.1", help="Interface the gateway binds to."),
    port: int = typer.Option(8080, help="Gateway port."),
    grpc_port: int | None = typer.Option(
        None, help="Gateway OIP gRPC port (default: the gateway port + 1, as Triton's 8000/8001)."
    ),
    repository: Path = typer.Option(
        DEFAULT_REPOSITORY, "--repository", "-r", help="Model repository to serve."
    ),
    triton_protocol: str = typer.Option("grpc", help="How the gateway talks to Triton."),
    otlp_url: str | None = typer.Option(
        None,
        help="Trace requests: gateway and Triton export OpenTelemetry spans to this OTLP/HTTP "
        "URL (e.g. http://127.0.0.1:4318/v1/traces of a collector or Jaeger).",
    ),
) -> None:
    """Start the local Triton and the gateway, print URLs and examples, stop both on Ctrl-C."""
    if port_in_use(port, host):
        typer.echo(f"error: port {port} is already in use; choose another with --port", err=True)
        raise typer.Exit(1)
    grpc_port = grpc_port if grpc_port is not None else port + 1
    if port_in_use(grpc_port, host):
        typer.echo(f"error: port {grpc_port} is already in use; choose --grpc-port", err=True)
        raise typer.Exit(1)
    try:
        specs = load_repository(repository)
    except RepositoryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell without job control starts background commands with SIGINT
    # ignored, and Python then never raises KeyboardInterrupt, so Ctrl-C (or a
    # supervisor's SIGINT) would not stop `up` started that way.
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Explicit model control: Triton starts with every model, and the gateway loads, switches
    # and unloads versions live (service/lifecycle.py).
    triton = LocalTriton(
        repository,
        model_control_mode="explicit",
        load_models=["*"],
        trace_otlp_url=otlp_url or None,
    )
    gateway: subprocess.Popen[bytes] | None = None
    code = 0
    try:
        typer.echo("Starting Triton ...")
        triton.start()
        triton_url = triton.grpc_url if triton_protocol == "grpc" else triton.http_url
        env = {
            **os.environ,
            "MODELGATE_MODEL_REPOSITORY": str(repository),
            "MODELGATE_TRITON_URL": triton_url,
            "MODELGATE_TRITON_PROTOCOL": triton_protocol,
            "MODELGATE_HOST": host,
            "MODELGATE_PORT": str(port),
            "MODELGATE_GRPC_PORT": str(grpc_port),
        }
        if otlp_url:  # Triton speaks OTLP/HTTP only: the gateway uses the same endpoint
            env["MODELGATE_OTLP_ENDPOINT"] = otlp_url
            env["MODELGATE_OTLP_PROTOCOL"] = "http/protobuf"
        typer.echo("Starting the gateway ...")
        gateway = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env)
        base = f"http://{host}:{port}"
        wait_for_gateway(base, gateway, timeout_s=60)
        typer.echo("")
        typer.echo(f"modelgate is up: gateway {base} in front of Triton {triton.grpc_url} (gRPC)")
        typer.echo(f"  API docs     {base}/docs")
        typer.echo(f"  OIP          HTTP {base}/v2   gRPC {host}:{grpc_port} (tritonclient)")
        typer.echo(f"  health       {base}/healthz   {base}/readyz")
        typer.echo(f"  metrics      {base}/metrics   (Triton: {triton.metrics_url})")
        typer.echo(f"  Triton HTTP  http://{triton.http_url}   log {triton.log_path}")
        if otlp_url:
            typer.echo(f"  traces       OTLP/HTTP to {otlp_url} (gateway and Triton)")
        typer.echo("Try:")
        for spec in specs.values():
            typer.echo(f"  {curl_command(spec, base)}")
        typer.echo("Press Ctrl-C to stop both.")
        while gateway.poll() is None and triton.is_running():
            time.sleep(0.5)
        typer.echo("error: a server exited on its own; stopping the other", err=True)
        code = 1
    except KeyboardInterrupt:
        typer.echo("Stopping ...")
    except (LocalTritonError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    finally:
        if gateway is not None:
            fields = Settings.model_fields
            grace_s = fields["drain_s"].default + fields["shutdown_grace_s"].default + 5
            stop_process(gateway, grace_s=grace_s)
        triton.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        typer.echo("Stopped.")
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
