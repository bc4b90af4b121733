"""Helpers of the deployment tests: parsed Dockerfile and manifests, local servers to start."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.cli import stop_process as cli_stop_process
from service.local_triton import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    """A command-line tool from this interpreter's environment first, then from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def require_tool(name: str, hint: str) -> str:
    """The tool's path; outside CI a missing tool skips, in CI it fails (it must be installed)."""
    path = tool(name)
    if path is None:
        message = f"{name} not found: {hint}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Stage:
    """One build stage of a Dockerfile: its base, name and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}")

    def resolve(self, text: str) -> str:
        """Substitutes global ARG defaults (enough for FROM lines)."""
        for key, value in self.args.items():
            text = text.replace("${" + key + "}", value).replace("$" + key, value)
        return text


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = shlex.split(rest)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            global_args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args=global_args, stages=stages)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- the local stack: real Triton servers and a real gateway ------------------------------------


@dataclass
class Gateway:
    """A `modelgate serve` process on a local port."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    triton_urls: list[str]

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start_gateway(
    repository: Path,
    triton_urls: list[str],
    log_dir: Path,
    settings: dict[str, str] | None = None,
) -> Gateway:
    """`modelgate serve` configured the way the deployment files configure it: MODELGATE_* env
    (`settings` adds or overrides variables)."""
    port = free_port()
    log_path = log_dir / f"gateway-{port}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "MODELGATE_HOST": "127.0.0.1",
        "MODELGATE_PORT": str(port),
        "MODELGATE_GRPC_PORT": str(free_port()),
        "MODELGATE_WORKERS": "1",
        "MODELGATE_MODEL_REPOSITORY": str(repository),
        "MODELGATE_TRITON_URL": ",".join(triton_urls),
        "MODELGATE_LOG_LEVEL": "warning",
        **(settings or {}),
    }
    command = [sys.executable, "-c", "from service.cli import app; app()", "serve"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    gateway = Gateway(f"http://127.0.0.1:{port}", process, log_path, triton_urls)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{gateway.log_tail()}")
        try:
            return httpx.get(f"{gateway.url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60.0, f"the gateway's /readyz at {gateway.url}")
    except AssertionError:
        stop_process(process)
        raise
    return gateway


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, then kill after `grace_s`: the CLI's own way of stopping a server."""
    cli_stop_process(process, grace_s)
