"""Helpers of the deployment tests: parsed Dockerfile and manifests, local servers to start."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import stop_process as cli_stop_process
from tests.gateway_process import GatewayProcess, start_gateway_process

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
    settings: Mapping[str, object] | None = None,
) -> GatewayProcess:
    """`modelgate serve` configured the way the deployment files configure it: one worker, every
    Triton replica in MODELGATE_TRITON_URL (`settings`, by field name, adds or overrides)."""
    values = {
        "workers": 1,
        "model_repository": repository,
        "triton_url": ",".join(triton_urls),
        **(settings or {}),
    }
    return start_gateway_process(log_dir / "gateway.log", values)


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, then kill after `grace_s`: the CLI's own way of stopping a server."""
    cli_stop_process(process, grace_s)
