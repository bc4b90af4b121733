"""gRPC request/response conversion and the OIP metadata/postprocessing helpers (no servers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from service.errors import BadInput
from service.oip import core, grpc_api
from service.oip.tensors import from_bytes, to_bytes
from service.repository import load_repository


def typed_request() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="m", id="r1")
    image = request.inputs.add(name="IMAGE", datatype="FP32", shape=[1, 3])
    image.contents.fp32_contents.extend([0.5, 1.5, -2.0])
    ids = request.inputs.add(name="IDS", datatype="INT64", shape=[1, 2])
    ids.contents.int64_contents.extend([7, -8])
    text = request.inputs.add(name="TEXT", datatype="BYTES", shape=[1, 1])
    text.contents.bytes_contents.append("héllo".encode())
    return request


def test_typed_contents_decode() -> None:
    inputs = grpc_api.decode_inputs(typed_request())
    np.testing.assert_array_equal(inputs["IMAGE"], np.array([[0.5, 1.5, -2.0]], np.float32))
    assert inputs["IMAGE"].dtype == np.float32
    np.testing.assert_array_equal(inputs["IDS"], np.array([[7, -8]], np.int64))
    assert inputs["TEXT"].shape == (1, 1) and inputs["TEXT"][0, 0] == "héllo".encode()


def test_raw_contents_decode_like_typed_ones() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    arrays = {
        "IMAGE": np.array([[0.5, 1.5, -2.0]], np.float32),
        "IDS": np.array([[7, -8]], np.int64),
        "TEXT": np.array([["héllo".encode()]], dtype=object),
    }
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else grpcclient.np_to_triton_dtype(array.dtype)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(to_bytes(array))
    inputs = grpc_api.decode_inputs(request)
    for name, array in arrays.items():
        np.testing.assert_array_equal(inputs[name], array)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), "4 values"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), "fp64_contents"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP16"), "raw_input_contents"),
        (lambda r: setattr(r.inputs[0], "datatype", "COMPLEX"), "not supported"),
        (lambda r: r.raw_input_contents.append(b"\0" * 12), "raw contents for every input"),
        (lambda r: r.inputs[0].shape.append(-1), "non-negative"),
    ],
)
def test_bad_requests(mutate: object, message: str) -> None:
    request = typed_request()
    mutate(request)  # type: ignore[operator]
    with pytest.raises(BadInput, match=message):
        grpc_api.decode_inputs(request)


def test_parameters_and_requested_outputs() -> None:
    request = typed_request()
    request.parameters["top_k"].int64_param = 3
    output = request.outputs.add(name="LOGITS")
    output.parameters["classification"].int64_param = 2
    assert grpc_api.top_k(request) == 3
    assert grpc_api.requested_outputs(request) == [core.RequestedOutput("LOGITS", 2)]
    request.parameters["top_k"].string_param = "many"
    with pytest.raises(BadInput, match="top_k"):
        grpc_api.top_k(request)
    assert grpc_api.requested_outputs(service_pb2.ModelInferRequest()) is None


def test_response_parses_in_tritonclient() -> None:
    outputs = {
        "LOGITS": np.array([[0.5, -1.25], [2.0, 0.0]], np.float32),
        "LABELS": np.array([[b"en"], [b"fr"]], dtype=object),
    }
    response = grpc_api.encode_response("m", "1", "r9", outputs)
    result = grpcclient.InferResult(response)
    np.testing.assert_array_equal(result.as_numpy("LOGITS"), outputs["LOGITS"])
    np.testing.assert_array_equal(result.as_numpy("LABELS"), outputs["LABELS"])
    assert result.get_response().id == "r9"


def test_bytes_round_trip_and_truncation() -> None:
    array = np.array([b"a", b"", "ü".encode()], dtype=object)
    np.testing.assert_array_equal(from_bytes("T", "BYTES", [3], to_bytes(array)), array)
    with pytest.raises(BadInput, match="malformed BYTES"):
        from_bytes("T", "BYTES", [1], b"\x05\0\0\0ab")


def test_metadata_advertises_the_raw_input_and_extra_outputs(tiny_repository: Path) -> None:
    specs = load_repository(tiny_repository)
    names = {
        name: [t.name for t in core.model_metadata(spec).inputs] for name, spec in specs.items()
    }
    assert names == {
        "img": ["IMAGE", "IMAGE_BYTES"],
        "txt": ["INPUT_IDS", "ATTENTION_MASK", "TEXT"],
        "seq": ["SEQUENCE", "MASK", "SEQUENCE_JSON"],
    }
    metadata = core.model_metadata(specs["img"]).as_dict()
    assert metadata["outputs"] == [
        {"name": "LOGITS", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "LABELS", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "OOD_SCORE", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "OOD", "datatype": "BOOL", "shape": [-1, 1]},
    ]
    assert metadata["inputs"][1] == {"name": "IMAGE_BYTES", "datatype": "BYTES", "shape": [-1, 1]}


def test_classification_strings_follow_triton() -> None:
    logits = np.array([[0.1, 0.7, 0.2]], np.float32)
    result = core._classification(logits, ("a", "b", "c"), 2)
    assert result.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"]]
    labels = core._labels(logits, ("a", "b", "c"), 5)
    assert labels.tolist() == [[b"b", b"c", b"a"]]
