"""Run a real Triton Inference Server on the model repository without Docker.

The `nvidia-pytriton` wheel ships a real `tritonserver` binary (with the Python
backend and one backend stub per Python version). `LocalTriton` prepares those
files once in a cache directory, points Triton at the project's Python-based
`onnxruntime` backend (`backends/onnxruntime/model.py`) so every
`backend: "onnxruntime"` model loads unchanged, starts the server in its own
process group on the chosen (or free) ports, waits for `/v2/health/ready`, and
stops the whole group again.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.metadata
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from service.model_contract import is_model_dir

ModelControlMode = Literal["none", "poll", "explicit"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"
DEFAULT_BACKENDS_DIR = PROJECT_ROOT / "backends"
SHIM_BACKEND_NAME = "onnxruntime"

# Environment overrides (documented in docs/local-triton.md).
ENV_CACHE_DIR = "MODELGATE_TRITON_CACHE_DIR"
ENV_BACKENDS_DIR = "MODELGATE_TRITON_BACKENDS_DIR"

# The Python backend's shared-memory pool starts small and grows on demand,
# which keeps several servers on one small machine cheap (same values pytriton uses).
SHM_DEFAULT_BYTES = 4 * 1024 * 1024
SHM_GROWTH_BYTES = 1024 * 1024
LOG_TAIL_LINES = 15
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
# Triton waits this long on SIGTERM for in-flight work and open client connections
# (idle keep-alive connections count too, so the 30 s default mostly waits for nothing).
EXIT_TIMEOUT_S = 5
STOP_GRACE_S = EXIT_TIMEOUT_S + 15.0


TRITON_TRACE_SERVICE_NAME = "triton"


def trace_args(otlp_url: str, service_name: str = TRITON_TRACE_SERVICE_NAME) -> list[str]:
    """tritonserver flags that export OpenTelemetry spans to `otlp_url` (OTLP/HTTP, e.g.
    `http://127.0.0.1:4318/v1/traces`) for exactly the requests that carry a W3C `traceparent`:
    `rate=0` samples nothing on its own, and Triton traces every request with a propagated
    context regardless of rate. The gateway sends one with each batch of a traced request, so
    Triton's spans land in the request's trace; untraced traffic costs Triton nothing."""
    return [
        "--trace-config=mode=opentelemetry",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=rate=0",
        "--trace-config=count=-1",
        f"--trace-config=opentelemetry,url={otlp_url}",
        f"--trace-config=opentelemetry,resource=service.name={service_name}",
    ]


class LocalTritonError(RuntimeError):
    """A launcher failure with a one-line message that says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option tritonserver uses, so a port in TIME_WAIT does not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _pytriton_dist() -> tuple[Path, Path, str]:
    """Locate the server files and shared libraries inside the nvidia-pytriton wheel."""
    try:
        version = importlib.metadata.version("nvidia-pytriton")
        dist = importlib.metadata.distribution("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        raise LocalTritonError(
            "nvidia-pytriton is not installed: install the server with "
            "`pip install -c constraints.txt -e '.[triton]'`"
        ) from None
    site_packages = Path(str(dist.locate_file("")))
    server_dir = site_packages / "pytriton" / "tritonserver"
    libs_dir = site_packages / "nvidia_pytriton.libs"
    if not (server_dir / "bin" / "tritonserver").is_file() or not libs_dir.is_dir():
        raise LocalTritonError(
            f"nvidia-pytriton {version} at {site_packages} has no tritonserver binary: "
            "reinstall it with `pip install --force-reinstall nvidia-pytriton`"
        )
    return server_dir, libs_dir, version


def default_cache_root() -> Path:
    """Where prepared server files live: $MODELGATE_TRITON_CACHE_DIR or ~/.cache/modelgate."""
    configured = os.environ.get(ENV_CACHE_DIR)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "modelgate"


