"""Wire formats of OIP tensors: raw little-endian bytes, JSON lists, and Triton's BYTES encoding.

Shared by the HTTP binary extension (`binary_data_size`), gRPC `raw_input_contents` and the
JSON `data` field. Every problem is a `BadInput` naming the tensor, never a numpy traceback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from service.errors import BadInput

# OIP datatype -> numpy dtype (little-endian, as the protocol's raw encoding is).
_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
# numpy dtype -> OIP datatype, for answers (a dict lookup instead of comparing every dtype).
_DATATYPES: dict[np.dtype[Any], str] = {
    **{dtype: name for name, dtype in _DTYPES.items()},
    np.dtype(np.object_): BYTES,
}
# JSON values a datatype accepts, as numpy dtype kinds (ints are fine for floats, not vice versa).
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


def numpy_dtype(name: str, datatype: str) -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype (BYTES: object); `BadInput` if unknown."""
    if datatype == BYTES:
        return np.dtype(np.object_)
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise BadInput(
            f"input {name}: datatype {datatype!r} is not supported "
            f"(use one of {', '.join([*_DTYPES, BYTES])})"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array."""
    name = _DATATYPES.get(array.dtype)
    if name is None:
        raise ValueError(f"no OIP datatype for numpy dtype {array.dtype}")
    return name


def check_shape(name: str, shape: Any) -> list[int]:
    """A validated shape: a list of non-negative integers."""
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise BadInput(f"input {name}: shape must be a list of integers")
    dims = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise BadInput(f"input {name}: shape {list(shape)} must hold non-negative integers")
        dims.append(int(dim))
    return dims


def from_bytes(name: str, datatype: str, shape: list[int], data: bytes | memoryview) -> np.ndarray:
    """A tensor from its raw encoding (row-major little-endian; BYTES: 4-byte length prefixes)."""
    count = math.prod(shape)
    if datatype == BYTES:
        try:
            array = deserialize_bytes_tensor(bytes(data)) if len(data) else np.empty(0, object)
        except Exception as exc:  # struct.error on a truncated length prefix
            raise BadInput(f"input {name}: malformed BYTES data ({exc})") from None
        if array.size != count:
            raise BadInput(f"input {name}: {array.size} BYTES elements for shape {shape}")
        return array.reshape(shape)
    dtype = numpy_dtype(name, datatype)
    if len(data) != count * dtype.itemsize:
        raise BadInput(
            f"input {name}: {len(data)} bytes of data for {datatype} shape {shape} "
            f"(needs {count * dtype.itemsize})"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _flatten(values: Any) -> list[Any]:
    if not isinstance(values, list):
        return [values]
    flat: list[Any] = []
    for value in values:
        flat.extend(_flatten(value))
    return flat


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    """A tensor from the JSON `data` field (flat or nested, row-major)."""
    count = math.prod(shape)
    if datatype == BYTES:
        flat = _flatten(data)
        if not all(isinstance(v, str) for v in flat):
            raise BadInput(f"input {name}: BYTES data in JSON must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        dtype = numpy_dtype(name, datatype)
        try:
            raw = np.asarray(data)
        except ValueError:
            raise BadInput(f"input {name}: data is not a rectangular list of numbers") from None
        if raw.size and raw.dtype.kind not in _JSON_KINDS[dtype.kind]:
            raise BadInput(f"input {name}: data does not hold {datatype} values")
        array = raw.astype(dtype).reshape(-1)
    if array.size != count:
        raise BadInput(f"input {name}: {array.size} values for shape {shape} (needs {count})")
    return array.reshape(shape)


def to_bytes(array: np.ndarray) -> bytes:
    """The raw encoding of a tensor (the inverse of `from_bytes`)."""
    if array.dtype == np.object_:
        if array.size == 0:
            return b""
        serialized = serialize_byte_tensor(array)
        return bytes(serialized.item())
    return np.ascontiguousarray(array).tobytes()


def to_json(array: np.ndarray) -> list[Any]:
    """The flat JSON `data` of a tensor (BYTES elements as UTF-8 strings)."""
    flat = array.reshape(-1)
    if array.dtype == np.object_:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    values: list[Any] = flat.tolist()
    return values
