"""Routing and shadow through a real gateway in front of a real Triton serving two versions.

- canary weights hold over 1,200 unpinned requests; a named client stays on one version;
- a shadow version never changes the primary's answers (compared with shadow off), over REST,
  OIP HTTP and OIP gRPC, and its agreement metrics equal an offline comparison of the two
  versions' ONNX files run by ONNX Runtime on the same inputs;
- promote then rollback with `modelgate rollout` while concurrent clients call: no failed
  request, every answer labelled with the version that produced it.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from service import preprocess
from service.local_triton import LocalTriton
from service.model_contract import ROUTING_FILE
from service.repository import load_model_versions
from service.routing import CLIENT_HEADER, parse_policy
from tests.conftest import running_triton
from tests.service.rest.conftest import RunningGateway
from tests.service.rest.payloads import digit_pngs
from tests.service.versioned_repository import (
    MODEL,
    V2_LABELS,
    add_version,
    copy_model,
    set_version_policy,
)

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

RELOAD_S = 0.1
V1_LABELS = tuple(str(i) for i in range(10))
# Canary counts are binomial; 4.5 standard deviations either side fail a correct router with
# probability below 1e-5.
SIGMAS = 4.5


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    """digits_cnn versions 1 and 2 (perturbed weights, renamed labels), both served."""
    root = tmp_path_factory.mktemp("rollout") / "repository"
    model_dir = copy_model(model_repository, root)
    add_version(model_dir, 2, seed=2, labels=V2_LABELS)
    set_version_policy(model_dir, "latest { num_versions: 2 }")
    write_routing(root, {"weights": {"1": 100}})
    return root


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[LocalTriton]:
    with running_triton(repository, "Triton on the two-version repository") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(repository: Path, triton: LocalTriton) -> Iterator[RunningGateway]:
    running = RunningGateway.on_free_ports(
        model_repository=repository, triton_url=triton.grpc_url, routing_reload_s=RELOAD_S
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return digit_pngs(count=40)[0]


def write_routing(repository: Path, routing: dict[str, Any]) -> None:
    path = repository / MODEL / ROUTING_FILE
    staging = path.with_name(f".{ROUTING_FILE}.tmp")
    staging.write_text(json.dumps(routing))
    staging.replace(path)


def scrape(gateway: RunningGateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{gateway.url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def route(gateway: RunningGateway, repository: Path, routing: dict[str, Any]) -> None:
    """Write a routing file and wait until the gateway reports it in force."""
    write_routing(repository, routing)
    want = {v: float(w) for v, w in routing["weights"].items() if w}
    shadow = routing.get("shadow")
    give_up = time.monotonic() + 10
    while True:
        samples = scrape(gateway)
        weights = {
            dict(labels)["version"]: value
            for (name, labels), value in samples.items()
            if name == "modelgate_routing_weight" and dict(labels)["model"] == MODEL and value
        }
        shadows = {
            dict(labels)["version"]
            for (name, labels), value in samples.items()
            if name == "modelgate_routing_shadow" and dict(labels)["model"] == MODEL and value
        }
        if weights == want and shadows == ({shadow} if shadow else set()):
            return
        assert time.monotonic() < give_up, f"routing {routing} not applied: {weights} {shadows}"
        time.sleep(0.05)


def rest_predict(
    client: httpx.Client, image: bytes, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    body = {"inputs": [base64.b64encode(image).decode()], "top_k": 10}
    response = client.post(f"/v1/models/{MODEL}/predict", json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def labels_of(version: str) -> tuple[str, ...]:
    return V2_LABELS if version == "2" else V1_LABELS


# --- canary ----------------------------------------------------------------------------------


def test_canary_weights_hold_over_many_requests(
    gateway: RunningGateway, repository: Path, images: list[bytes]
) -> None:
    route(gateway, repository, {"weights": {"1": 80, "2": 20}})
    requests = 1_200

    local = threading.local()  # one keep-alive client per worker thread

    def one(i: int) -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=gateway.url, timeout=30)
        answer = rest_predict(local.client, images[i % len(images)])
        # The answer is labelled with its version, and its labels are that version's.
        assert answer["predictions"][0]["label"] in labels_of(answer["version"])
        return str(answer["version"])

    with ThreadPoolExecutor(8) as pool:
        counts = Counter(pool.map(one, range(requests)))
    sigma = math.sqrt(requests * 0.2 * 0.8)
    assert set(counts) == {"1", "2"}
    assert abs(counts["2"] - requests * 0.2) <= SIGMAS * sigma, counts


def sticky_versions(
    protocol: str, gateway: RunningGateway, images: list[bytes], clients: list[str]
) -> dict[str, set[str]]:
    """The versions each named client was answered by, four requests each."""
    seen: dict[str, set[str]] = {c: set() for c in clients}
    if protocol == "rest":
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for name in clients:
                for image in images[:4]:
                    answer = rest_predict(client, image, {CLIENT_HEADER: name})
                    seen[name].add(str(answer["version"]))
        return seen
    for name in clients:
        for image in images[:4]:
            if protocol == "v2_http":
                http = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
                item = httpclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
                item.set_data_from_numpy(np.array([[image]], dtype=object))
                result = http.infer(MODEL, [item], headers={CLIENT_HEADER: name})
                seen[name].add(str(result.get_response()["model_version"]))
                http.close()
            else:
                grpc = grpcclient.InferenceServerClient(gateway.grpc_url)
                item_g = grpcclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
                item_g.set_data_from_numpy(np.array([[image]], dtype=object))
                result_g = grpc.infer(MODEL, [item_g], headers={CLIENT_HEADER: name})
                seen[name].add(str(result_g.get_response().model_version))
                grpc.close()
    return seen


@pytest.mark.parametrize("protocol", ["rest", "v2_http", "v2_grpc"])
def test_a_named_client_stays_on_one_version(
    protocol: str, gateway: RunningGateway, repository: Path, images: list[bytes]
) -> None:
    route(gateway, repository, {"weights": {"1": 50, "2": 50}})
    clients = [f"client-{i}" for i in range(16)]
    seen = sticky_versions(protocol, gateway, images, clients)
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {v for versions in seen.values() for v in versions} == {"1", "2"}
    # The same client lands on the same version whatever the protocol.
    policy = parse_policy(MODEL, {"weights": {"1": 50, "2": 50}}, {"1", "2"})
    assert all(seen[c] == {policy.pick(c)} for c in clients)


# --- shadow ----------------------------------------------------------------------------------


@dataclass
class Offline:
    """Both versions' ONNX files run by ONNX Runtime, one image at a time."""

    tensors: list[np.ndarray]
    probabilities: dict[str, np.ndarray]  # version -> [images, classes]


