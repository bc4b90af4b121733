"""The deployment files give a stopping gateway the time its settings ask for.

On SIGTERM the gateway serves for `drain_s`, then closes within `shutdown_grace_s`: Kubernetes'
terminationGracePeriodSeconds and Compose's stop_grace_period must exceed both together, or the
gateway is killed with requests in flight. Readiness must turn within the drain window, and gRPC
connections must be recycled within it so they leave before the gateway closes them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.deploy.deploy_support import REPO_ROOT, Dockerfile

GATEWAY_DEPLOYMENT = REPO_ROOT / "deploy" / "k8s" / "base" / "gateway-deployment.yaml"
GATEWAY_CONFIGMAP = REPO_ROOT / "deploy" / "k8s" / "base" / "gateway-configmap.yaml"
# grpc-core spreads connection ages by up to 10% either way
CONNECTION_AGE_JITTER = 1.1


def setting(env: dict[str, Any], name: str) -> float:
    """The value a gateway started with `env` gets: the variable if set, else the default."""
    value = env.get(f"MODELGATE_{name.upper()}")
    if value is None:
        default = Settings.model_fields[name].default
        assert isinstance(default, float), f"{name} has no numeric default"
        return default
    return float(value)


def stop_budget_s(env: dict[str, Any]) -> float:
    return setting(env, "drain_s") + setting(env, "shutdown_grace_s")


def duration_s(text: str) -> float:
    """A Compose duration such as `20s`, `1m30s`."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    assert parts is not None and text, f"unsupported duration {text!r}"
    minutes, seconds = (int(p) if p else 0 for p in parts.groups())
    return 60.0 * minutes + seconds


def gateway_pod() -> dict[str, Any]:
    spec = yaml.safe_load(GATEWAY_DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def configmap_env() -> dict[str, Any]:
    data = yaml.safe_load(GATEWAY_CONFIGMAP.read_text())["data"]
    assert isinstance(data, dict)
    return data


def dockerfile_env(dockerfile: Dockerfile) -> dict[str, str]:
    text = " ".join(dockerfile.stage("gateway").all("ENV"))
    return dict(re.findall(r"\b(MODELGATE_\w+)=(\S+)", text))


def test_kubernetes_waits_longer_than_drain_and_grace() -> None:
    pod = gateway_pod()
    assert pod["terminationGracePeriodSeconds"] > stop_budget_s(configmap_env())


def test_kubernetes_gateway_has_no_pre_stop_hook() -> None:
    """A preStop hook runs before SIGTERM and eats into the same grace period uncounted."""
    (container,) = gateway_pod()["containers"]
    assert "preStop" not in container.get("lifecycle", {})


def test_readiness_probe_notices_the_drain_within_the_window() -> None:
    (container,) = gateway_pod()["containers"]
    probe = container["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
    noticed_after_s = probe["periodSeconds"] * probe["failureThreshold"]
    assert noticed_after_s <= setting(configmap_env(), "drain_s")


def test_compose_waits_longer_than_drain_and_grace(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert duration_s(gateway["stop_grace_period"]) > stop_budget_s(gateway["environment"])


@pytest.mark.parametrize("source", ["docker-compose.yml", "gateway-configmap.yaml", "Dockerfile"])
def test_grpc_connections_are_recycled_within_the_drain_window(
    source: str, compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    env = {
        "docker-compose.yml": compose["services"]["gateway"]["environment"],
        "gateway-configmap.yaml": configmap_env(),
        "Dockerfile": dockerfile_env(dockerfile),
    }[source]
    age_s = float(env["MODELGATE_GRPC_MAX_CONNECTION_AGE_S"])
    assert age_s * CONNECTION_AGE_JITTER < setting(env, "drain_s")
