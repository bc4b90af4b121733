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
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype

from service.local_triton import PROJECT_ROOT, _pytriton_dist


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


def _variable_models(repository: Path) -> list[tuple[str, model_config_pb2.ModelConfig, Path]]:
    found = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        if any(d < 0 for spec in config.input for d in spec.dims):
            version = max(int(p.name) for p in config_path.parent.iterdir() if p.name.isdigit())
            onnx_path = (
                config_path.parent / str(version) / (config.default_model_filename or "model.onnx")
            )
            found.append((config_path.parent.name, config, onnx_path))
    return found


def test_zero_padding_does_not_change_answers(model_repository: Path) -> None:
    """The repository's padding convention: padding at the end with zeros (mask 0) is exact."""
    models = _variable_models(model_repository)
    if not models:
        pytest.skip("no model with variable-length inputs")
    rng = np.random.default_rng(0)
    for name, config, onnx_path in models:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        length, padded_length = 5, 13
        inputs, padded = {}, {}
        for spec in config.input:
            dtype = triton_to_np_dtype(model_config_pb2.DataType.Name(spec.data_type)[5:])
            shape = [1, *(length if d < 0 else d for d in spec.dims)]
            if "MASK" in spec.name.upper():
                array = np.ones(shape, dtype)
            elif np.issubdtype(dtype, np.integer):
                array = rng.integers(1, 10, size=shape).astype(dtype)
            else:
                array = rng.standard_normal(shape).astype(dtype)
            inputs[spec.name] = array
            pad = [(0, 0)] + [(0, padded_length - length if d < 0 else 0) for d in spec.dims]
            padded[spec.name] = np.pad(array, pad)
        outputs = [o.name for o in config.output]
        plain = session.run(outputs, inputs)
        with_padding = session.run(outputs, padded)
        for out, a, b in zip(outputs, plain, with_padding, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=f"{name}.{out}")
