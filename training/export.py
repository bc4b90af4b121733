"""ONNX export with dynamic batch and sequence axes, and a parity check against PyTorch.

The dynamo exporter is used on purpose: the legacy TorchScript exporter bakes a
Reshape with the sample's shape into `nn.TransformerEncoder`, producing a graph
that fails at any other batch size or length. Parity is therefore checked at
several batch sizes and lengths on every export, never only at the sample.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from service.model_contract import TensorSpec
from training.recipes import MAX_BATCH_SIZE

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
PARITY_BATCH_SIZES = (1, 3, MAX_BATCH_SIZE)
OPSET = 18


class ParityError(RuntimeError):
    """The exported graph disagrees with the PyTorch model."""


@dataclass(frozen=True)
class ParityCase:
    batch: int
    length: int
    max_abs_diff: float


def export_onnx(
    model: nn.Module, inputs: list[TensorSpec], outputs: list[TensorSpec], sample: list[np.ndarray]
) -> bytes:
    """Export to a self-contained ONNX model (weights inline) with dynamic axes."""
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    length = torch.export.Dim("length", min=1, max=4096)
    dynamic_shapes = []
    for spec in inputs:
        axes = {0: batch}
        for axis, size in enumerate(spec.dims, start=1):
            if size == -1:
                axes[axis] = length
        dynamic_shapes.append(axes)
    program = torch.onnx.export(
        model,
        tuple(torch.from_numpy(x) for x in sample),
        dynamo=True,
        external_data=False,
        input_names=[s.name for s in inputs],
        output_names=[s.name for s in outputs],
        dynamic_shapes=tuple(dynamic_shapes),
        opset_version=OPSET,
        verbose=False,
    )
    assert program is not None
    buffer = io.BytesIO()
    program.save(buffer)  # type: ignore[arg-type]
    blob = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(blob))
    return blob


def ort_session(model: bytes | Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def check_parity(
    model: nn.Module,
    onnx_model: bytes,
    inputs: list[TensorSpec],
    make_inputs: Callable[[int, int], list[np.ndarray]],
    lengths: tuple[int, ...],
) -> list[ParityCase]:
    """Compare ONNX Runtime with PyTorch at each (batch, length); ParityError beyond tolerance."""
    session = ort_session(onnx_model)
    cases = []
    for batch in PARITY_BATCH_SIZES:
        for length in lengths:
            arrays = make_inputs(batch, length)
            with torch.no_grad():
                expected = model(*(torch.from_numpy(a) for a in arrays)).numpy()
            feed = {s.name: a for s, a in zip(inputs, arrays, strict=True)}
            try:
                (actual,) = session.run(None, feed)
            except Exception as exc:  # ONNX Runtime raises its own untyped Fail errors
                raise ParityError(
                    f"batch {batch}, length {length}: ONNX Runtime cannot run the graph: {exc}"
                ) from exc
            if actual.shape != expected.shape:
                raise ParityError(
                    f"batch {batch}, length {length}: ONNX output shape {actual.shape} "
                    f"!= PyTorch {expected.shape}"
                )
            diff = float(np.max(np.abs(actual - expected)))
            if not np.allclose(actual, expected, atol=PARITY_ATOL, rtol=PARITY_RTOL):
                raise ParityError(
                    f"batch {batch}, length {length}: max |ONNX - PyTorch| = {diff:.3g} "
                    f"exceeds atol={PARITY_ATOL}, rtol={PARITY_RTOL}"
                )
            cases.append(ParityCase(batch, length, diff))
    return cases
