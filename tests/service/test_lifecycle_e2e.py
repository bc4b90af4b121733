"""Live load and unload with zero failed requests: a real Triton in explicit model-control mode
behind a real gateway that watches its repository, under 8 concurrent clients sending real
digit images. Every answer is checked against the ONNX file of the version it names."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from service.local_triton import LocalTriton, LocalTritonError
from service.model_contract import CONFIG_FILE, MODEL_FILE
from tests.service.load_clients import Answer, LoadClients
from tests.service.rest.conftest import RunningGateway
from tests.service.rest.payloads import digit_pngs
from tests.service.versioned_repository import (
    MODEL,
    V2_LABELS,
    VersionReference,
    add_version,
    copy_model,
    set_version_policy,
)

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

API_KEY = "lifecycle-secret"
AUTH = {"authorization": f"Bearer {API_KEY}"}
CLIENTS = 8
LOAD_S = 10.0  # traffic on each side of every change, at least
ATOL = 1e-4


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    """digits_cnn version 1 only, the config's policy (latest 1) untouched."""
    root = tmp_path_factory.mktemp("lifecycle") / "repository"
    copy_model(model_repository, root)
    return root


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[LocalTriton]:
    """Triton in explicit model-control mode, every model loaded at start (as `modelgate up`)."""
    server = LocalTriton(repository, model_control_mode="explicit", load_models=["*"])
    try:
        server.start()
    except LocalTritonError as exc:
        pytest.fail(f"cannot start Triton in explicit mode: {exc}", pytrace=False)
    yield server
    server.stop()


def start_gateway(repository: Path, triton: LocalTriton, **overrides: Any) -> RunningGateway:
    values: dict[str, Any] = {
        "model_repository": repository,
        "triton_url": triton.grpc_url,
        "api_key": API_KEY,
        "watch_interval_s": 0.25,
        # A request of a version whose directory was deleted waits for its successor to load
        # (a few seconds on a busy 2-core machine); the default 5 s would be tight here.
        "request_timeout_s": 30.0,
    }
    values.update(overrides)
    return RunningGateway.on_free_ports(**values).start()


@pytest.fixture(scope="module")
def gateway(repository: Path, triton: LocalTriton) -> Iterator[RunningGateway]:
    running = start_gateway(repository, triton)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return digit_pngs(count=8)[0]


@pytest.fixture
def version_2(repository: Path, gateway: RunningGateway) -> Iterator[Path]:
    """Where version 2 goes; removed again after the test, and the gateway back on version 1."""
    model_dir = repository / MODEL
    yield model_dir / "2"
    if (model_dir / "2").exists():
        shutil.rmtree(model_dir / "2")
    httpclient.InferenceServerClient(gateway.url.removeprefix("http://")).load_model(
        MODEL, headers=AUTH
    )


def expected_answers(model_dir: Path, images: list[bytes]) -> dict[str, list[dict[str, float]]]:
    """Per version on disk, each image's probabilities from that version's own ONNX file."""
    reference = VersionReference(model_dir)
    return {
        version: [reference.probabilities(version, image) for image in images]
        for version in reference.specs
    }


def check_answers(answers: list[Answer], expected: dict[str, list[dict[str, float]]]) -> None:
    """No failure, and every answer equals the ONNX output of the version it names."""
    failures = [a for a in answers if a.status != 200]
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
    for answer in answers:
        assert answer.version in expected, answer
        wanted = expected[answer.version][answer.image]
        for label, probability in answer.probabilities.items():
            assert probability == pytest.approx(wanted[label], abs=ATOL), (answer, wanted)


def metric(gateway: RunningGateway, name: str, **labels: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def test_admin_calls_need_the_key(gateway: RunningGateway) -> None:
    http = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    for call in (
        lambda: http.get_model_repository_index(),
        lambda: http.load_model(MODEL),
        lambda: http.unload_model(MODEL),
    ):
        with pytest.raises(InferenceServerException, match="API key") as caught:
            call()
        assert caught.value.status() == "401"
    grpc_client = grpcclient.InferenceServerClient(gateway.grpc_url)
    for call in (
        lambda: grpc_client.get_model_repository_index(),
        lambda: grpc_client.load_model(MODEL),
        lambda: grpc_client.unload_model(MODEL),
    ):
        with pytest.raises(InferenceServerException, match="API key") as caught:
            call()
        assert caught.value.status() == str(grpc.StatusCode.UNAUTHENTICATED)
    index = http.get_model_repository_index(headers=AUTH)
    assert index == [{"name": MODEL, "version": "1", "state": "READY", "reason": ""}]
    grpc_index = grpc_client.get_model_repository_index(headers=AUTH, as_json=True)
    assert grpc_index["models"] == [{"name": MODEL, "version": "1", "state": "READY"}]
    http.close()
    grpc_client.close()


def test_admin_can_be_switched_off(repository: Path, triton: LocalTriton) -> None:
    gateway = start_gateway(repository, triton, admin_enabled=False, watch_interval_s=0)
    try:
        response = httpx.post(f"{gateway.url}/v2/repository/index", headers=AUTH)
        assert response.status_code == 403 and "switched off" in response.json()["error"]
        client = grpcclient.InferenceServerClient(gateway.grpc_url)
        with pytest.raises(InferenceServerException, match="switched off") as caught:
            client.load_model(MODEL, headers=AUTH)
        assert caught.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)
        client.close()
    finally:
        gateway.stop()


