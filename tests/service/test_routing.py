"""Routing policy: weights hold statistically, clients stick, bad files are refused clearly."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.model_contract import ROUTING_FILE
from service.routing import (
    RoutingFileError,
    RoutingMetrics,
    RoutingPolicy,
    RoutingTable,
    client_point,
    parse_policy,
    write_policy,
)

VERSIONS = {"1", "2", "3"}
DRAWS = 2_000
# Each version's count over DRAWS is binomial(DRAWS, share); the tests accept 4.5 standard
# deviations either side, which a correct router fails with probability below 1e-5 per check.
SIGMAS = 4.5


def assert_split(counts: Counter[str], weights: dict[str, float], draws: int) -> None:
    for version, percent in weights.items():
        share = percent / 100.0
        sigma = math.sqrt(draws * share * (1 - share))
        expected = draws * share
        assert abs(counts[version] - expected) <= SIGMAS * sigma, (version, counts, expected)


@pytest.mark.parametrize(
    "weights",
    [{"1": 90, "2": 10}, {"1": 50, "2": 50}, {"1": 70, "2": 20, "3": 10}, {"1": 99, "2": 1}],
    ids=["90-10", "50-50", "70-20-10", "99-1"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unkeyed_requests_follow_the_weights(weights: dict[str, float], seed: int) -> None:
    policy = parse_policy("m", {"weights": weights}, VERSIONS)
    policy = RoutingPolicy("m", policy.weights, draw=random.Random(seed).random)
    counts = Counter(policy.pick() for _ in range(DRAWS))
    assert set(counts) <= set(weights)
    assert_split(counts, weights, DRAWS)


@pytest.mark.parametrize("weights", [{"1": 90, "2": 10}, {"1": 70, "2": 20, "3": 10}])
def test_distinct_clients_follow_the_weights(weights: dict[str, float]) -> None:
    policy = parse_policy("m", {"weights": weights}, VERSIONS)
    counts = Counter(policy.pick(f"client-{i}") for i in range(DRAWS))
    assert_split(counts, weights, DRAWS)


def test_a_client_always_gets_the_same_version() -> None:
    policy = parse_policy("m", {"weights": {"1": 50, "2": 50}}, VERSIONS)
    for client in ("alice", "bob", "a" * 300, "ünïcode"):
        assert len({policy.pick(client) for _ in range(50)}) == 1


def test_stickiness_is_the_same_in_another_process() -> None:
    """Not Python's hash(), which is salted per process."""
    clients = [f"client-{i}" for i in range(20)]
    code = (
        "import json,sys; from service.routing import client_point; "
        f"print(json.dumps([client_point('m', c) for c in {clients!r}]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == [client_point("m", c) for c in clients]


def test_clients_are_split_per_model() -> None:
    """Being in one model's canary slice says nothing about another model's."""
    points = [(client_point("a", f"c{i}"), client_point("b", f"c{i}")) for i in range(200)]
    assert sum(1 for a, b in points if (a < 0.5) == (b < 0.5)) < 150


def test_raising_the_canary_keeps_its_clients() -> None:
    small = parse_policy("m", {"weights": {"1": 90, "2": 10}}, VERSIONS)
    large = parse_policy("m", {"weights": {"1": 80, "2": 20}}, VERSIONS)
    clients = [f"c{i}" for i in range(1000)]
    on_small = {c for c in clients if small.pick(c) == "2"}
    on_large = {c for c in clients if large.pick(c) == "2"}
    assert on_small and on_small < on_large


def test_one_version_needs_no_draw() -> None:
    def never() -> float:
        raise AssertionError("drew a number for a single-version policy")

    policy = RoutingPolicy("m", {"1": 0.0, "2": 100.0}, draw=never)
    assert policy.pick() == "2" and policy.pick("x") == "2"


def test_primary_canaries_and_shadow() -> None:
    policy = parse_policy("m", {"weights": {"1": 90, "2": 10}, "shadow": "3"}, VERSIONS)
    assert policy.primary == "1" and policy.canaries == ["2"]
    assert policy.shadow_for("1") == "3" and policy.shadow_for("3") is None
    assert parse_policy("m", policy.to_json(), VERSIONS) == policy


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"weights": {"1": 100}, "shadw": "2"}, "unknown field(s) ['shadw']"),
        ({}, 'needs "weights"'),
        ({"weights": {}}, 'needs "weights"'),
        ({"weights": {"9": 100}}, "version '9', which is not served (served: 1, 2, 3)"),
        ({"weights": {"1": 90, "2": 20}}, "must sum to 100; they sum to 110"),
        ({"weights": {"1": 45, "2": 45}}, "must sum to 100; they sum to 90"),
        ({"weights": {"1": 110, "2": -10}}, "must not be negative"),
        ({"weights": {"1": "100"}}, "must be a number"),
        ({"weights": {"1": True}}, "must be a number"),
        ({"weights": {"1": float("nan")}}, "must be a number"),
        ({"weights": {"1": 100}, "shadow": "7"}, "shadow names version '7'"),
        ({"weights": {"1": 100}, "shadow": "1"}, "shadow version 1 already takes all traffic"),
        ({"weights": {"1": 100}, "previous": 4}, "previous names version '4'"),
        ({"weights": {"1": 100}, "shadow": ""}, "must be a version number"),
    ],
)
def test_invalid_routing_is_refused_with_the_reason(data: object, message: str) -> None:
    with pytest.raises(RoutingFileError) as caught:
        parse_policy("m", data, VERSIONS, "digits_cnn/routing.json")
    assert str(caught.value).startswith("digits_cnn/routing.json: ")
    assert message in str(caught.value)


