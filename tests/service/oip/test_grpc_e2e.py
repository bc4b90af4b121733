"""Stock tritonclient.grpc (sync and asyncio) against the real gateway before the real Triton."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from service.local_triton import LocalTriton
from tests.service.oip.conftest import RAW_INPUTS, model_tensors, samples
from tests.service.rest.conftest import GatewayFactory, OnnxReference, RunningGateway

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def infer_inputs(arrays: dict[str, np.ndarray], module: Any = grpcclient) -> list[Any]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else grpcclient.np_to_triton_dtype(array.dtype)
        item = module.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def typed_request(model: str, arrays: dict[str, np.ndarray]) -> service_pb2.ModelInferRequest:
    """A request with typed `contents` (tritonclient always sends raw contents)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in arrays.items():
        tensor = request.inputs.add(
            name=name, datatype=grpcclient.np_to_triton_dtype(array.dtype), shape=array.shape
        )
        field = {np.float32: "fp32_contents", np.int64: "int64_contents"}[array.dtype.type]
        getattr(tensor.contents, field).extend(array.ravel().tolist())
    return request


def text_of(array: np.ndarray) -> list[str]:
    return [v.decode() for v in array.ravel()]


def test_server_metadata_and_health(gateway: RunningGateway) -> None:
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "modelgate" and "binary_tensor_data" in metadata.extensions
    for model in RAW_INPUTS:
        assert client.is_model_ready(model) and client.is_model_ready(model, "1")
    assert not client.is_model_ready("nope")
    client.close()


def test_model_metadata_and_config(gateway: RunningGateway, model: str) -> None:
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    metadata = client.get_model_metadata(model, as_json=True)
    assert metadata["name"] == model and metadata["versions"] == ["1"]
    raw = {t["name"]: t for t in metadata["inputs"]}[RAW_INPUTS[model]]
    assert raw["datatype"] == "BYTES" and raw["shape"] == ["-1", "1"]  # int64 as JSON strings
    assert [o["name"] for o in metadata["outputs"]] == [
        "LOGITS",
        "PROBABILITIES",
        "LABELS",
        "OOD_SCORE",
        "OOD",
    ]
    http_metadata = httpclient.InferenceServerClient(
        gateway.url.removeprefix("http://")
    ).get_model_metadata(model)
    assert [t["name"] for t in http_metadata["inputs"]] == [t["name"] for t in metadata["inputs"]]
    config = client.get_model_config(model).config
    assert config.name == model and config.max_batch_size == 64
    client.close()


def test_tensor_passthrough_matches_triton(
    gateway: RunningGateway, triton_server: LocalTriton, onnx_reference: OnnxReference, model: str
) -> None:
    arrays = model_tensors(onnx_reference, model)
    via = grpcclient.InferenceServerClient(gateway.grpc_url)
    direct = grpcclient.InferenceServerClient(triton_server.grpc_url)
    outputs = [grpcclient.InferRequestedOutput("LOGITS")]
    got = via.infer(model, infer_inputs(arrays), outputs=outputs, request_id="g-1")
    want = direct.infer(model, infer_inputs(arrays), outputs=outputs)
    assert got.get_response().id == "g-1" and got.get_response().model_version == "1"
    assert [o.name for o in got.get_response().outputs] == ["LOGITS"]
    np.testing.assert_allclose(got.as_numpy("LOGITS"), want.as_numpy("LOGITS"), atol=1e-5)

    # typed `contents` instead of raw bytes: the same answer
    stub = grpcclient.service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(gateway.grpc_url)
    )
    response = stub.ModelInfer(typed_request(model, arrays), timeout=30)
    typed = grpcclient.InferResult(response)
    np.testing.assert_allclose(typed.as_numpy("LOGITS"), want.as_numpy("LOGITS"), atol=1e-5)
    assert typed.as_numpy("PROBABILITIES").shape == want.as_numpy("LOGITS").shape
    via.close()
    direct.close()


def test_raw_payloads_give_probabilities_and_labels(
    gateway: RunningGateway, onnx_reference: OnnxReference, model: str
) -> None:
    items = samples(model)
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    result = client.infer(
        model, infer_inputs({RAW_INPUTS[model]: items.raw}), parameters={"top_k": 3}
    )
    labels = result.as_numpy("LABELS")
    assert labels.shape == (len(items.payloads), 3)
    for row, payload in enumerate(items.payloads):
        expected = onnx_reference.probabilities(model, payload)
        np.testing.assert_allclose(result.as_numpy("PROBABILITIES")[row], expected, atol=1e-4)
        best = onnx_reference.spec(model).labels[int(np.argmax(expected))]
        assert text_of(labels[row])[0] == best
    correct = sum(text_of(labels[r])[0] == t for r, t in enumerate(items.truth))
    assert correct >= len(items.truth) - 1
    client.close()


