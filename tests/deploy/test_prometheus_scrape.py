"""A real Prometheus scrapes a real local stack (two Tritons, one gateway) with the deploy config.

The scrape config and alert rules are the ones in deploy/prometheus/, with only the compose
service addresses swapped for the local ports and the intervals shortened. After some traffic,
every PromQL expression of the Grafana dashboard and of the rules must evaluate without error
and return data. The stack serves a copy of the repository where digits_cnn has a second version
shadowing the first, so the routing and shadow-agreement series exist too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.local_triton import LocalTriton, free_port
from service.model_contract import ROUTING_FILE
from tests.conftest import running_triton
from tests.deploy.deploy_support import (
    REPO_ROOT,
    require_tool,
    start_gateway,
    stop_process,
    wait_until,
)
from tests.deploy.deploy_traffic import bad_requests, send, valid_requests
from tests.gateway_process import GatewayProcess
from tests.service.versioned_repository import MODEL, add_version, set_version_policy

pytestmark = [pytest.mark.prometheus, pytest.mark.triton, pytest.mark.gateway, pytest.mark.slow]

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "modelgate.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
# Grafana's variables, as the dashboard would expand them with every model selected.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$model": ".*"}
DATA_TIMEOUT_S = 60.0


def prometheus_binary() -> str:
    return require_tool("prometheus", "run scripts/ensure-prometheus.sh")


def local_config(targets: dict[str, list[str]], rule_file: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with local targets and 1 s intervals."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(rule_file)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), "every scrape job needs a local stand-in"
    for name, job in jobs.items():
        job["static_configs"] = [{"targets": targets[name]}]
    return config


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana variables expanded) for every dashboard query."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unexpanded variable in {panel['title']}: {expr}"
            found.append((f"{panel['title']} [{target['refId']}]", expr))
    return found


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def with_bool_comparisons(expr: str) -> str:
    """`a > b` becomes `a > bool b`: a threshold that is not crossed still returns its series.

    Comparison operators inside label matchers (`{...}`) and strings are left alone.
    """
    out: list[str] = []
    braces = 0
    quote: str | None = None
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote:
            out.append(char)
            if char == "\\":
                out.append(expr[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
            out.append(char)
        elif char == "{":
            braces += 1
            out.append(char)
        elif char == "}":
            braces -= 1
            out.append(char)
        elif braces == 0 and (match := re.match(r"==|!=|>=|<=|>|<", expr[i:])):
            out.append(match.group(0) + " bool")
            i += len(match.group(0))
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


class PrometheusServer:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.ready, 30.0, "Prometheus /-/ready")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        return result if data["resultType"] == "vector" else [result]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture(scope="module")
def shadow_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served repository, with digits_cnn version 2 (perturbed weights) shadowing version 1."""
    root = tmp_path_factory.mktemp("scrape") / "repository"
    shutil.copytree(model_repository, root)
    add_version(root / MODEL, 2, seed=2, labels=tuple(str(i) for i in range(10)))
    set_version_policy(root / MODEL, "latest { num_versions: 2 }")
    (root / MODEL / ROUTING_FILE).write_text(json.dumps({"weights": {"1": 100}, "shadow": "2"}))
    return root


@pytest.fixture(scope="module")
def stack(
    shadow_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, list[LocalTriton]]]:
    """Two Tritons and one gateway over both, on `shadow_repository`."""
    with ExitStack() as stack:
        tritons = [stack.enter_context(running_triton(shadow_repository, "a scrape Triton"))]
        tritons.append(stack.enter_context(running_triton(shadow_repository, "a scrape Triton")))
        gateway = stack.enter_context(
            start_gateway(
                shadow_repository,
                [server.grpc_url for server in tritons],
                tmp_path_factory.mktemp("gateway"),
            )
        )
        yield gateway, tritons