@pytest.fixture(scope="module")
def offline(repository: Path, images: list[bytes]) -> Offline:
    specs = load_model_versions(repository / MODEL)
    pre = preprocess.for_model(specs["1"], max_image_pixels=10**8)
    tensors = [pre.preprocess(pre.decode(image))["IMAGE"] for image in images]
    probabilities = {}
    for version, spec in specs.items():
        session = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
        logits = np.concatenate(
            [session.run([spec.output], {"IMAGE": t[None]})[0] for t in tensors]
        )
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities[version] = shifted / shifted.sum(axis=1, keepdims=True)
    return Offline(tensors, probabilities)


def primary_answers(
    protocol: str, gateway: RunningGateway, images: list[bytes], offline: Offline
) -> list[tuple[str, np.ndarray]]:
    """(version, probabilities over version 1's class order) per image, one request each."""
    answers = []
    if protocol == "rest":
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for image in images:
                answer = rest_predict(client, image)
                version = str(answer["version"])
                by_label = {t["label"]: t["probability"] for t in answer["predictions"][0]["top_k"]}
                answers.append((version, np.array([by_label[x] for x in labels_of(version)])))
    elif protocol == "v2_http":
        client = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
        for image in images:
            item = httpclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
            item.set_data_from_numpy(np.array([[image]], dtype=object))
            result = client.infer(MODEL, [item])
            version = str(result.get_response()["model_version"])
            answers.append((version, result.as_numpy("PROBABILITIES")[0]))
        client.close()
    else:
        client_g = grpcclient.InferenceServerClient(gateway.grpc_url)
        for tensor in offline.tensors:
            item_g = grpcclient.InferInput("IMAGE", [1, *tensor.shape], "FP32")
            item_g.set_data_from_numpy(tensor[None])
            result_g = client_g.infer(MODEL, [item_g])
            logits = result_g.as_numpy("LOGITS")[0].astype(np.float64)
            shifted = np.exp(logits - logits.max())
            answers.append((str(result_g.get_response().model_version), shifted / shifted.sum()))
        client_g.close()
    return answers


