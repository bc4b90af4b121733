"""Every gateway setting the deployment files set is a field of service.settings.Settings.

pydantic-settings ignores unknown MODELGATE_* variables, so a misspelt or renamed setting would
otherwise be dropped without a word in the image, the compose file or the ConfigMap.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from service.settings import Settings
from tests.deploy.deploy_support import REPO_ROOT, Dockerfile

PREFIX = "MODELGATE_"


def settings_fields() -> set[str]:
    return {PREFIX + name.upper() for name in Settings.model_fields}


def deployment_settings(compose: dict[str, Any], dockerfile: Dockerfile) -> dict[str, set[str]]:
    gateway_env = " ".join(dockerfile.stage("gateway").all("ENV"))
    configmap = yaml.safe_load(
        (REPO_ROOT / "deploy" / "k8s" / "base" / "gateway-configmap.yaml").read_text()
    )
    return {
        "Dockerfile": set(re.findall(rf"\b({PREFIX}\w+)=", gateway_env)),
        "docker-compose.yml": set(compose["services"]["gateway"]["environment"]),
        "gateway-configmap.yaml": set(configmap["data"]),
    }


def test_deployment_files_set_only_known_settings(
    compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    known = settings_fields()
    for source, names in deployment_settings(compose, dockerfile).items():
        assert names, source
        assert names <= known, f"{source}: unknown settings {sorted(names - known)}"


def test_compose_and_kubernetes_set_the_same_settings(
    compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    found = deployment_settings(compose, dockerfile)
    assert found["docker-compose.yml"] == found["gateway-configmap.yaml"]
    assert found["docker-compose.yml"] <= found["Dockerfile"]
