"""Several versions live: two versions of digits_cnn served by a real Triton behind a real
gateway, unpinned and pinned over REST, OIP HTTP and OIP gRPC (stock tritonclient), each answer
equal to running that version's own ONNX file and labelled with the version that produced it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from service.local_triton import LocalTriton
from tests.conftest import running_triton
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

VERSIONS = ("1", "2")
ATOL = 1e-4


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    """digits_cnn with a second version (perturbed weights, its own labels), both served."""
    root = tmp_path_factory.mktemp("versions") / "repository"
    model_dir = copy_model(model_repository, root)
    add_version(model_dir, 2, seed=2, labels=V2_LABELS)
    set_version_policy(model_dir, "latest { num_versions: 2 }")
    return root


@pytest.fixture(scope="module")
def reference(repository: Path) -> VersionReference:
    return VersionReference(repository / MODEL)


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[LocalTriton]:
    with running_triton(repository, "Triton on the two-version repository") as server:
        yield server


@pytest.fixture(scope="module", params=["triton", "embedded"])
def gateway(request: pytest.FixtureRequest, repository: Path) -> Iterator[RunningGateway]:
    """A real gateway serving both versions, in front of Triton or with embedded ONNX Runtime."""
    values: dict[str, Any] = {
        "model_repository": repository,
        "backend": request.param,
    }
    if request.param == "triton":
        values["triton_url"] = request.getfixturevalue("triton").grpc_url
    running = RunningGateway.on_free_ports(**values).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return digit_pngs(count=6)[0]


def assert_matches(answer: dict[str, float], expected: dict[str, float]) -> None:
    assert answer.keys() <= expected.keys()
    for label, probability in answer.items():
        assert probability == pytest.approx(expected[label], abs=ATOL)


def test_the_two_versions_answer_differently(
    reference: VersionReference, images: list[bytes]
) -> None:
    """Guards the fixture: a test that pins versions must be able to tell them apart."""
    one = [list(reference.probabilities("1", image).values()) for image in images]
    two = [list(reference.probabilities("2", image).values()) for image in images]
    assert np.abs(np.array(one) - np.array(two)).max() > 1e-3


@pytest.mark.parametrize("pinned", [None, *VERSIONS])
def test_rest_predict_pinned_and_unpinned(
    gateway: RunningGateway, reference: VersionReference, images: list[bytes], pinned: str | None
) -> None:
    path = (
        f"/v1/models/{MODEL}/predict"
        if pinned is None
        else (f"/v1/models/{MODEL}/versions/{pinned}/predict")
    )
    expected_version = pinned or "2"  # unpinned: the newest served version
    with httpx.Client(base_url=gateway.url) as client:
        for image in images:
            response = client.post(
                path, files=[("files", ("d.png", image, "image/png"))], params={"top_k": 10}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["version"] == expected_version
            (prediction,) = body["predictions"]
            answer = {p["label"]: p["probability"] for p in prediction["top_k"]}
            assert_matches(answer, reference.probabilities(expected_version, image))


def test_rest_version_listing_and_unknown_version(gateway: RunningGateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        model = client.get(f"/v1/models/{MODEL}").json()
        assert model["version"] == "2" and model["versions"] == list(VERSIONS)
        one = client.get(f"/v1/models/{MODEL}/versions/1").json()
        assert one["version"] == "1" and one["labels"][0] == "0"
        assert client.get(f"/v1/models/{MODEL}/versions/2").json()["labels"][0] == "zero"
        missing = client.post(
            f"/v1/models/{MODEL}/versions/3/predict", json={"inputs": ["aGVsbG8="]}
        )
        assert missing.status_code == 404
        assert "no served version '3'" in missing.json()["error"]["message"]


def raw_input(images: list[bytes], module: Any) -> Any:
    array = np.array([[image] for image in images], dtype=object)
    item = module.InferInput("IMAGE_BYTES", list(array.shape), "BYTES")
    item.set_data_from_numpy(array)
    return item


@pytest.mark.parametrize("pinned", [None, *VERSIONS])
def test_oip_http_pinned_and_unpinned(
    gateway: RunningGateway, reference: VersionReference, images: list[bytes], pinned: str | None
) -> None:
    client = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    outputs = [httpclient.InferRequestedOutput("PROBABILITIES")]
    result = client.infer(
        MODEL, [raw_input(images, httpclient)], model_version=pinned or "", outputs=outputs
    )
    version = pinned or "2"
    assert result.get_response()["model_version"] == version
    probabilities = result.as_numpy("PROBABILITIES")
    labels = reference.specs[version].labels
    for row, image in zip(probabilities, images, strict=True):
        assert_matches(
            dict(zip(labels, row.tolist(), strict=True)), reference.probabilities(version, image)
        )
    assert client.is_model_ready(MODEL, "1") and client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready(MODEL, "3")
    assert client.get_model_metadata(MODEL, "1")["versions"] == list(VERSIONS)
    client.close()


@pytest.mark.parametrize("pinned", [None, *VERSIONS])
def test_oip_grpc_pinned_and_unpinned(
    gateway: RunningGateway, reference: VersionReference, images: list[bytes], pinned: str | None
) -> None:
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    outputs = [
        grpcclient.InferRequestedOutput("PROBABILITIES"),
        grpcclient.InferRequestedOutput("LABELS"),
    ]
    result = client.infer(
        MODEL, [raw_input(images, grpcclient)], model_version=pinned or "", outputs=outputs
    )
    version = pinned or "2"
    assert result.get_response().model_version == version
    labels = reference.specs[version].labels
    for row, best, image in zip(
        result.as_numpy("PROBABILITIES"), result.as_numpy("LABELS"), images, strict=True
    ):
        expected = reference.probabilities(version, image)
        assert_matches(dict(zip(labels, row.tolist(), strict=True)), expected)
        assert best[0].decode() == max(expected, key=expected.__getitem__)
    with pytest.raises(InferenceServerException, match="no served version '3'"):
        client.infer(MODEL, [raw_input(images[:1], grpcclient)], model_version="3")
    assert client.get_model_metadata(MODEL, as_json=True)["versions"] == list(VERSIONS)
    client.close()


def test_metrics_carry_the_answering_version(gateway: RunningGateway, images: list[bytes]) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        for version in VERSIONS:
            response = client.post(
                f"/v1/models/{MODEL}/versions/{version}/predict",
                files=[("files", ("d.png", images[0], "image/png"))],
            )
            assert response.status_code == 200
        text = client.get("/metrics").text
    requests: dict[str, float] = {}
    batches: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "modelgate_requests_total" and labels.get("model") == MODEL:
                requests[labels["version"]] = requests.get(labels["version"], 0) + sample.value
            if sample.name == "modelgate_batch_size_count" and labels.get("model") == MODEL:
                batches[labels["version"]] = sample.value
    assert requests.keys() >= set(VERSIONS) and all(requests[v] >= 1 for v in VERSIONS)
    assert batches.keys() == set(VERSIONS) and all(batches[v] >= 1 for v in VERSIONS)