def expect_error(call: Any, code: grpc.StatusCode, fragment: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == str(code), caught.value
    assert fragment in str(caught.value.message())


def test_protocol_errors_and_the_server_keeps_serving(
    gateway: RunningGateway, onnx_reference: OnnxReference
) -> None:
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    image = model_tensors(onnx_reference, "digits_cnn", count=1)["IMAGE"]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (lambda: client.get_model_metadata("nope"), grpc.StatusCode.NOT_FOUND, "unknown model"),
        (lambda: client.infer("nope", infer_inputs({"IMAGE": image})), grpc.StatusCode.NOT_FOUND,
         "unknown model"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": image.astype(np.float64)})),
         invalid, "FP32"),
        (lambda: client.infer("digits_cnn", infer_inputs({"IMAGE": image[:, :, :27]})), invalid,
         "dim"),
        (lambda: client.infer("digits_cnn", infer_inputs(
            {"IMAGE_BYTES": np.array([[b"not an image"]], dtype=object)})), invalid, "image"),
        (lambda: client.infer("langid_transformer", infer_inputs(
            {"TEXT": np.array([[b"   "]], dtype=object)})), invalid, "empty"),
        # larger than grpc_max_message_bytes (8 MiB by default)
        (lambda: client.infer("digits_cnn", infer_inputs(
            {"IMAGE": np.zeros((3000, 1, 28, 28), np.float32)})),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than max"),
        (lambda: client.get_inference_statistics("digits_cnn"), grpc.StatusCode.UNIMPLEMENTED,
         "not supported"),
        (lambda: client.get_system_shared_memory_status(), grpc.StatusCode.UNIMPLEMENTED,
         "not supported"),
    ]  # fmt: skip
    for call, code, fragment in cases:
        expect_error(call, code, fragment)

    # bytes that are no ModelInferRequest: the gRPC error for an unparsable request
    channel = grpc.insecure_channel(gateway.grpc_url)
    raw_call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    channel.close()

    result = client.infer("digits_cnn", infer_inputs({"IMAGE": image}))
    assert result.as_numpy("LOGITS").shape == (1, 10)
    client.close()


def test_asyncio_client_concurrent_requests(
    gateway: RunningGateway, onnx_reference: OnnxReference
) -> None:
    items = samples("vowels_gru", count=8)

    async def run() -> list[str]:
        client = grpcaio.InferenceServerClient(gateway.grpc_url)
        try:
            assert await client.is_server_ready()
            assert (await client.get_model_metadata("vowels_gru")).name == "vowels_gru"

            async def one(row: int) -> str:
                inputs = infer_inputs({"SEQUENCE_JSON": items.raw[row : row + 1]}, grpcaio)
                result = await client.infer("vowels_gru", inputs)
                return text_of(result.as_numpy("LABELS"))[0]

            return list(await asyncio.gather(*(one(r) for r in range(len(items.truth)))))
        finally:
            await client.close()

    labels = asyncio.run(run())
    # Each concurrent caller gets its own item's answer: the model's, computed alone.
    expected = []
    for payload in items.payloads:
        reference = onnx_reference.label_probabilities("vowels_gru", payload)
        expected.append(max(reference, key=reference.__getitem__))
    assert labels == expected


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_carry_the_protocol_and_api_key_is_checked(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(api_key="s3cret")
    auth = [("authorization", "Bearer s3cret")]
    text = {"TEXT": np.array([[b"guten morgen meine freunde"]], dtype=object)}
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    assert client.is_server_ready()  # health stays open
    expect_error(
        lambda: client.infer("langid_transformer", infer_inputs(text)),
        grpc.StatusCode.UNAUTHENTICATED,
        "API key",
    )
    for _ in range(3):
        result = client.infer("langid_transformer", infer_inputs(text), headers=dict(auth))
        assert text_of(result.as_numpy("LABELS")) == ["de"]
    expect_error(
        lambda: client.infer("nope", infer_inputs(text), headers=dict(auth)),
        grpc.StatusCode.NOT_FOUND,
        "unknown",
    )
    http = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    http.infer(
        "langid_transformer",
        infer_inputs(text, httpclient),
        headers={"Authorization": "Bearer s3cret"},
    )
    client.close()

    exposition = httpx.get(f"{gateway.url}/metrics").text
    requests = "modelgate_requests_total"
    grpc_ok = {"endpoint": "infer", "protocol": "v2_grpc", "status_class": "2xx"}
    assert metric(exposition, requests, model="langid_transformer", **grpc_ok) == 3
    assert metric(exposition, requests, protocol="v2_grpc", status_class="4xx") == 2
    assert metric(exposition, requests, protocol="v2_http", status_class="2xx") == 1
    assert metric(exposition, "modelgate_errors_total", reason="unauthorized") == 1
    assert metric(exposition, "modelgate_errors_total", model="unknown", reason="not_found") == 1
    assert metric(exposition, "modelgate_stage_duration_seconds_count",
                  model="langid_transformer", stage="preprocess") == 4  # fmt: skip
