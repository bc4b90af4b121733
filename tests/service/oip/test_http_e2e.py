"""Stock tritonclient.http (sync and asyncio) against the real gateway before the real Triton."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from service.local_triton import LocalTriton
from tests.service.oip.conftest import RAW_INPUTS, model_tensors, samples
from tests.service.rest.conftest import OnnxReference, RunningGateway

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def host(gateway: RunningGateway) -> str:
    return gateway.url.removeprefix("http://")


def infer_inputs(arrays: dict[str, np.ndarray], binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else httpclient.np_to_triton_dtype(array.dtype)
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    return inputs


def text_of(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]


def test_server_metadata_and_health(gateway: RunningGateway) -> None:
    client = httpclient.InferenceServerClient(host(gateway))
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelgate"
    assert "binary_tensor_data" in metadata["extensions"]
    for model in RAW_INPUTS:
        assert client.is_model_ready(model) and client.is_model_ready(model, "1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("digits_cnn", "7")


def test_model_metadata_and_config(gateway: RunningGateway, model: str) -> None:
    client = httpclient.InferenceServerClient(host(gateway))
    metadata = client.get_model_metadata(model)
    assert metadata == client.get_model_metadata(model, "1")
    assert metadata["name"] == model and metadata["versions"] == ["1"]
    inputs = {t["name"]: t for t in metadata["inputs"]}
    assert inputs[RAW_INPUTS[model]] == {
        "name": RAW_INPUTS[model],
        "datatype": "BYTES",
        "shape": [-1, 1],
    }
    assert [o["name"] for o in metadata["outputs"]] == [
        "LOGITS",
        "PROBABILITIES",
        "LABELS",
        "OOD_SCORE",
        "OOD",
    ]
    config = client.get_model_config(model)
    assert config["name"] == model and config["max_batch_size"] == 64
    assert [i["name"] for i in config["input"]] == [
        t["name"] for t in metadata["inputs"] if t["name"] != RAW_INPUTS[model]
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tensor_passthrough_matches_triton(
    gateway: RunningGateway,
    triton_server: LocalTriton,
    onnx_reference: OnnxReference,
    model: str,
    binary: bool,
) -> None:
    arrays = model_tensors(onnx_reference, model)
    via = httpclient.InferenceServerClient(host(gateway))
    direct = httpclient.InferenceServerClient(triton_server.http_url)
    outputs = [httpclient.InferRequestedOutput("LOGITS", binary_data=binary)]
    got = via.infer(model, infer_inputs(arrays, binary), outputs=outputs, request_id="t-1")
    want = direct.infer(model, infer_inputs(arrays, binary), outputs=outputs)
    assert got.get_response()["id"] == "t-1"
    assert got.get_response()["model_name"] == model
    assert [o["name"] for o in got.get_response()["outputs"]] == ["LOGITS"]
    np.testing.assert_allclose(got.as_numpy("LOGITS"), want.as_numpy("LOGITS"), atol=1e-5)
    assert got.as_numpy("LOGITS").dtype == np.float32


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_raw_payloads_give_probabilities_and_labels(
    gateway: RunningGateway, onnx_reference: OnnxReference, model: str, binary: bool
) -> None:
    items = samples(model)
    raw = items.raw
    if model == "digits_cnn" and not binary:  # JSON carries images as base64 strings
        raw = np.array([[base64.b64encode(v).decode()] for v in raw[:, 0]], dtype=object)
    client = httpclient.InferenceServerClient(host(gateway))
    result = client.infer(
        model, infer_inputs({RAW_INPUTS[model]: raw}, binary), parameters={"top_k": 2}
    )
    probabilities = result.as_numpy("PROBABILITIES")
    labels = result.as_numpy("LABELS")
    assert probabilities.shape == (len(items.payloads), len(onnx_reference.spec(model).labels))
    assert labels.shape == (len(items.payloads), 2)
    for row, payload in enumerate(items.payloads):
        expected = onnx_reference.probabilities(model, payload)
        np.testing.assert_allclose(probabilities[row], expected, atol=1e-4)
        best = onnx_reference.spec(model).labels[int(np.argmax(expected))]
        assert text_of(labels[row])[0] == best
    correct = sum(text_of(labels[r])[0] == t for r, t in enumerate(items.truth))
    assert correct >= len(items.truth) - 1  # real data, trained models


def test_classification_extension(gateway: RunningGateway, onnx_reference: OnnxReference) -> None:
    client = httpclient.InferenceServerClient(host(gateway))
    arrays = model_tensors(onnx_reference, "digits_cnn", count=2)
    outputs = [httpclient.InferRequestedOutput("PROBABILITIES", class_count=3)]
    result = client.infer("digits_cnn", infer_inputs(arrays, True), outputs=outputs)
    classes = result.as_numpy("PROBABILITIES")
    assert classes.shape == (2, 3)
    score, index, label = text_of(classes[0])[0].split(":")
    assert 0 < float(score) <= 1 and label == onnx_reference.spec("digits_cnn").labels[int(index)]


def expect_error(call: Any, status: str, fragment: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status, caught.value
    assert fragment in str(caught.value.message())


def test_protocol_errors_and_the_server_keeps_serving(
    gateway: RunningGateway, onnx_reference: OnnxReference
) -> None:
    client = httpclient.InferenceServerClient(host(gateway))
    image = model_tensors(onnx_reference, "digits_cnn", count=1)["IMAGE"]
    cases = [
        (lambda: client.get_model_metadata("nope"), "404", "unknown model"),
        (lambda: client.infer("nope", infer_inputs({"IMAGE": image}, True)), "404", "unknown"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": image}, True), "9"), "404",
         "version"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": image.astype(np.float64)},
                                                         True)), "400", "FP32"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": image[:, :, :27]}, True)),
         "400", "dim"),
        (lambda: client.infer("digits_cnn", infer_inputs({"PIXELS": image}, True)), "400",
         "missing"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": image}, True),
                              outputs=[httpclient.InferRequestedOutput("SCORES")]), "400",
         "no output"),
        (lambda: client.infer("digits_cnn", infer_inputs(
            {"IMAGE_BYTES": np.array([[b"not an image"]], dtype=object)}, True)), "415", "image"),
        (lambda: client.infer("vowels_gru", infer_inputs(
            {"SEQUENCE_JSON": np.array([[b"[[1, 2"]], dtype=object)}, True)), "400", "JSON"),
        (lambda: client.infer("langid_transformer", infer_inputs(
            {"TEXT": np.array([[b"hello"]], dtype=object),
             "INPUT_IDS": np.ones((1, 3), np.int64)}, True)), "400", "alone"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": np.zeros((65, 1, 28, 28),
                                                                             np.float32)}, True)),
         "400", "rows"),
    ]  # fmt: skip
    for call, status, fragment in cases:
        expect_error(call, status, fragment)

    url = f"{gateway.url}/v2/models/digits_cnn/infer"
    json_type = {"content-type": "application/json"}
    malformed = httpx.post(url, content=b'{"inputs": [', headers=json_type)
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    cut = httpx.post(url, content=b"{}", headers={"Inference-Header-Content-Length": "900"})
    assert cut.status_code == 400 and "error" in cut.json()
    oversized = httpx.post(url, content=b"\0" * (gateway.settings.max_body_bytes + 1))
    assert oversized.status_code == 413 and "exceeds" in oversized.json()["error"]
    unknown_route = httpx.post(f"{gateway.url}/v2/trace/setting")
    assert unknown_route.status_code == 404 and "not supported" in unknown_route.json()["error"]

    result = client.infer("digits_cnn", infer_inputs({"IMAGE": image}, True))
    assert result.as_numpy("LOGITS").shape == (1, 10)


def test_asyncio_client_concurrent_requests(gateway: RunningGateway) -> None:
    items = samples("langid_transformer", count=8)

    async def run() -> list[str]:
        client = httpaio.InferenceServerClient(host(gateway))
        try:
            assert await client.is_server_ready()
            assert (await client.get_model_metadata("langid_transformer"))["name"]

            async def one(row: int) -> str:
                item = httpaio.InferInput("TEXT", [1, 1], "BYTES")
                item.set_data_from_numpy(items.raw[row : row + 1])
                result = await client.infer("langid_transformer", [item])
                return text_of(result.as_numpy("LABELS"))[0]

            return list(await asyncio.gather(*(one(r) for r in range(len(items.truth)))))
        finally:
            await client.close()

    labels = asyncio.run(run())
    assert sum(a == b for a, b in zip(labels, items.truth, strict=True)) >= 7


def test_api_key_applies_to_inference_not_health(start_gateway: Any) -> None:
    gateway = start_gateway(api_key="s3cret", grpc_enabled=False)
    client = httpclient.InferenceServerClient(host(gateway))
    assert client.is_server_live() and client.is_server_ready()
    text = {"TEXT": np.array([[b"the weather is nice today"]], dtype=object)}
    expect_error(lambda: client.infer("langid_transformer", infer_inputs(text, True)), "401", "key")
    expect_error(lambda: client.get_model_metadata("langid_transformer"), "401", "key")
    result = client.infer(
        "langid_transformer",
        infer_inputs(text, True),
        headers={"Authorization": "Bearer s3cret"},
    )
    assert text_of(result.as_numpy("LABELS")) == ["en"]
