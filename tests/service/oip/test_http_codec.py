"""The OIP HTTP body codec against tritonclient's own request builder and response parser."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from service.errors import BadInput, PayloadTooLarge, UnsupportedMediaType
from service.oip.core import RequestedOutput
from service.oip.http_codec import InferRequest, decompress, encode_response, parse_request


def client_body(
    arrays: dict[str, np.ndarray], binary: bool, **kwargs: Any
) -> tuple[bytes, str | None]:
    """The body (and header length) tritonclient.http sends for these tensors."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else httpclient.np_to_triton_dtype(array.dtype)
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, **kwargs)
    data = body if isinstance(body, bytes) else body.encode()
    return data, None if json_size is None else str(json_size)


ARRAYS = {
    "IMAGE": np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 7,
    "IDS": np.array([[1, 2, 3], [4, 5, -6]], dtype=np.int64),
    "TEXT": np.array([["héllo"], ["wörld"]], dtype=object),
}


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_requests_decode_to_the_same_tensors(binary: bool) -> None:
    body, header_length = client_body(
        ARRAYS,
        binary,
        request_id="req-7",
        outputs=[httpclient.InferRequestedOutput("LOGITS", binary_data=False, class_count=3)],
        parameters={"top_k": 2},
    )
    assert (header_length is not None) == binary
    request = parse_request(body, header_length)
    assert request.id == "req-7" and request.top_k == 2
    assert request.outputs == [RequestedOutput("LOGITS", 3)]
    np.testing.assert_array_equal(request.inputs["IMAGE"], ARRAYS["IMAGE"])
    np.testing.assert_array_equal(request.inputs["IDS"], ARRAYS["IDS"])
    assert request.inputs["IMAGE"].dtype == np.float32 and request.inputs["IDS"].dtype == np.int64
    texts = [v.decode() if isinstance(v, bytes) else v for v in request.inputs["TEXT"].ravel()]
    assert texts == ["héllo", "wörld"]


@pytest.mark.parametrize("binary", [True, False])
def test_responses_parse_in_tritonclient(binary: bool) -> None:
    outputs = {
        "LOGITS": np.array([[0.5, -1.25]], dtype=np.float32),
        "LABELS": np.array([[b"en", b"fr"]], dtype=object),
    }
    request = InferRequest(inputs={}, binary_by_default=binary, id="abc")
    body, header_length = encode_response("m", "1", request, outputs)
    result = httpclient.InferResult.from_response_body(body, header_length=header_length)
    response = result.get_response()
    assert response["model_name"] == "m" and response["model_version"] == "1"
    assert response["id"] == "abc"
    np.testing.assert_array_equal(result.as_numpy("LOGITS"), outputs["LOGITS"])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("LABELS").ravel()]
    assert labels == ["en", "fr"]


def test_per_output_binary_flag_overrides_the_default() -> None:
    request = InferRequest(inputs={}, binary_by_default=True, binary_outputs={"A": False})
    body, header_length = encode_response(
        "m", "1", request, {"A": np.ones((1, 2), np.float32), "B": np.zeros((1, 2), np.float32)}
    )
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["data"] == [1.0, 1.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert len(body) == header_length + 8


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty"),
        (b'{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32"}]}', None, "neither"),
        (
            b'{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "data": [1, 2, 3]}]}',
            None,
            "3 values",
        ),
        (
            b'{"inputs": [{"name": "X", "shape": [1], "datatype": "INT64", "data": [1.5]}]}',
            None,
            "INT64",
        ),
        (
            b'{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]}',
            None,
            "FP32",
        ),
        (
            b'{"inputs": [{"name": "X", "shape": [1], "datatype": "BF16", "data": [1]}]}',
            None,
            "not supported",
        ),
        (
            b'{"inputs": [{"name": "X", "shape": [-1], "datatype": "FP32", "data": []}]}',
            None,
            "non-negative",
        ),
        (
            b'{"inputs": [{"name": "X", "shape": [2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 8}}]}abcd',
            "77",
            "binary data shorter",
        ),
        (b"{}", "99", "outside the body"),
        (b"{}", "x", "must be an integer"),
    ],
)
def test_malformed_requests_are_bad_input(
    body: bytes, header_length: str | None, message: str
) -> None:
    if header_length == "77":
        header_length = str(body.index(b"abcd"))
    with pytest.raises(BadInput, match=message):
        parse_request(body, header_length)


def test_binary_size_must_match_the_datatype_and_trailing_bytes_are_refused() -> None:
    header = b'{"inputs":[{"name":"X","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}'  # noqa: E501
    with pytest.raises(BadInput, match="4 bytes of data"):
        parse_request(header + b"\0" * 4, str(len(header)))
    header = header.replace(b'"binary_data_size":4', b'"binary_data_size":8')
    with pytest.raises(BadInput, match="follow the declared inputs"):
        parse_request(header + b"\0" * 12, str(len(header)))


def test_compressed_bodies_are_inflated_within_the_limit() -> None:
    data = b'{"inputs": []}' * 10
    assert decompress(gzip.compress(data), "gzip", 1000) == data
    assert decompress(zlib.compress(data), "deflate", 1000) == data
    assert decompress(data, None, 1000) == data
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"\0" * 100_000), "gzip", 1000)
    with pytest.raises(BadInput):
        decompress(b"not gzip", "gzip", 1000)
    with pytest.raises(UnsupportedMediaType):
        decompress(data, "br", 1000)