def prepare_server_files(cache_root: Path | None = None) -> tuple[Path, Path]:
    """Copy the server files once into the cache; return (server dir, shared-library dir).

    The copy carries the backend stub for the running Python, so the cache key
    is the wheel version plus the Python version. Preparation writes to a
    temporary directory and renames it into place, so concurrent first starts
    never see a half-copied server.
    """
    check_platform()
    source_dir, libs_dir, version = _pytriton_dist()
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = cache_root if cache_root is not None else default_cache_root()
    target = root / f"tritonserver-pytriton{version}-py{python_version}"
    stub_name = "triton_python_backend_stub"
    if (target / "backends" / "python" / stub_name).is_file():
        return target, libs_dir

    stub = source_dir / "python_backend_stubs" / python_version / stub_name
    if not stub.is_file():
        raise LocalTritonError(
            f"nvidia-pytriton {version} ships no Python backend stub for Python "
            f"{python_version}: use Python 3.8-3.13"
        )
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tritonserver-", dir=root))
    try:
        shutil.copytree(
            source_dir,
            staging / "server",
            ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"),
        )
        shutil.copy2(stub, staging / "server" / "backends" / "python" / stub_name)
        try:
            (staging / "server").rename(target)
        except OSError:
            if not (target / "backends" / "python" / stub_name).is_file():
                raise
            # Another process prepared the same version first; use its copy.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, libs_dir


def check_platform() -> None:
    """The bundled binary is built for Linux x86-64 only."""
    machine = platform.machine().lower()
    if sys.platform != "linux" or machine not in {"x86_64", "amd64"}:
        raise LocalTritonError(
            f"the pip-shipped tritonserver runs on Linux x86-64 only (this is {sys.platform} "
            f"{machine}): run the repository with the nvcr.io/nvidia/tritonserver image instead"
        )


def check_repository(repository: Path) -> list[str]:
    """Fail early and clearly on a missing or empty repository; return its model names."""
    if not repository.is_dir():
        raise LocalTritonError(
            f"model repository {repository} does not exist: build it with `modelgate build` "
            "or pass --repository"
        )
    models = sorted(p.name for p in repository.iterdir() if is_model_dir(p))
    if not models:
        raise LocalTritonError(
            f"model repository {repository} has no <model>/config.pbtxt: build it with "
            "`modelgate build` or pass --repository"
        )
    return models


# Errors tritonserver always logs on a machine without a GPU; they are not the cause.
HARMLESS_ERRORS = ("CudaDriverHelper", "NVML", "DCGM", "GPU metrics", "CUDA driver")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The lines of a server log that explain a failure, on one line.

    Error lines (`E<date>` records), models marked UNAVAILABLE in the load table
    and the final `error:` line come first; otherwise the last `lines` lines.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    all_lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    important = [
        line
        for line in all_lines
        if (line[:1] == "E" and line[1:5].isdigit() and not any(h in line for h in HARMLESS_ERRORS))
        or "UNAVAILABLE" in line
        or line.startswith("error:")
    ]
    kept = important[-lines:] if important else all_lines[-lines:]
    # Python tracebacks arrive as literal "\\n" inside one record: keep the message only.
    return " | ".join(line.split("\\n")[0].strip("| ")[:400] for line in kept)


