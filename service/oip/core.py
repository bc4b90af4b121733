"""What the OIP transports share: model metadata and the two ways to infer.

1. Tensor passthrough: the model's own inputs (as in config.pbtxt) go to `DataPlane.infer_tensors`
   (validated, batched, forwarded to Triton).
2. Raw payloads: one extra BYTES input per model (`IMAGE_BYTES`, `TEXT` or `SEQUENCE_JSON`, one
   element per item) goes to `DataPlane.predict` (decoded, preprocessed, batched).

Either way the answer may hold the model's outputs (`LOGITS`) plus `PROBABILITIES` (softmax),
`LABELS` (the `top_k` best label names, best first) and, when the model has an out-of-distribution
detector and monitoring is on, `OOD_SCORE` (FP32 [batch, 1]) and `OOD` (BOOL [batch, 1]):
extra outputs rather than response parameters, because parameters are one per response and a
batch needs one value per row (docs/out-of-distribution.md). Triton's classification extension
(`classification: k` on a requested output) is honoured too, answering "score:index:label".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from service.dataplane import OOD_KEY, DataPlane, RequestScope
from service.errors import BadInput
from service.postprocess import softmax
from service.preprocess.image import decode_base64
from service.repository import ModelSpec, PayloadKind, TensorSpec

SERVER_NAME = "modelgate"
SERVER_EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
)
PLATFORM = "onnxruntime_onnx"

RAW_INPUTS: dict[PayloadKind, str] = {
    "image": "IMAGE_BYTES",  # encoded image files (PNG, JPEG, ...); base64 strings in JSON
    "text": "TEXT",  # UTF-8 strings
    "sequence": "SEQUENCE_JSON",  # a JSON list of timesteps, each a list of channel values
}
PROBABILITIES = "PROBABILITIES"
LABELS = "LABELS"
OOD_SCORE = "OOD_SCORE"
OOD = "OOD"
OOD_OUTPUTS = (OOD_SCORE, OOD)
TOP_K_PARAMETER = "top_k"
DEFAULT_TOP_K = 1  # LABELS holds the best label unless the request asks for more


@dataclass(frozen=True)
class RequestedOutput:
    """One entry of a request's `outputs`; `classification` > 0 asks for the top-k as strings."""

    name: str
    classification: int = 0


@dataclass(frozen=True)
class ModelMetadata:
    """The model as OIP clients see it (inputs include the raw-payload input)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        """Every output's name, in order."""
        return tuple(t.name for t in self.outputs)

    @cached_property
    def all_outputs(self) -> tuple[RequestedOutput, ...]:
        """What a request without `outputs` gets: every output, unclassified."""
        return tuple(RequestedOutput(t.name) for t in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
        }


def raw_input_name(spec: ModelSpec) -> str:
    """Name of the model's raw-payload BYTES input."""
    return RAW_INPUTS[spec.kind]


# Metadata per served spec object, built once: `infer` needs the output names on every request.
_METADATA: dict[int, tuple[ModelSpec, ModelMetadata]] = {}


def model_metadata(spec: ModelSpec) -> ModelMetadata:
    """Inputs: the model's own plus the raw-payload one; outputs: its own plus probabilities and
    labels. Shapes carry the leading batch dimension (-1), as Triton reports them."""
    cached = _METADATA.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    metadata = _build_metadata(spec)
    _METADATA[id(spec)] = (spec, metadata)
    return metadata


def _build_metadata(spec: ModelSpec) -> ModelMetadata:
    classes = len(spec.labels)
    raw = TensorSpec(raw_input_name(spec), "BYTES", (1,))
    extra_outputs = (
        TensorSpec(PROBABILITIES, "FP32", (classes,)),
        TensorSpec(LABELS, "BYTES", (-1,)),
        TensorSpec(OOD_SCORE, "FP32", (1,)),
        TensorSpec(OOD, "BOOL", (1,)),
    )
    return ModelMetadata(
        name=spec.name,
        versions=spec.versions,
        platform=PLATFORM,
        inputs=(*spec.inputs, raw),
        outputs=(*spec.outputs, *extra_outputs),
    )


def _payload(kind: PayloadKind, name: str, item: Any) -> Any:
    """One raw payload for the model's preprocessor from one BYTES element."""
    if kind == "image":
        if isinstance(item, str):  # JSON cannot carry binary data: base64 there
            return decode_base64(item)
        return item
    if kind == "text":
        return item
    try:
        return json.loads(item)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(
            f"input {name}: each element must be a JSON list of timesteps ({exc})"
        ) from None