def test_admin_load_and_unload_with_stock_tritonclient(
    gateway: RunningGateway,
    triton: LocalTriton,
    repository: Path,
    version_2: Path,
    images: list[bytes],
) -> None:
    add_version(repository / MODEL, 2, seed=2, labels=V2_LABELS)
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    client.load_model(MODEL, headers=AUTH)  # returns once version 2 serves
    url = f"{gateway.url}/v1/models/{MODEL}/predict"
    upload = [("files", ("d.png", images[0], "image/png"))]
    answer = httpx.post(url, files=upload, headers=AUTH).json()
    assert answer["version"] == "2" and answer["predictions"][0]["label"] in V2_LABELS
    assert client.is_model_ready(MODEL, "2", headers=AUTH)
    assert not client.is_model_ready(MODEL, "1", headers=AUTH)  # latest 1: version 1 left
    direct = grpcclient.InferenceServerClient(triton.grpc_url)  # and Triton unloaded it
    assert direct.is_model_ready(MODEL, "2") and not direct.is_model_ready(MODEL, "1")
    direct.close()
    client.unload_model(MODEL, headers=AUTH)
    assert httpx.post(url, files=upload, headers=AUTH).status_code == 404
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {(m["version"], m["state"], m["reason"]) for m in index} == {
        ("1", "UNAVAILABLE", "unloaded"),
        ("2", "UNAVAILABLE", "unloaded"),
    }
    http = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    http.load_model(MODEL, headers=AUTH)
    assert httpx.post(url, files=upload, headers=AUTH).json()["version"] == "2"
    http.close()
    client.close()


def test_two_versions_by_policy_then_one_when_the_newest_is_removed(
    gateway: RunningGateway,
    triton: LocalTriton,
    repository: Path,
    version_2: Path,
    images: list[bytes],
) -> None:
    """latest 2: both serve; removing version 2 moves traffic to the loaded version 1 first,
    then Triton drops version 2."""
    model_dir = repository / MODEL
    config = model_dir / CONFIG_FILE
    original = config.read_text()
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    direct = grpcclient.InferenceServerClient(triton.grpc_url)
    url = f"{gateway.url}/v1/models/{MODEL}"
    upload = [("files", ("d.png", images[0], "image/png"))]
    try:
        add_version(model_dir, 2, seed=2, labels=V2_LABELS)
        set_version_policy(model_dir, "latest { num_versions: 2 }")
        client.load_model(MODEL, headers=AUTH)
        assert direct.is_model_ready(MODEL, "1") and direct.is_model_ready(MODEL, "2")
        assert httpx.post(f"{url}/predict", files=upload, headers=AUTH).json()["version"] == "2"
        pinned = httpx.post(f"{url}/versions/1/predict", files=upload, headers=AUTH).json()
        assert pinned["version"] == "1" and pinned["predictions"][0]["label"] not in V2_LABELS
        version_2.rename(repository.parent / "removed-by-policy-test")
        client.load_model(MODEL, headers=AUTH)
        assert httpx.post(f"{url}/predict", files=upload, headers=AUTH).json()["version"] == "1"
        assert direct.is_model_ready(MODEL, "1") and not direct.is_model_ready(MODEL, "2")
    finally:
        config.write_text(original)
        client.close()
        direct.close()


