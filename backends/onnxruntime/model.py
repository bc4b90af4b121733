"""A Python-based Triton backend that runs a model's ONNX file with ONNX Runtime.

Triton (2.39+) serves every model whose config says `backend: "onnxruntime"`
with `<backend-directory>/onnxruntime/model.py` when no native
`libtriton_onnxruntime.so` is present. The pip-shipped `tritonserver` has only
the Python backend, so this file lets the very same repository that the
official image serves natively load unchanged on a developer machine.

Everything comes from the config Triton passes in (input/output names, data
types, dims, `max_batch_size`, `default_model_filename`, `parameters`); no
model is named here.

Batching: Triton's dynamic batcher hands `execute` several requests at once.
They run as **one** ONNX Runtime call: inputs are concatenated along the batch
axis and the outputs split back per request. Variable-length inputs (`-1` dims
after the batch dim) are zero-padded at the end to the longest in the batch,
which the repository's padding convention (zeros at the end plus a mask input)
makes exact. When an output itself has a variable dim, padding would change
its shape, so requests are instead grouped by identical input shapes.

Failure isolation: a request whose inputs cannot be read fails alone; if a
batched run fails, its requests are retried one by one so only the bad one
gets an error.

Threads (per model instance): config `parameters` `intra_op_thread_count` /
`inter_op_thread_count` (the keys the native onnxruntime backend reads), else
the environment variables `MODELGATE_ORT_INTRA_OP_THREADS` /
`MODELGATE_ORT_INTER_OP_THREADS`, else 2 intra-op and 1 inter-op thread (a
small machine). Idle ORT threads do not spin by default: on a busy 2-core machine
spinning threads stalled requests for ~0.5 s (p99 505 ms vs 1-21 ms without, see
docs/local-triton.md); `MODELGATE_ORT_ALLOW_SPINNING=1` turns spinning back on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The stub runs the gateway's Python environment (service/local_triton.py puts it first
# on PATH), so the repository's contract is imported, not copied.
from service.model_contract import MODEL_FILE, TensorSpec, datatype_name

DEFAULT_INTRA_OP_THREADS = 2
DEFAULT_INTER_OP_THREADS = 1
ENV_INTRA_OP = "MODELGATE_ORT_INTRA_OP_THREADS"
ENV_INTER_OP = "MODELGATE_ORT_INTER_OP_THREADS"
ENV_ALLOW_SPINNING = "MODELGATE_ORT_ALLOW_SPINNING"


def _specs(entries: list[dict[str, Any]]) -> list[TensorSpec]:
    specs = []
    for entry in entries:
        dims = tuple(int(d) for d in entry.get("dims", []))
        reshape = entry.get("reshape")
        if reshape is not None:
            # A config reshape is applied by Triton only for native backends; refuse
            # rather than silently feed ONNX Runtime the wrong shape.
            raise ValueError(f"tensor {entry['name']}: 'reshape' is not supported by this backend")
        specs.append(TensorSpec(entry["name"], datatype_name(entry["data_type"]), dims))
    return specs


def _parameter(config: dict[str, Any], key: str) -> str | None:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value not in (None, "") else None


def _thread_count(config: dict[str, Any], key: str, env: str, default: int) -> int:
    raw = _parameter(config, key) or os.environ.get(env) or str(default)
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not an integer") from None
    if count < 0:
        raise ValueError(f"{key}={count} must be >= 0 (0: ORT decides)")
    return count


def pad_and_stack(arrays: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Zero-pad arrays at the end of every non-batch axis to the largest, then concatenate.

    Returns the batch and each array's batch size (to split outputs back).
    """
    sizes = [int(a.shape[0]) for a in arrays]
    if len(arrays) == 1:
        return arrays[0], sizes
    target = tuple(max(a.shape[axis] for a in arrays) for axis in range(1, arrays[0].ndim))
    padded = []
    for array in arrays:
        missing = [(0, t - s) for s, t in zip(array.shape[1:], target, strict=True)]
        if any(after for _, after in missing):
            array = np.pad(array, [(0, 0), *missing], mode="constant", constant_values=0)
        padded.append(array)
    return np.concatenate(padded, axis=0), sizes


