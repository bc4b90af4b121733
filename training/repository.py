"""Writing a model into the Triton model repository.

The config is built as Triton's own `ModelConfig` protobuf (from tritonclient)
and serialised with protobuf's text format, so it always parses with Triton's
schema. Only fields that Triton's native onnxruntime backend understands are
used, so the same repository loads in the official image unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from service.model_contract import (
    CONFIG_FILE,
    GPU_CONFIG_FILE,
    LABELS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    WARMUP_DIR,
    TensorSpec,
    is_mask,
    parse_config,
    version_dirs,
)
from training.recipes import MAX_BATCH_SIZE

# Concrete length used for variable axes in warm-up requests.
WARMUP_LENGTH = 16

# Triton's dynamic batcher: no artificial delay. Triton still batches whatever
# queued while the instance was busy (docs/architecture.md, "Batching").
QUEUE_DELAY_US = 0
# ONNX Runtime threads per model instance. One: a second intra-op thread does not pay on
# these small models, and on the GRU its hand-offs gave Triton a p99 four to five times its
# p50 (docs/local-triton.md, "Threads per instance"). Scale with instances instead.
INTRA_OP_THREADS = 1


def model_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=name,
        backend="onnxruntime",
        max_batch_size=MAX_BATCH_SIZE,
        default_model_filename=MODEL_FILE,
    )
    for spec in inputs:
        config.input.add(name=spec.name, data_type=spec.config_data_type, dims=list(spec.dims))
    for spec in outputs:
        config.output.add(
            name=spec.name,
            data_type=spec.config_data_type,
            dims=list(spec.dims),
            label_filename=LABELS_FILE,
        )
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    # No default_queue_policy: on Triton 2.51 any queue policy (even max_queue_size
    # alone) stalls every in-flight request for ~0.5 s about once a second
    # (docs/local-triton.md, "Queue policy stalls"). The gateway bounds its own
    # queue and sheds load; Triton is not exposed to clients directly.
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    config.version_policy.latest.num_versions = 1
    # Same parameter names as Triton's native onnxruntime backend.
    config.parameters["intra_op_thread_count"].string_value = str(INTRA_OP_THREADS)
    config.parameters["inter_op_thread_count"].string_value = "1"
    warmup = config.model_warmup.add(name="batch_1", batch_size=1)
    for spec in inputs:
        dims = [WARMUP_LENGTH if d == -1 else d for d in spec.dims]
        entry = warmup.inputs[spec.name]
        entry.data_type = spec.config_data_type
        entry.dims.extend(dims)
        if is_mask(spec):
            entry.input_data_file = f"{spec.name}_ones"
        else:
            entry.zero_data = True
    return config


def gpu_variant(config: mc.ModelConfig) -> mc.ModelConfig:
    """The same model on one GPU instance (the GPU deployment loads it by config name)."""
    gpu = mc.ModelConfig()
    gpu.CopyFrom(config)
    del gpu.instance_group[:]
    gpu.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    return gpu


def render_config(config: mc.ModelConfig) -> str:
    header = (
        "# Triton model configuration, written by `modelgate build`.\n"
        "# Parsed by Triton's ModelConfig schema; runs on the native onnxruntime backend.\n"
    )
    body = text_format.MessageToString(config)
    # proto3 omits zero values; spell the queue delay out so the choice is visible.
    if QUEUE_DELAY_US == 0:
        body = body.replace(
            "dynamic_batching {\n", "dynamic_batching {\n  max_queue_delay_microseconds: 0\n", 1
        )
    return header + body


def next_version(model_dir: Path) -> int:
    versions = version_dirs(model_dir) if model_dir.exists() else []
    return max(versions, default=0) + 1


def write_model(
    model_dir: Path,
    version: int,
    onnx_model: bytes,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    preprocessing: dict[str, Any],
    labels: list[str],
    extra_files: dict[str, bytes],
    beside_others: bool = False,
) -> None:
    """Write config, ONNX file, labels, preprocessing.json and warm-up data of one version.

    `beside_others` (a new version next to served ones): labels, preprocessing.json and extra
    files (tokenizer) go into the version directory, where they override the model-level files
    the older versions keep reading (service/model_contract.py `artifact_path`), and the
    config keeps the version_policy it has, which decides how many versions are served.
    """
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / MODEL_FILE).write_bytes(onnx_model)
    config = model_config(model_dir.name, inputs, outputs)
    config_path = model_dir / CONFIG_FILE
    if beside_others and config_path.is_file():
        config.version_policy.CopyFrom(parse_config(config_path).version_policy)
    config_path.write_text(render_config(config), encoding="utf-8")
    (model_dir / GPU_CONFIG_FILE).parent.mkdir(exist_ok=True)
    (model_dir / GPU_CONFIG_FILE).write_text(render_config(gpu_variant(config)), encoding="utf-8")
    artifacts_dir = version_dir if beside_others else model_dir
    (artifacts_dir / LABELS_FILE).write_text(
        "".join(f"{label}\n" for label in labels), encoding="utf-8"
    )
    document = {
        "schema_version": 1,
        "kind": preprocessing["kind"],
        "output": outputs[0].name,
        "labels_file": LABELS_FILE,
        preprocessing["kind"]: preprocessing[preprocessing["kind"]],
    }
    (artifacts_dir / PREPROCESSING_FILE).write_text(
        json.dumps(document, indent=2) + "\n", encoding="utf-8"
    )
    for name, blob in extra_files.items():
        (artifacts_dir / name).write_bytes(blob)
    warmup_dir = model_dir / WARMUP_DIR
    warmup_dir.mkdir(exist_ok=True)
    for spec in inputs:
        if is_mask(spec):
            shape = [WARMUP_LENGTH if d == -1 else d for d in spec.dims]
            ones = np.ones(shape, dtype=spec.np_dtype)
            (warmup_dir / f"{spec.name}_ones").write_bytes(ones.tobytes())