def _terminate_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launching process dies.

    A test run killed by a timeout (os._exit, no teardown) or a SIGKILLed CLI would
    otherwise leave the server and its stubs running. Linux only, like the binary;
    note the signal follows the launching *thread*, so start servers from a
    long-lived thread (the main thread in the CLI and in pytest).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalTriton:
    """A real `tritonserver` process serving `repository` on local ports.

    Use as a context manager (`with LocalTriton(repo) as server: ...`) or call
    `start()` (which waits until ready) and `stop()`. Ports left as None are
    picked free at construction time.
    """

    def __init__(
        self,
        repository: Path = DEFAULT_REPOSITORY,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        *,
        host: str = "127.0.0.1",
        model_control_mode: ModelControlMode = "none",
        load_models: Sequence[str] = (),
        backends_dir: Path | None = None,
        cache_root: Path | None = None,
        log_verbose: int = 0,
        trace_otlp_url: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.host = host
        self.http_port = http_port if http_port is not None else free_port(host)
        self.grpc_port = grpc_port if grpc_port is not None else free_port(host)
        self.metrics_port = metrics_port if metrics_port is not None else free_port(host)
        self.model_control_mode: ModelControlMode = model_control_mode
        self.load_models = tuple(load_models)
        env_backends = os.environ.get(ENV_BACKENDS_DIR)
        self.backends_dir = (
            backends_dir
            if backends_dir is not None
            else Path(env_backends)
            if env_backends
            else DEFAULT_BACKENDS_DIR
        ).resolve()
        self.cache_root = cache_root
        self.log_verbose = log_verbose
        self.trace_otlp_url = trace_otlp_url
        self.extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self.log_path: Path | None = None

    # -- endpoints -------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """`host:port` of the HTTP endpoint (the form tritonclient.http expects)."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """`host:port` of the gRPC endpoint (the form tritonclient.grpc expects)."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of Triton's Prometheus metrics."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------
    def command(self, server_dir: Path, backend_dir: Path) -> list[str]:
        """The tritonserver command line (public so the CLI can print it with --verbose)."""
        args = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--cache-directory={server_dir / 'caches'}",
            f"--model-control-mode={self.model_control_mode}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
            # A per-server prefix keeps several servers on one machine out of each
            # other's shared-memory regions.
            f"--backend-config=python,shm-region-prefix-name=modelgate-{uuid.uuid4().hex[:12]}-",
            f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
            f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        if self.trace_otlp_url:
            args += trace_args(self.trace_otlp_url)
        args += list(self.extra_args)
        return args

    def _environment(self, libs_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        ld_path = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{libs_dir}:{ld_path}" if ld_path else str(libs_dir)
        # The backend stub runs `python` from PATH: this interpreter's bin/ first, so
        # the stub sees this environment's numpy (<2) and onnxruntime.
        python_bin = str(Path(sys.executable).parent)
        env["PATH"] = f"{python_bin}:{env.get('PATH', '')}"
        env.setdefault("VIRTUAL_ENV", sys.prefix)
        return env

    def _backend_dir(self, run_dir: Path, server_dir: Path) -> Path:
        """A per-run backend directory: Triton's Python backend plus the project's shim.

        Symlinks, so the cached server stays shared and edits to the shim apply on
        the next start without re-preparing anything.
        """
        shim = self.backends_dir / SHIM_BACKEND_NAME / "model.py"
        if not shim.is_file():
            raise LocalTritonError(
                f"the onnxruntime backend {shim} is missing: run from a project checkout "
                f"or set {ENV_BACKENDS_DIR}"
            )
        backend_dir = run_dir / "backends"
        backend_dir.mkdir()
        (backend_dir / "python").symlink_to(server_dir / "backends" / "python")
        (backend_dir / SHIM_BACKEND_NAME).symlink_to(shim.parent)
        return backend_dir

    def start(self, wait: bool = True) -> LocalTriton:
        """Start the server; with `wait`, block until it is ready (or raise)."""
        if self.is_running():
            return self
        check_repository(self.repository)
        for name, port in (
            ("HTTP", self.http_port),
            ("gRPC", self.grpc_port),
            ("metrics", self.metrics_port),
        ):
            if port_in_use(port, self.host):
                raise LocalTritonError(
                    f"{name} port {port} on {self.host} is already in use: stop what holds it "
                    f"or choose another with --{name.lower()}-port"
                )
        server_dir, libs_dir = prepare_server_files(self.cache_root)
        self._run_dir = Path(tempfile.mkdtemp(prefix="modelgate-triton-"))
        backend_dir = self._backend_dir(self._run_dir, server_dir)
        self.log_path = self._run_dir / "tritonserver.log"
        with self.log_path.open("wb") as log:
            try:
                self._process = subprocess.Popen(
                    self.command(server_dir, backend_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(libs_dir),
                    cwd=self._run_dir,
                    # Own process group: stop() signals the server and its backend stubs together.
                    start_new_session=True,
                    preexec_fn=_terminate_with_parent,
                )
            except OSError as exc:
                self._cleanup_run_dir()
                raise LocalTritonError(
                    f"cannot run {server_dir / 'bin' / 'tritonserver'} ({exc.strerror}): "
                    f"delete {server_dir} and retry, or reinstall nvidia-pytriton"
                ) from None
        if wait:
            try:
                self.wait_ready(self.ready_timeout_s)
            except BaseException:
                self.stop()
                raise
        return self

    def _ready(self) -> bool:
        url = f"http://{self.host}:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until `/v2/health/ready` answers 200; raise LocalTritonError otherwise."""
        if self._process is None:
            raise LocalTritonError("the server was not started: call start() first")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise LocalTritonError(self._exit_message(code))
            if self._ready():
                return
            time.sleep(0.2)
        tail = _tail(self.log_path) if self.log_path else ""
        raise LocalTritonError(
            f"tritonserver was not ready within {timeout:.0f}s (log {self.log_path}): {tail}"
        )

    def _exit_message(self, code: int) -> str:
        log = self.log_path
        tail = _tail(log) if log else ""
        text = log.read_text(errors="replace") if log and log.is_file() else ""
        if "error while loading shared libraries" in text or code == 127:
            hint = "the bundled binary cannot run here (missing system libraries)"
        elif "ddress already in use" in text:
            hint = "a port is already in use: choose other ports"
        elif "failed to load" in text or "failed to stat" in text or "Invalid argument" in text:
            hint = "the model repository is broken: fix the model named below"
        else:
            hint = "see the server log"
        return f"tritonserver exited with code {code} ({hint}; log {log}): {tail}"

    def stop(self, timeout: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the server, SIGKILL its process group after `timeout`; return the exit code.

        Only the server gets SIGTERM: it unloads its models and stops its backend
        stubs itself (a stub killed first leaves the server waiting for it).
        """
        process = self._process
        if process is None:
            return None
        code = process.poll()
        # A server that exited by itself failed: keep its log for the error message.
        failed = code not in (0, None)
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
        # Backend stubs exit with the server; reap any that outlived it in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._process = None
        self._cleanup_run_dir(keep_log=failed)
        return code

    def _cleanup_run_dir(self, keep_log: bool = False) -> None:
        if self._run_dir is None:
            return
        if keep_log:
            # Keep the log of a failed run for inspection; drop only the symlinked backends.
            shutil.rmtree(self._run_dir / "backends", ignore_errors=True)
        else:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_until_stopped(server: LocalTriton, announce: Callable[[str], None] = print) -> int:
    """Start `server`, announce its endpoints, block until Ctrl-C/SIGTERM or server exit.

    Returns the exit status for the command line: 0 after a requested stop, 1 when
    the server died on its own. SIGTERM is turned into the same clean stop as Ctrl-C.
    """

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        server.start()
        announce(f"Triton ready, serving {server.repository}")
        announce(f"  HTTP     http://{server.http_url}")
        announce(f"  gRPC     {server.grpc_url}")
        announce(f"  metrics  {server.metrics_url}")
        announce(f"  log      {server.log_path}")
        announce("Press Ctrl-C to stop.")
        while server.is_running():
            time.sleep(0.5)
        code = server.stop()
        tail = _tail(server.log_path) if server.log_path else ""
        raise LocalTritonError(f"tritonserver exited unexpectedly with code {code}: {tail}")
    except KeyboardInterrupt:
        announce("Stopping Triton ...")
        code = server.stop()
        announce(f"Triton stopped (exit code {code}).")
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