@pytest.mark.slow  # at least 10 s of load on each side of a change
def test_new_version_takes_over_and_removal_returns_traffic_under_load(
    gateway: RunningGateway, repository: Path, version_2: Path, images: list[bytes]
) -> None:
    model_dir = repository / MODEL
    expected = expected_answers(model_dir, images)  # version 1 (latest 1 of what is on disk)
    load = LoadClients(gateway.url, f"/v1/models/{MODEL}/predict", images, CLIENTS, AUTH).start()
    try:
        time.sleep(2.0)
        added = time.monotonic()
        add_version(model_dir, 2, seed=2, labels=V2_LABELS)
        expected.update(expected_answers(model_dir, images))  # and version 2
        switched = load.wait_for_version("2", since=added)
        time.sleep(LOAD_S)
        # Once version 2 answered, every unpinned answer comes from it (latest 1).
        assert load.versions_since(switched + 1.0) == {"2"}
        # Take version 2 away: its directory leaves the model (as `rm -r`, atomically).
        version_2.rename(repository.parent / "removed-2")
        removed = time.monotonic()
        back = load.wait_for_version("1", since=removed)
        time.sleep(LOAD_S)
        assert load.versions_since(back + 1.0) == {"1"}
    finally:
        answers = load.stop()
        print(f"\n{load.summary()}")  # the run's figures (shown with pytest -s)
    check_answers(answers, expected)
    assert {a.version for a in answers if a.finished < removed} >= {"1", "2"}
    assert len(answers) >= 100, len(answers)
    assert metric(gateway, "modelgate_model_loads_total", model=MODEL, outcome="success") >= 2


@pytest.mark.slow  # at least 10 s of load on each side of a change
def test_corrupt_version_under_load_keeps_the_old_one_serving(
    gateway: RunningGateway, repository: Path, version_2: Path, images: list[bytes]
) -> None:
    model_dir = repository / MODEL
    expected = expected_answers(model_dir, images)
    failures_before = metric(gateway, "modelgate_model_loads_total", model=MODEL, outcome="failure")
    load = LoadClients(gateway.url, f"/v1/models/{MODEL}/predict", images, CLIENTS, AUTH).start()
    try:
        time.sleep(2.0)
        staging = repository.parent / "corrupt-2"
        staging.mkdir()
        onnx = (model_dir / "1" / MODEL_FILE).read_bytes()
        (staging / MODEL_FILE).write_bytes(onnx[: len(onnx) // 2])  # a truncated copy
        staging.rename(version_2)
        give_up = time.monotonic() + 60
        while metric(gateway, "modelgate_model_load_failed", model=MODEL) != 1:
            assert time.monotonic() < give_up, "the failed load was not reported"
            time.sleep(0.2)
        time.sleep(LOAD_S)
    finally:
        answers = load.stop()
        print(f"\n{load.summary()}")  # the run's figures (shown with pytest -s)
    check_answers(answers, expected)
    assert {a.version for a in answers} == {"1"}
    assert len(answers) >= 100, len(answers)
    assert (
        metric(gateway, "modelgate_model_loads_total", model=MODEL, outcome="failure")
        == failures_before + 1
    )
    index = httpclient.InferenceServerClient(
        gateway.url.removeprefix("http://")
    ).get_model_repository_index(headers=AUTH)
    rows = {row["version"]: row for row in index}
    assert rows["1"]["state"] == "READY"
    assert rows["2"]["state"] == "UNAVAILABLE" and "does not load" in rows["2"]["reason"]
    response = httpx.post(f"{gateway.url}/v2/repository/models/{MODEL}/load", headers=AUTH)
    assert response.status_code == 400 and "does not load" in response.json()["error"]


def test_embedded_backend_loads_and_unloads_live(
    tmp_path: Path, model_repository: Path, images: list[bytes]
) -> None:
    """The same lifecycle without Triton: in-process ONNX Runtime sessions per version."""
    root = tmp_path / "repository"
    model_dir = copy_model(model_repository, root)
    gateway = RunningGateway.on_free_ports(
        model_repository=root, backend="embedded", watch_interval_s=0.1
    ).start()
    url = f"{gateway.url}/v1/models/{MODEL}/predict"
    upload = [("files", ("d.png", images[0], "image/png"))]
    try:
        assert httpx.post(url, files=upload, params={"top_k": 10}).json()["version"] == "1"
        add_version(model_dir, 2, seed=2, labels=V2_LABELS)
        expected = expected_answers(model_dir, images)["2"][0]
        give_up = time.monotonic() + 30
        while (answer := httpx.post(url, files=upload, params={"top_k": 10}).json())[
            "version"
        ] != "2":
            assert time.monotonic() < give_up, "version 2 was not loaded"
            time.sleep(0.1)
        for item in answer["predictions"][0]["top_k"]:
            assert item["probability"] == pytest.approx(expected[item["label"]], abs=ATOL)
        response = httpx.post(f"{gateway.url}/v2/repository/models/{MODEL}/unload")
        assert response.status_code == 200
        assert httpx.post(url, files=upload).status_code == 404
    finally:
        gateway.stop()