def test_weights_within_rounding_are_accepted() -> None:
    policy = parse_policy("m", {"weights": {"1": 33.333, "2": 33.333, "3": 33.334}}, VERSIONS)
    assert sorted(policy.weights) == ["1", "2", "3"]


# --- the table the gateway keeps -------------------------------------------------------------


def weight_samples(registry: CollectorRegistry, model: str) -> dict[str, float]:
    return {
        s.labels["version"]: s.value
        for metric in registry.collect()
        if metric.name == "modelgate_routing_weight"
        for s in metric.samples
        if s.labels["model"] == model
    }


def rejected(registry: CollectorRegistry, model: str) -> float:
    value = registry.get_sample_value("modelgate_routing_rejected_total", {"model": model})
    return value or 0.0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    return tmp_path


def write(repo: Path, data: object) -> None:
    path = repo / "m" / ROUTING_FILE
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    # A new mtime even within the file system's timestamp granularity.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_the_table_follows_the_file(repo: Path) -> None:
    registry = CollectorRegistry()
    table = RoutingTable(repo, {"m": ["1", "2"]}, RoutingMetrics(registry))
    assert table.policy("m") is None
    assert weight_samples(registry, "m") == {"1": 0.0, "2": 100.0}  # newest takes all

    write(repo, {"weights": {"1": 80, "2": 20}, "shadow": "2"})
    assert table.refresh() == ["m"]
    policy = table.policy("m")
    assert policy is not None and policy.weights == {"1": 80.0, "2": 20.0}
    assert weight_samples(registry, "m") == {"1": 80.0, "2": 20.0}
    assert table.refresh() == []  # unchanged file: not read again

    (repo / "m" / ROUTING_FILE).unlink()
    assert table.refresh() == ["m"] and table.policy("m") is None
    assert weight_samples(registry, "m") == {"1": 0.0, "2": 100.0}


@pytest.mark.parametrize(
    "content", ["{not json", '{"weights": {"1": 50}}', '{"weights": {"5": 100}}']
)
def test_a_bad_file_keeps_the_routing_in_force(repo: Path, content: str) -> None:
    registry = CollectorRegistry()
    write(repo, {"weights": {"1": 100}})
    table = RoutingTable(repo, {"m": ["1", "2"]}, RoutingMetrics(registry))
    before = table.policy("m")
    assert before is not None and before.weights == {"1": 100.0}

    write(repo, content)
    assert table.refresh() == []
    assert table.policy("m") == before
    assert rejected(registry, "m") == 1
    assert "m" in table.errors() and ROUTING_FILE in table.errors()["m"]
    assert table.refresh() == [] and rejected(registry, "m") == 1  # refused once, not per round

    write(repo, {"weights": {"2": 100}})
    assert table.refresh() == ["m"] and table.errors() == {}


def test_served_versions_change_revalidates(repo: Path) -> None:
    registry = CollectorRegistry()
    write(repo, {"weights": {"1": 50, "3": 50}})
    table = RoutingTable(repo, {"m": ["1", "2"]}, RoutingMetrics(registry))
    assert table.policy("m") is None and "m" in table.errors()  # version 3 not served yet
    table.sync({"m": ["1", "2", "3"]})
    policy = table.policy("m")
    assert policy is not None and policy.weights == {"1": 50.0, "3": 50.0}
    assert weight_samples(registry, "m") == {"1": 50.0, "2": 0.0, "3": 50.0}

    (repo / "m" / ROUTING_FILE).unlink()
    table.sync({"m": ["2", "3"]})  # version 1 unloaded: its series goes
    assert weight_samples(registry, "m") == {"2": 0.0, "3": 100.0}


def test_a_model_loaded_later_is_followed(repo: Path) -> None:
    (repo / "late").mkdir()
    (repo / "late" / ROUTING_FILE).write_text(json.dumps({"weights": {"1": 100}}))
    table = RoutingTable(repo, {"m": ["1"]}, RoutingMetrics(CollectorRegistry()))
    assert table.policy("late") is None
    table.sync({"m": ["1"], "late": ["1", "2"]})
    policy = table.policy("late")
    assert policy is not None and policy.weights == {"1": 100.0}


def test_write_policy_is_atomic_and_leaves_no_temporary_file(repo: Path) -> None:
    path = repo / "m" / ROUTING_FILE
    policy = parse_policy("m", {"weights": {"1": 60, "2": 40}, "previous": "1"}, VERSIONS)
    write_policy(path, policy)
    assert json.loads(path.read_text()) == {"weights": {"1": 60, "2": 40}, "previous": "1"}
    assert [p.name for p in path.parent.iterdir()] == [ROUTING_FILE]
    write_policy(path, None)
    assert not path.exists()