def _raw_payloads(spec: ModelSpec, inputs: dict[str, np.ndarray]) -> list[Any]:
    name = raw_input_name(spec)
    if len(inputs) != 1:
        others = sorted(set(inputs) - {name})
        raise BadInput(f"input {name} carries raw payloads and must come alone, not with {others}")
    array = inputs[name]
    if array.dtype != np.object_:
        raise BadInput(f"input {name} must be BYTES, got {array.dtype}")
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
        raise BadInput(f"input {name} must have shape [batch, 1], got {list(array.shape)}")
    return [_payload(spec.kind, name, item) for item in array.reshape(-1)]


def _labels(probabilities: np.ndarray, labels: tuple[str, ...], k: int) -> np.ndarray:
    k = max(1, min(k, probabilities.shape[1]))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    result = np.empty(order.shape, dtype=object)
    for (row, col), index in np.ndenumerate(order):
        result[row, col] = labels[index].encode() if index < len(labels) else str(index).encode()
    return result


def _classification(values: np.ndarray, labels: tuple[str, ...], k: int) -> np.ndarray:
    """Triton's classification extension: "value:index:label" for the k largest values."""
    rows = values.reshape(values.shape[0], -1)
    k = max(1, min(k, rows.shape[1]))
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    result = np.empty(order.shape, dtype=object)
    for (row, col), index in np.ndenumerate(order):
        text = f"{rows[row, index]:f}:{index}"
        if index < len(labels):
            text += f":{labels[index]}"
        result[row, col] = text.encode()
    return result


async def infer(
    dataplane: DataPlane,
    model: str,
    version: str | None,
    inputs: dict[str, np.ndarray],
    requested: list[RequestedOutput] | None,
    top_k: int | None,
    scope: RequestScope,
) -> dict[str, np.ndarray]:
    """Run one OIP inference (passthrough or raw payloads); outputs in the order asked for.

    The version that answers is the one `DataPlane.route` picks (`scope.spec` afterwards);
    inputs and outputs are the model's (config.pbtxt), labels that version's own.
    """
    spec = dataplane.model(model, version)
    if not inputs:
        raise BadInput("the request has no inputs")
    metadata = model_metadata(spec)
    wanted: Sequence[RequestedOutput]
    if not requested:
        wanted = metadata.all_outputs
    else:
        wanted = requested
        for output in wanted:
            if output.name not in metadata.output_names:
                raise BadInput(
                    f"model {spec.name} has no output {output.name!r}; "
                    f"it has {list(metadata.output_names)}"
                )
            if output.classification < 0:
                raise BadInput(f"output {output.name}: classification count must be positive")
    k = DEFAULT_TOP_K if top_k is None else top_k
    if k < 1:
        raise BadInput(f"parameter {TOP_K_PARAMETER} must be at least 1")

    if raw_input_name(spec) in inputs:
        logits = await dataplane.infer_payloads(
            spec.name, version, _raw_payloads(spec, inputs), scope
        )
        model_outputs = {spec.output: logits}
    else:
        model_outputs = await dataplane.infer_tensors(spec.name, version, inputs, scope=scope)

    labels = (scope.spec or spec).labels
    logits = model_outputs[spec.output]
    available = dict(model_outputs)
    ood = scope.extra.get(OOD_KEY)
    if ood is not None:
        available[OOD_SCORE] = ood.scores.astype(np.float32).reshape(-1, 1)
        available[OOD] = ood.flags.reshape(-1, 1)
    elif not requested:  # no detector, or monitoring off: "every output" means the others
        wanted = [o for o in wanted if o.name not in OOD_OUTPUTS]
    if any(o.name in (PROBABILITIES, LABELS) for o in wanted):
        probabilities = softmax(logits.reshape(logits.shape[0], -1)).astype(np.float32)
        available[PROBABILITIES] = probabilities
        available[LABELS] = _labels(probabilities, labels, k)
    answer: dict[str, np.ndarray] = {}
    for output in wanted:
        array = available.get(output.name)
        if array is None and output.name in OOD_OUTPUTS:
            raise BadInput(
                f"output {output.name} needs out-of-distribution monitoring, which is off for "
                f"model {spec.name} (MODELGATE_OOD_ENABLED, or no detector in its version)"
            )
        if array is None:  # a second model output the raw path does not produce
            raise BadInput(f"output {output.name} is only available with tensor inputs")
        if output.classification:
            if array.dtype == np.object_:
                raise BadInput(f"output {output.name} holds strings and cannot be classified")
            array = _classification(array, labels, output.classification)
        answer[output.name] = array
    return answer
