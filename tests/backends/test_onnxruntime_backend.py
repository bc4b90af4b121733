"""The Python-based onnxruntime backend's batching helpers, and the padding convention
that makes zero-padding a batch exact, checked on the repository's real ONNX files.

The end-to-end behaviour (one run per batch, failures isolated) is tested against a
real server in tests/service/test_local_triton.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from service.local_triton import PROJECT_ROOT, _pytriton_dist
from service.model_contract import (
    CONFIG_FILE,
    MODEL_FILE,
    TensorSpec,
    example_inputs,
    is_model_dir,
    parse_config,
    version_dirs,
)
from tests.conftest import served_repository


@pytest.fixture(scope="module")
def backend() -> ModuleType:
    """backends/onnxruntime/model.py, importable outside the stub (its utils are plain Python)."""
    server_dir, _, _ = _pytriton_dist()
    sys.path.insert(0, str(server_dir / "backends" / "python"))
    try:
        path = PROJECT_ROOT / "backends" / "onnxruntime" / "model.py"
        spec = importlib.util.spec_from_file_location("onnxruntime_backend_model", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


def test_pad_and_stack_zero_pads_at_the_end(backend: ModuleType) -> None:
    a = np.ones((1, 2, 3), np.float32)
    b = np.full((2, 4, 3), 2.0, np.float32)
    batch, sizes = backend.pad_and_stack([a, b])
    assert sizes == [1, 2]
    assert batch.shape == (3, 4, 3)
    np.testing.assert_array_equal(batch[0, :2], a[0])
    np.testing.assert_array_equal(batch[0, 2:], 0.0)
    np.testing.assert_array_equal(batch[1:], b)


def test_split_batch_inverts_stacking(backend: ModuleType) -> None:
    output = np.arange(12, dtype=np.float32).reshape(6, 2)
    parts = backend.split_batch(output, [1, 3, 2])
    assert [p.shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(np.concatenate(parts), output)


def test_thread_counts_config_then_env_then_default(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, env = "intra_op_thread_count", backend.ENV_INTRA_OP
    monkeypatch.delenv(env, raising=False)
    assert backend._thread_count({}, key, env, 2) == 2
    monkeypatch.setenv(env, "3")
    assert backend._thread_count({}, key, env, 2) == 3
    config = {"parameters": {key: {"string_value": "1"}}}
    assert backend._thread_count(config, key, env, 2) == 1
    with pytest.raises(ValueError, match="not an integer"):
        backend._thread_count({"parameters": {key: {"string_value": "x"}}}, key, env, 2)


def _variable_models(repository: Path) -> dict[str, tuple[model_config_pb2.ModelConfig, Path]]:
    """Models with a variable-length input: their config and served ONNX file."""
    found = {}
    for model_dir in sorted(p for p in repository.iterdir() if is_model_dir(p)):
        config = parse_config(model_dir / CONFIG_FILE)
        if any(d < 0 for spec in config.input for d in spec.dims):
            version = str(version_dirs(model_dir)[-1])
            found[model_dir.name] = (
                config,
                model_dir / version / (config.default_model_filename or MODEL_FILE),
            )
    return found


VARIABLE_MODELS = sorted(_variable_models(served_repository()))
MODEL_NAMES = sorted(p.name for p in served_repository().iterdir() if is_model_dir(p))


@pytest.mark.parametrize("name", VARIABLE_MODELS)
def test_zero_padding_does_not_change_answers(model_repository: Path, name: str) -> None:
    """The repository's padding convention: padding at the end with zeros (mask 0) is exact."""
    config, onnx_path = _variable_models(model_repository)[name]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    length, padded_length = 5, 13
    inputs = example_inputs([TensorSpec.from_config(t) for t in config.input], 1, length, seed=0)
    padded = {}
    for spec in config.input:
        pad = [(0, 0)] + [(0, padded_length - length if d < 0 else 0) for d in spec.dims]
        padded[spec.name] = np.pad(inputs[spec.name], pad)
    outputs = [o.name for o in config.output]
    plain = session.run(outputs, inputs)
    with_padding = session.run(outputs, padded)
    for out, a, b in zip(outputs, plain, with_padding, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=out)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backend_reads_the_tensors_the_gateway_reads(
    backend: ModuleType, model_repository: Path, name: str
) -> None:
    """Triton hands the backend its config as JSON; it must name the same tensors."""
    config = parse_config(model_repository / name / CONFIG_FILE)
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    for direction in ("input", "output"):
        read = backend._specs(as_json[direction])
        assert all(isinstance(spec, TensorSpec) for spec in read)
        assert read == [TensorSpec.from_config(t) for t in getattr(config, direction)]