@pytest.fixture(scope="module")
def prometheus(
    stack: tuple[GatewayProcess, list[LocalTriton]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    gateway, tritons = stack
    targets = {
        "modelgate": [gateway.address],
        "triton": [f"{server.host}:{server.metrics_port}" for server in tritons],
    }
    workdir = tmp_path_factory.mktemp("prometheus")
    server = PrometheusServer(local_config(targets, RULES), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def traffic(
    stack: tuple[GatewayProcess, list[LocalTriton]], shadow_repository: Path
) -> Iterator[list[int]]:
    """Keeps a light, bounded request stream going while the module's checks run."""
    gateway, _ = stack
    good, bad = valid_requests(shadow_repository), bad_requests(shadow_repository)
    statuses: list[int] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=gateway.url) as client:
            for _ in range(400):  # bounded: about two minutes at most
                for request in good:
                    statuses.append(send(client, request).status_code)
                for request in bad:
                    statuses.append(send(client, request).status_code)
                if stop.wait(0.3):
                    return

    thread = threading.Thread(target=run, name="deploy-traffic", daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=30)


def wait_for_data(prometheus: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    """Poll until `expr` returns data; any evaluation error fails at once."""
    result: list[dict[str, Any]] = []

    def has_data() -> bool:
        nonlocal result
        result = prometheus.query(expr)
        return bool(result)

    wait_until(has_data, DATA_TIMEOUT_S, f"data for {expr}")
    return result


def test_bool_rewrite_leaves_matchers_alone() -> None:
    rewritten = with_bool_comparisons('a{x!="1",y=~"b"} > on (m) group_left c and d == 0')
    assert rewritten == 'a{x!="1",y=~"b"} > bool on (m) group_left c and d == bool 0'


def test_promtool_accepts_the_local_config(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "run scripts/ensure-prometheus.sh")
    config = local_config({"modelgate": ["127.0.0.1:1"], "triton": ["127.0.0.1:2"]}, RULES)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scrape_target_is_up(prometheus: PrometheusServer, traffic: list[int]) -> None:
    def all_up() -> bool:
        active = prometheus.api("targets")["activeTargets"]
        return len(active) == 3 and all(t["health"] == "up" for t in active)

    wait_until(all_up, 30.0, "all three scrape targets up")
    jobs = {t["labels"]["job"] for t in prometheus.api("targets")["activeTargets"]}
    assert jobs == {"modelgate", "triton"}


@pytest.mark.parametrize(
    ("title", "expr"), dashboard_expressions(), ids=[t for t, _ in dashboard_expressions()]
)
def test_dashboard_query_returns_data(
    prometheus: PrometheusServer, traffic: list[int], title: str, expr: str
) -> None:
    assert wait_for_data(prometheus, expr), title


def test_dashboard_model_variable_lists_every_model(
    prometheus: PrometheusServer, traffic: list[int], model_repository: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]["query"])
    assert match, variable["query"]
    metric, label = match.groups()
    models = {p.parent.name for p in model_repository.glob("*/preprocessing.json")}

    def listed() -> bool:
        return models <= set(prometheus.api(f"label/{label}/values", **{"match[]": metric}))

    wait_until(listed, DATA_TIMEOUT_S, f"every model in label_values({metric}, {label})")


@pytest.mark.parametrize(
    "rule", rules(), ids=lambda r: r.get("alert") or f"{r['record']}{r.get('labels', '')}"
)
def test_rule_evaluates_and_has_data(
    prometheus: PrometheusServer, traffic: list[int], rule: dict[str, Any]
) -> None:
    expr = rule["expr"]
    prometheus.query(expr)  # the rule as written evaluates without error
    if "alert" in rule:
        # Healthy traffic crosses no threshold; the series the alert compares must still exist.
        expr = with_bool_comparisons(expr)
        assert expr != rule["expr"], "an alert without a comparison"
    assert wait_for_data(prometheus, expr), rule


def test_prometheus_evaluates_every_rule_without_error(
    prometheus: PrometheusServer, traffic: list[int]
) -> None:
    expected = {r.get("alert") or r["record"] for r in rules()}

    def evaluated() -> bool:
        groups = prometheus.api("rules")["groups"]
        return all(
            rule.get("lastEvaluation", "").startswith("2") for g in groups for rule in g["rules"]
        )

    wait_until(evaluated, 30.0, "every rule evaluated once")
    seen = set()
    for group in prometheus.api("rules")["groups"]:
        for rule in group["rules"]:
            seen.add(rule["name"])
            assert rule["health"] == "ok", rule
    assert seen == expected
    assert traffic and all(status in {200, 400, 404, 415, 422} for status in traffic), set(traffic)
