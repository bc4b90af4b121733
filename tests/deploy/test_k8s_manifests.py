"""Kubernetes manifests: schema-valid (kubernetes-validate, offline schemas), render with kustomize,
and their names, labels, ports and probes agree with each other, the image and the compose file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.deploy_support import REPO_ROOT, Dockerfile, load_yaml_documents, require_tool

K8S = REPO_ROOT / "deploy" / "k8s"
BASE = K8S / "base"
Resource = dict[str, Any]
WORKLOADS = {"Deployment", "StatefulSet"}


def base_resources() -> list[Resource]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_yaml_documents(BASE / name)]


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise AssertionError(f"no {kind}/{name}")


def container(deployment: Resource) -> Resource:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def port_number(c: Resource, name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    return next(p["containerPort"] for p in c["ports"] if p["name"] == name_or_number)


def validate(resource: Resource) -> None:
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(
    "path", sorted(BASE.glob("*.yaml")) + sorted((K8S / "overlays").rglob("*.yaml")), ids=str
)
def test_every_manifest_is_valid_yaml(path: Path) -> None:
    assert load_yaml_documents(path)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


@pytest.mark.parametrize(
    "resource", base_resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_resource_validates_against_the_kubernetes_schema(resource: Resource) -> None:
    validate(resource)


def test_validator_rejects_a_misspelt_field() -> None:
    hpa = find(base_resources(), "HorizontalPodAutoscaler", "modelgate-gateway")
    broken = {**hpa, "spec": {**hpa["spec"], "minReplica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kustomize_renders_valid_resources(overlay: str) -> None:
    # kubectl >= 1.21 (kustomize v4+: `labels`, `patches` with targets); Debian 12's
    # kubernetes-client 1.20 cannot render these overlays.
    kubectl = require_tool("kubectl", "install kubectl 1.21 or later (it carries kustomize)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len(base_resources())
    for resource in rendered:
        validate(resource)
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "modelgate"
    triton = container(find(rendered, "StatefulSet", "modelgate-triton"))
    gpus = triton["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == (1 if overlay.endswith("gpu") else None)
    # The same server command line as the matching compose variant.
    compose_file = "docker-compose.gpu.yml" if overlay.endswith("gpu") else "docker-compose.yml"
    compose = yaml.safe_load((REPO_ROOT / compose_file).read_text())
    assert triton["args"] == compose["services"]["triton"]["command"]
    gateway = container(find(rendered, "Deployment", "modelgate-gateway"))
    assert gateway["image"] == "modelgate-gateway:0.1.0"


def test_services_select_pods_and_ports_that_exist() -> None:
    resources = base_resources()
    deployments = [r for r in resources if r["kind"] in WORKLOADS]
    for service in (r for r in resources if r["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matches = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, service["metadata"]["name"]
        c = container(matches[0])
        for port in service["spec"]["ports"]:
            port_number(c, port["targetPort"])  # raises StopIteration if the name is unknown
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_triton_statefulset(compose: dict[str, Any]) -> None:
    resources = base_resources()
    triton = find(resources, "StatefulSet", "modelgate-triton")
    c = container(triton)
    assert triton["spec"]["replicas"] >= 2
    assert triton["spec"]["podManagementPolicy"] == "Parallel"
    assert c["image"] == compose["services"]["triton"]["image"]
    assert c["args"] == compose["services"]["triton"]["command"]
    readiness = c["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/v2/health/ready"
    flags = dict(a.split("=", 1) for a in c["args"] if "=" in a)
    assert port_number(c, readiness["port"]) == int(flags["--http-port"])
    assert port_number(c, "grpc") == int(flags["--grpc-port"])
    assert port_number(c, "metrics") == int(flags["--metrics-port"])
    annotations = triton["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == int(flags["--metrics-port"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[flags["--model-repository"]]["readOnly"] is True
    assert "/dev/shm" in mounts


def test_gateway_lists_every_triton_replica_under_the_headless_service(
    dockerfile: Dockerfile,
) -> None:
    resources = base_resources()
    config = find(resources, "ConfigMap", "modelgate-gateway")["data"]
    triton = find(resources, "StatefulSet", "modelgate-triton")
    headless = find(resources, "Service", triton["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    (grpc,) = headless["spec"]["ports"]
    assert port_number(container(triton), grpc["targetPort"]) == grpc["port"]
    # One endpoint per replica, by the pod's stable DNS name under the headless Service.
    expected = [
        f"{triton['metadata']['name']}-{i}.{headless['metadata']['name']}:{grpc['port']}"
        for i in range(triton["spec"]["replicas"])
    ]
    assert config["MODELGATE_TRITON_URL"].split(",") == expected

    gateway = find(resources, "Deployment", "modelgate-gateway")
    c = container(gateway)
    assert c["envFrom"] == [{"configMapRef": {"name": "modelgate-gateway"}}]
    assert port_number(c, "http") == int(config["MODELGATE_PORT"])
    configured_ports = {int(v) for k, v in config.items() if k.endswith("PORT")}
    assert {p["containerPort"] for p in c["ports"]} == configured_ports
    exposed = {int(p) for line in dockerfile.stage("gateway").all("EXPOSE") for p in line.split()}
    assert {p["containerPort"] for p in c["ports"]} == exposed
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[config["MODELGATE_MODEL_REPOSITORY"]]["readOnly"] is True
    # The pod's user is the image's non-root user.
    user = dockerfile.stage("gateway").all("USER")[-1].split(":")[0]
    assert gateway["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)


def test_autoscaler_owns_the_gateway_replicas() -> None:
    resources = base_resources()
    hpa = find(resources, "HorizontalPodAutoscaler", "modelgate-gateway")
    target = hpa["spec"]["scaleTargetRef"]
    gateway = find(resources, target["kind"], target["name"])
    assert "replicas" not in gateway["spec"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert container(gateway)["resources"]["requests"]["cpu"]  # utilisation is relative to it


def test_volumes_refer_to_existing_claims() -> None:
    resources = base_resources()
    claims = {r["metadata"]["name"] for r in resources if r["kind"] == "PersistentVolumeClaim"}
    for deployment in (r for r in resources if r["kind"] in WORKLOADS):
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