@pytest.mark.parametrize("protocol", ["rest", "v2_http", "v2_grpc"])
def test_shadow_never_changes_answers_and_its_agreement_matches_onnx(
    protocol: str,
    gateway: RunningGateway,
    repository: Path,
    images: list[bytes],
    offline: Offline,
) -> None:
    route(gateway, repository, {"weights": {"1": 100}})
    without = primary_answers(protocol, gateway, images, offline)

    pair = {"model": MODEL, "primary": "1", "shadow": "2"}
    route(gateway, repository, {"weights": {"1": 100}, "shadow": "2"})
    before = scrape(gateway)
    with_shadow = primary_answers(protocol, gateway, images, offline)
    give_up = time.monotonic() + 10
    while True:  # copies finish after the answers; wait for every one
        after = scrape(gateway)
        compared = metric(after, "modelgate_shadow_compared_total", **pair) - metric(
            before, "modelgate_shadow_compared_total", **pair
        )
        if compared >= len(images) or time.monotonic() > give_up:
            break
        time.sleep(0.05)
    route(gateway, repository, {"weights": {"1": 100}})

    # The primary's answers are version 1's, the same as with shadow off, and equal to ONNX.
    assert [v for v, _ in with_shadow] == ["1"] * len(images)
    for (_, off), (_, on), reference in zip(
        without, with_shadow, offline.probabilities["1"], strict=True
    ):
        np.testing.assert_allclose(on, off, atol=1e-6)
        np.testing.assert_allclose(on, reference, atol=1e-4)

    # Every copy compared, none dropped; agreement equals the offline comparison.
    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    p, q = offline.probabilities["1"], offline.probabilities["2"]
    agree = int(np.count_nonzero(p.argmax(axis=1) == q.argmax(axis=1)))
    mean_abs = np.abs(p - q).mean(axis=1)
    assert 0 < agree < len(images), "the versions must differ for the comparison to mean much"
    assert delta("modelgate_shadow_compared_total", **pair) == len(images)
    assert delta("modelgate_shadow_top1_agree_total", **pair) == agree
    assert delta("modelgate_shadow_abs_diff_sum", **pair) == pytest.approx(
        float(mean_abs.sum()), abs=1e-4
    )
    for reason in ("busy", "queue", "failed", "incomparable", "shutdown"):
        assert delta("modelgate_shadow_dropped_total", model=MODEL, reason=reason) == 0, reason


def test_pinned_requests_are_not_shadowed(
    gateway: RunningGateway, repository: Path, images: list[bytes]
) -> None:
    route(gateway, repository, {"weights": {"1": 100}, "shadow": "2"})
    before = scrape(gateway)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for image in images[:10]:
            body = {"inputs": [base64.b64encode(image).decode()]}
            response = client.post(f"/v1/models/{MODEL}/versions/1/predict", json=body)
            assert response.status_code == 200 and response.json()["version"] == "1"
    time.sleep(0.3)
    after = scrape(gateway)
    pair = {"model": MODEL, "primary": "1", "shadow": "2"}
    compared = metric(after, "modelgate_shadow_compared_total", **pair)
    assert compared == metric(before, "modelgate_shadow_compared_total", **pair)
    route(gateway, repository, {"weights": {"1": 100}})