def split_batch(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Split a batched output back into per-request arrays of the given batch sizes."""
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(array, bounds, axis=0))


class TritonPythonModel:
    """Serves one model instance: one ONNX Runtime session."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.model_name = config.get("name", args.get("model_name", "?"))
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.inputs = _specs(config.get("input", []))
        self.outputs = _specs(config.get("output", []))
        if not self.inputs or not self.outputs:
            raise ValueError(f"{self.model_name}: config.pbtxt must declare its inputs and outputs")
        # Padding is exact only when no output has a variable dim (it would carry the pad).
        self.pad_variable_inputs = not any(o.variable for o in self.outputs) and all(
            i.np_dtype.kind in "biuf" for i in self.inputs
        )

        filename = config.get("default_model_filename") or MODEL_FILE
        model_path = Path(args["model_repository"]) / args["model_version"] / filename
        if not model_path.is_file():
            raise ValueError(f"{self.model_name}: {model_path} not found")

        options = ort.SessionOptions()
        options.intra_op_num_threads = _thread_count(
            config, "intra_op_thread_count", ENV_INTRA_OP, DEFAULT_INTRA_OP_THREADS
        )
        options.inter_op_num_threads = _thread_count(
            config, "inter_op_thread_count", ENV_INTER_OP, DEFAULT_INTER_OP_THREADS
        )
        if os.environ.get(ENV_ALLOW_SPINNING, "0") != "1":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = [i.name for i in self.inputs if i.name not in graph_inputs] + [
            o.name for o in self.outputs if o.name not in graph_outputs
        ]
        if missing:
            raise ValueError(
                f"{self.model_name}: config tensors {missing} are not in {model_path.name} "
                f"(inputs {sorted(graph_inputs)}, outputs {sorted(graph_outputs)})"
            )
        self.output_names = [o.name for o in self.outputs]

    # -- execution -------------------------------------------------------------------------
    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        pending: list[tuple[int, dict[str, np.ndarray]]] = []
        for index, request in enumerate(requests):
            try:
                pending.append((index, self._read_inputs(request)))
            except Exception as exc:
                responses[index] = self._error(exc)

        if self.max_batch_size == 0:
            # No batch dim: every request is its own run.
            groups = [[item] for item in pending]
        elif self.pad_variable_inputs:
            groups = [pending] if pending else []
        else:
            by_shape: dict[tuple[tuple[int, ...], ...], list[tuple[int, dict[str, np.ndarray]]]]
            by_shape = {}
            for item in pending:
                key = tuple(item[1][spec.name].shape[1:] for spec in self.inputs)
                by_shape.setdefault(key, []).append(item)
            groups = list(by_shape.values())

        for group in groups:
            self._run_group(group, responses)
        return responses

    def _read_inputs(self, request: Any) -> dict[str, np.ndarray]:
        arrays = {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise ValueError(f"missing input {spec.name}")
            array = tensor.as_numpy()
            if array.dtype != spec.np_dtype:
                raise ValueError(
                    f"input {spec.name} has dtype {array.dtype}, expected {spec.np_dtype}"
                )
            arrays[spec.name] = array
        return arrays

    def _run_group(
        self, group: list[tuple[int, dict[str, np.ndarray]]], responses: list[Any]
    ) -> None:
        try:
            results = self._run([arrays for _, arrays in group])
        except Exception as exc:
            if len(group) == 1:
                responses[group[0][0]] = self._error(exc)
                return
            # Retry one by one so one bad request cannot fail its batch-mates.
            for item in group:
                self._run_group([item], responses)
            return
        for (index, _), outputs in zip(group, results, strict=True):
            tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One ONNX Runtime call for the whole group; outputs split back per request."""
        if self.max_batch_size == 0:
            (arrays,) = batch
            feed = {spec.name: arrays[spec.name] for spec in self.inputs}
            values = self.session.run(self.output_names, feed)
            return [self._cast_outputs(dict(zip(self.output_names, values, strict=True)))]

        feed = {}
        sizes: list[int] = []
        for spec in self.inputs:
            feed[spec.name], sizes = pad_and_stack([arrays[spec.name] for arrays in batch])
        values = self.session.run(self.output_names, feed)
        per_request: list[dict[str, np.ndarray]] = [{} for _ in batch]
        for name, value in zip(self.output_names, values, strict=True):
            if value.shape[0] != sum(sizes):
                raise ValueError(
                    f"output {name} has batch {value.shape[0]}, inputs had {sum(sizes)}"
                )
            for outputs, part in zip(per_request, split_batch(value, sizes), strict=True):
                outputs[name] = part
        return [self._cast_outputs(outputs) for outputs in per_request]

    def _cast_outputs(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            spec.name: np.ascontiguousarray(outputs[spec.name], dtype=spec.np_dtype)
            for spec in self.outputs
        }

    def _error(self, exc: Exception) -> Any:
        message = f"{self.model_name}: {type(exc).__name__}: {exc}".splitlines()[0]
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self) -> None:
        self.session = None
