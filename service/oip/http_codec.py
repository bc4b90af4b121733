"""OIP HTTP inference bodies: JSON, and the binary tensor data extension.

With the extension, the body is a JSON header of `Inference-Header-Content-Length` bytes followed
by the tensors' raw bytes, in input order, each as long as its `binary_data_size` parameter says.
Responses use the same layout for outputs asked for with `binary_data: true` (or for all outputs
with the request parameter `binary_data_output: true`, which tritonclient sends by default).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import BadInput, PayloadTooLarge, UnsupportedMediaType
from service.oip import tensors
from service.oip.core import TOP_K_PARAMETER, RequestedOutput

HEADER_LENGTH = "Inference-Header-Content-Length"
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


@dataclass
class InferRequest:
    """A decoded OIP HTTP inference request."""

    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_by_default: bool = False
    top_k: int | None = None
    id: str | None = None


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate` (tritonclient's request compression), capped."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadInput(f"body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"decompressed request body larger than {limit} bytes")
    return data


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object")
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"{what} must be a non-negative integer")
    return value


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header plus binary tensor data)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadInput(f"{HEADER_LENGTH} must be an integer") from None
        if not 0 <= length <= len(body):
            raise BadInput(f"{HEADER_LENGTH} {length} is outside the body of {len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError:
        try:  # the standard parser also takes NaN / Infinity, which some clients send
            document = json.loads(bytes(header))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"malformed JSON in the inference request: {exc}") from None
    document = _object(document, "the inference request")

    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadInput("the inference request needs a non-empty `inputs` list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        item = _object(item, "each input")
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise BadInput("each input needs a string `name` and `datatype`")
        if name in inputs:
            raise BadInput(f"input {name} is given twice")
        shape = tensors.check_shape(name, item.get("shape"))
        parameters = _object(item.get("parameters"), f"input {name} parameters")
        if any(key in parameters for key in _SHARED_MEMORY):
            raise BadInput(f"input {name}: shared memory is not supported by this server")
        if "binary_data_size" in parameters:
            size = _positive_int(parameters["binary_data_size"], f"input {name} binary_data_size")
            if offset + size > len(binary):
                raise BadInput(f"input {name}: binary data shorter than binary_data_size {size}")
            chunk = binary[offset : offset + size]
            offset += size
            inputs[name] = tensors.from_bytes(name, datatype, shape, chunk)
        elif "data" in item:
            inputs[name] = tensors.from_json(name, datatype, shape, item["data"])
        else:
            raise BadInput(f"input {name} has neither `data` nor a binary_data_size parameter")
    if offset != len(binary):
        raise BadInput(f"{len(binary) - offset} bytes of binary data follow the declared inputs")

    parameters = _object(document.get("parameters"), "request parameters")
    request = InferRequest(inputs=inputs)
    request.binary_by_default = bool(parameters.get("binary_data_output", False))
    if TOP_K_PARAMETER in parameters:
        request.top_k = _positive_int(parameters[TOP_K_PARAMETER], TOP_K_PARAMETER)
    if "id" in document:
        if not isinstance(document["id"], str):
            raise BadInput("request `id` must be a string")
        request.id = document["id"]
    if "outputs" in document:
        outputs = document["outputs"]
        if not isinstance(outputs, list):
            raise BadInput("`outputs` must be a list")
        request.outputs = []
        for output in outputs:
            output = _object(output, "each output")
            name = output.get("name")
            if not isinstance(name, str):
                raise BadInput("each output needs a string `name`")
            options = _object(output.get("parameters"), f"output {name} parameters")
            if any(key in options for key in _SHARED_MEMORY):
                raise BadInput(f"output {name}: shared memory is not supported by this server")
            count = _positive_int(options.get("classification", 0), f"output {name} classification")
            request.outputs.append(RequestedOutput(name, count))
            if "binary_data" in options:
                request.binary_outputs[name] = bool(options["binary_data"])
    return request


def encode_response(
    model: str,
    version: str,
    request: InferRequest,
    outputs: dict[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """The response body and, when binary outputs follow the JSON, the JSON header's length."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": tensors.datatype_of(array),
            "shape": list(array.shape),
        }
        if request.binary_outputs.get(name, request.binary_by_default):
            blob = tensors.to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensors.to_json(array)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    header = orjson.dumps(document)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