# --- promote and roll back under load -------------------------------------------------------


@dataclass
class Call:
    protocol: str
    sent: float
    done: float
    ok: bool
    version: str
    detail: str = ""


def rollout_command(repository: Path, gateway: RunningGateway, *args: str) -> float:
    """Run `modelgate rollout ...` waiting for the gateway; returns when it was in force."""
    result = subprocess.run(
        [sys.executable, "-m", "modelgate", "rollout", *args, "-r", str(repository),
         "--gateway", gateway.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in force at" in result.stdout
    return time.monotonic()


def test_promote_then_rollback_under_load_fails_no_request(
    gateway: RunningGateway, repository: Path, images: list[bytes]
) -> None:
    route(gateway, repository, {"weights": {"1": 100}})
    calls: list[Call] = []
    stop = threading.Event()
    lock = threading.Lock()

    def rest_client(seed: int) -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            i = seed
            while not stop.is_set():
                image = images[i % len(images)]
                i += 1
                sent = time.monotonic()
                body = {"inputs": [base64.b64encode(image).decode()], "top_k": 1}
                try:
                    response = client.post(f"/v1/models/{MODEL}/predict", json=body)
                    answer = response.json()
                    version = str(answer.get("version"))
                    ok = response.status_code == 200 and (
                        answer["predictions"][0]["label"] in labels_of(version)
                    )
                    detail = "" if ok else response.text
                except Exception as exc:  # a transport error is a failed request too
                    ok, version, detail = False, "", repr(exc)
                with lock:
                    calls.append(Call("rest", sent, time.monotonic(), ok, version, detail))

    def grpc_client(seed: int) -> None:
        client = grpcclient.InferenceServerClient(gateway.grpc_url)
        i = seed
        while not stop.is_set():
            i += 1
            item = grpcclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
            item.set_data_from_numpy(np.array([[images[i % len(images)]]], dtype=object))
            sent = time.monotonic()
            try:
                result = client.infer(MODEL, [item])
                version = str(result.get_response().model_version)
                label = result.as_numpy("LABELS").reshape(-1)[0]  # the best of top-k
                label = label.decode() if isinstance(label, bytes) else str(label)
                ok = label in labels_of(version)
                detail = "" if ok else f"label {label!r} from version {version}"
            except Exception as exc:
                ok, version, detail = False, "", repr(exc)
            with lock:
                calls.append(Call("grpc", sent, time.monotonic(), ok, version, detail))
        client.close()

    threads = [threading.Thread(target=rest_client, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=grpc_client, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        canary_at = rollout_command(repository, gateway, "canary", MODEL, "--version", "2",
                                    "--percent", "20")  # fmt: skip
        time.sleep(2.0)
        promoted_at = rollout_command(repository, gateway, "promote", MODEL)
        time.sleep(3.0)
        rollback_from = time.monotonic()
        rolled_back_at = rollout_command(repository, gateway, "rollback", MODEL)
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    failed = [c for c in calls if not c.ok]
    assert not failed, failed[:5]
    assert len(calls) > 500, len(calls)
    assert {c.protocol for c in calls} == {"rest", "grpc"}
    # Held on 1 before the canary; both during it; only 2 once promoted; only 1 after rollback.
    assert {c.version for c in calls if c.done < canary_at - 1.0} == {"1"}
    assert {c.version for c in calls if canary_at < c.sent and c.done < promoted_at - 1.0} == {
        "1",
        "2",
    }
    assert {c.version for c in calls if promoted_at < c.sent and c.done < rollback_from} == {"2"}
    assert {c.version for c in calls if rolled_back_at < c.sent} == {"1"}
    assert json.loads((repository / MODEL / ROUTING_FILE).read_text()) == {"weights": {"1": 100}}
