"""The model repository's layout and tensor contract, defined once for its writer and readers.

`modelgate build` writes a model directory (training/repository.py); the gateway
(service/repository.py), the local Triton backend (backends/onnxruntime/model.py)
and the command line read it. File names and what a tensor is live here only.
Needs numpy, protobuf and tritonclient, never torch: the serving image imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype

# --- files of one model directory ----------------------------------------------------------

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"  # inside the numeric version directory
LABELS_FILE = "labels.txt"
PREPROCESSING_FILE = "preprocessing.json"
EVALUATION_FILE = "evaluation.json"
CARD_FILE = "MODEL_CARD.md"
# Written by `modelgate build` into `<model>/<version>/`: the MLflow run that made the version.
RUN_FILE = "run.json"
# Written by `modelgate build` into `<model>/<version>/`: the out-of-distribution detector
# (service/monitoring/ood.py) and its arrays.
OOD_FILE = "ood.json"
OOD_ARRAYS_FILE = "ood.npz"
# Written by `modelgate build` (or `modelgate profile`) into `<model>/<version>/`: binned input
# and output feature distributions the gateway's drift monitor compares live traffic with.
REFERENCE_PROFILE_FILE = "reference_profile.json"
# Triton's custom model configurations: `--model-config-name=gpu` loads configs/gpu.pbtxt.
GPU_CONFIG_FILE = "configs/gpu.pbtxt"
WARMUP_DIR = "warmup"
# Optional, beside config.pbtxt: how unpinned requests are split between versions, and which
# version shadows them (service/routing.py). Triton ignores it.
ROUTING_FILE = "routing.json"


def artifact_path(model_dir: Path, version: int | str | None, filename: str) -> Path:
    """A version's preprocessing/labels/tokenizer file: `<model>/<version>/<filename>` when the
    version carries its own (written by `modelgate build --new-version`), else the model-level
    `<model>/<filename>` (every version of a repository written before versions had their own)."""
    if version is not None:
        own = model_dir / str(version) / filename
        if own.is_file():
            return own
    return model_dir / filename


def is_model_dir(path: Path) -> bool:
    """A directory Triton serves as a model: it holds a config.pbtxt."""
    return (path / CONFIG_FILE).is_file()


def version_dirs(model_dir: Path) -> list[int]:
    """The model's numeric version directories, ascending."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a config.pbtxt with Triton's own protobuf schema (raises OSError, ParseError)."""
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


# --- tensors -------------------------------------------------------------------------------


def datatype_name(data_type: int | str) -> str:
    """Triton's wire datatype (FP32, INT64, BYTES, ...) for a config `data_type`.

    Accepts the protobuf enum value or its name (`TYPE_FP32`, as Triton passes the
    config to Python backends as JSON). The config's TYPE_STRING is BYTES on the wire.
    """
    name = model_config_pb2.DataType.Name(data_type) if isinstance(data_type, int) else data_type
    name = name.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model as Triton sees it (dims exclude the batch dim)."""

    name: str
    datatype: str  # Triton datatype name: FP32, INT64, BYTES, ...
    dims: tuple[int, ...]  # -1 marks a variable dimension

    @classmethod
    def from_config(cls, entry: Any) -> TensorSpec:
        """From a config.pbtxt `input`/`output` entry (protobuf message)."""
        return cls(entry.name, datatype_name(entry.data_type), tuple(int(d) for d in entry.dims))

    @cached_property  # checked on every request
    def np_dtype(self) -> np.dtype[Any]:
        """The numpy dtype Triton expects for this tensor."""
        return np.dtype(triton_to_np_dtype(self.datatype))

    @property
    def config_data_type(self) -> int:
        """The config.pbtxt `data_type` enum value (BYTES is TYPE_STRING there)."""
        name = "STRING" if self.datatype == "BYTES" else self.datatype
        return int(model_config_pb2.DataType.Value(f"TYPE_{name}"))

    @property
    def variable(self) -> bool:
        """True when some non-batch dimension is variable (-1)."""
        return any(d < 0 for d in self.dims)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly description (used by the model listing endpoints)."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.dims]}


# --- padding convention ----------------------------------------------------------------------
# Variable-length inputs are padded at the end; an input whose name contains MASK says which
# positions are real (1) and which are padding (0), so zero-padding a batch changes no answer.


def is_mask(spec: TensorSpec) -> bool:
    """True for the mask input of the padding convention."""
    return "MASK" in spec.name.upper()


def example_inputs(
    specs: Sequence[TensorSpec], batch: int, length: int, seed: int, padding: int = 0
) -> dict[str, np.ndarray]:
    """Valid random inputs (warm-up, tests, benchmarks): `length` for every variable dim.

    Masks are 1 except for the last `padding` positions (at least one stays real);
    integer inputs hold small ids (below any vocabulary size), floats are normal.
    """
    rng = np.random.default_rng(seed)
    real = max(1, length - padding)
    arrays = {}
    for spec in specs:
        shape = [batch, *(length if d < 0 else d for d in spec.dims)]
        if is_mask(spec):
            array = np.zeros(shape, dtype=spec.np_dtype)
            array[:, :real] = 1
        elif spec.np_dtype.kind in "iu":
            array = rng.integers(1, 10, size=shape).astype(spec.np_dtype)
        else:
            array = rng.standard_normal(shape).astype(spec.np_dtype)
        arrays[spec.name] = array
    return arrays
