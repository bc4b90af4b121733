"""A real `modelgate serve` process on free ports, for the tests that need a separate process
(signals, several workers, the CLI's own start-up): started, waited for, stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from service.cli import stop_process, wait_for_gateway
from service.local_triton import free_port
from service.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 40


@dataclass
class GatewayProcess:
    """A running `modelgate serve` and where to reach it; a context manager that stops it."""

    process: subprocess.Popen[bytes]
    url: str
    grpc_address: str
    log_path: Path

    @property
    def address(self) -> str:
        """host:port of the HTTP listener (what a Prometheus target or a balancer takes)."""
        return self.url.removeprefix("http://")

    def workers(self) -> list[psutil.Process]:
        """uvicorn's live worker processes: spawned children (multiprocessing's resource tracker
        is another child); a killed one not yet reaped is left out."""
        workers = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    workers.append(child)
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue
        return workers

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace_s`; nothing if it has exited."""
        stop_process(self.process, grace_s)

    def kill(self) -> None:
        """SIGKILL at once (for tests that already sent their own signals); reaps the process."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def worker_counters(worker: psutil.Process, scratch: Path) -> CollectorRegistry:
    """The counters one worker of a multi-worker gateway wrote to its own multiprocess metrics
    file, read from a copy in `scratch` (the collector reads every file of a directory, and
    /metrics sums all workers); empty before the worker's first count."""
    registry = CollectorRegistry()
    counter = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"]) / f"counter_{worker.pid}.db"
    if counter.is_file():
        own = scratch / str(worker.pid)
        own.mkdir(exist_ok=True)
        shutil.copy(counter, own / counter.name)
        MultiProcessCollector(registry, path=str(own))
    return registry


def settings_env(settings: Mapping[str, object]) -> dict[str, str]:
    """MODELGATE_* variables for `Settings` field names; an unknown name is a test's typo."""
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"not gateway settings: {', '.join(unknown)}")
    return {f"MODELGATE_{name.upper()}": str(value) for name, value in settings.items()}


def start_gateway_process(
    log_path: Path,
    settings: Mapping[str, object],
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> GatewayProcess:
    """`modelgate serve` with `settings` (Settings field names) on free HTTP and gRPC ports unless
    `settings` names them, logging to `log_path`; returns once /readyz answers 200.

    `env` adds other variables (OTEL_*, PROMETHEUS_MULTIPROC_DIR), `args` command-line options.
    The log level is `warning` and there is one worker unless `settings` says otherwise. Fails
    the test with the log's tail if the process exits or is not ready within `ready_timeout_s`
    (and kills it then).
    """
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "grpc_port": free_port(),
        "log_level": "warning",
        "workers": 1,  # one process to signal and inspect, unless the test asks for more
        **settings,
    }
    python_path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "PYTHONPATH": python_path, **settings_env(values), **(env or {})}
    command = [sys.executable, "-m", "service.cli", "serve", *args]
    with log_path.open("wb") as log:
        # Its own session: a Ctrl-C in the terminal reaches only pytest, whose teardown stops it.
        process = subprocess.Popen(
            command, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    # A gateway bound to every interface is reached on the loopback one.
    host = "127.0.0.1" if values["host"] == "0.0.0.0" else values["host"]
    gateway = GatewayProcess(
        process=process,
        url=f"http://{host}:{values['port']}",
        grpc_address=f"{host}:{values['grpc_port']}",
        log_path=log_path,
    )
    try:
        wait_for_gateway(gateway.url, process, ready_timeout_s)
    except RuntimeError as problem:
        gateway.kill()
        pytest.fail(f"{problem}; the log ({log_path}) ends:\n{gateway.log_tail()}", pytrace=False)
    except BaseException:  # interrupted while waiting: nothing else would stop it
        gateway.kill()
        raise
    return gateway
