"""The local Triton server: a real tritonserver serving the committed repository.

Everything here talks to the real server started by the `triton_server` fixture
(or, for the launcher's error paths, to a real server started on purpose).
Reference outputs come from onnxruntime on the same ONNX files.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from service.local_triton import PROJECT_ROOT, LocalTriton, LocalTritonError, free_port
from service.model_contract import (
    CONFIG_FILE,
    MODEL_FILE,
    TensorSpec,
    datatype_name,
    example_inputs,
    is_mask,
    is_model_dir,
    parse_config,
    version_dirs,
)
from tests.conftest import served_repository

pytestmark = pytest.mark.triton

VARIABLE_LENGTHS = (3, 9, 17)  # lengths used for `-1` dims; several, so batches need padding


@dataclass(frozen=True)
class ModelFiles:
    name: str
    config: model_config_pb2.ModelConfig
    onnx_path: Path


def load_models(repository: Path) -> list[ModelFiles]:
    models = []
    for model_dir in sorted(p for p in repository.iterdir() if is_model_dir(p)):
        config = parse_config(model_dir / CONFIG_FILE)
        filename = config.default_model_filename or MODEL_FILE
        onnx_path = model_dir / str(version_dirs(model_dir)[-1]) / filename
        models.append(ModelFiles(model_dir.name, config, onnx_path))
    return models


# The served models, known at collection so that each gets its own test cases.
MODEL_NAMES = [m.name for m in load_models(served_repository())]


def make_inputs(model: ModelFiles, batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Valid inputs for any model; the last positions are padding, as the gateway sends them."""
    specs = [TensorSpec.from_config(t) for t in model.config.input]
    return example_inputs(specs, batch, length, seed, padding=2)


def onnxruntime_outputs(model: ModelFiles, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.config.output]
    return dict(zip(names, session.run(names, inputs), strict=True))


def http_infer(url: str, model: str, arrays: dict[str, np.ndarray]) -> httpclient.InferResult:
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), _client_dtype(array))
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    with httpclient.InferenceServerClient(url) as client:
        return client.infer(model, inputs)


def grpc_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), _client_dtype(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _client_dtype(array: np.ndarray) -> str:
    return {
        np.dtype(np.float32): "FP32",
        np.dtype(np.float64): "FP64",
        np.dtype(np.int64): "INT64",
        np.dtype(np.int32): "INT32",
    }[array.dtype]


def scrape_counter(metrics_url: str, metric: str, model: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def models(model_repository: Path) -> list[ModelFiles]:
    found = load_models(model_repository)
    assert found, f"no models in {model_repository}"
    return found


@pytest.fixture(scope="module")
def by_name(models: list[ModelFiles]) -> dict[str, ModelFiles]:
    return {m.name: m for m in models}


# -- readiness and metadata ----------------------------------------------------------------
def test_the_index_lists_every_model(triton_server: LocalTriton, models: list[ModelFiles]) -> None:
    with httpclient.InferenceServerClient(triton_server.http_url) as client:
        assert client.is_server_ready()
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert set(index) == {m.name for m in models}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_is_ready(triton_server: LocalTriton, name: str) -> None:
    with httpclient.InferenceServerClient(triton_server.http_url) as client:
        assert client.is_model_ready(name)
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert index[name]["state"] == "READY"


def _expected_tensors(model: ModelFiles, tensors: object) -> list[tuple[str, str, list[int]]]:
    batch = [-1] if model.config.max_batch_size > 0 else []
    return [
        (t.name, datatype_name(t.data_type), [*batch, *t.dims])
        for t in tensors  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_http_metadata_matches_config(
    triton_server: LocalTriton, by_name: dict[str, ModelFiles], name: str
) -> None:
    model = by_name[name]
    with httpclient.InferenceServerClient(triton_server.http_url) as client:
        meta = client.get_model_metadata(model.name)
        served = client.get_model_config(model.name)
    got_in = [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]]
    got_out = [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]]
    assert got_in == _expected_tensors(model, model.config.input)
    assert got_out == _expected_tensors(model, model.config.output)
    assert served["max_batch_size"] == model.config.max_batch_size
    assert served["backend"] == "onnxruntime"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_grpc_metadata_matches_config(
    triton_server: LocalTriton, by_name: dict[str, ModelFiles], name: str
) -> None:
    model = by_name[name]
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        meta = client.get_model_metadata(model.name)
        served = client.get_model_config(model.name).config
    finally:
        client.close()
    got_in = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
    got_out = [(t.name, t.datatype, list(t.shape)) for t in meta.outputs]
    assert got_in == _expected_tensors(model, model.config.input)
    assert got_out == _expected_tensors(model, model.config.output)
    assert served.max_batch_size == model.config.max_batch_size
    assert served.HasField("dynamic_batching")


# -- outputs equal onnxruntime -------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_outputs_equal_onnxruntime(
    triton_server: LocalTriton, by_name: dict[str, ModelFiles], name: str, protocol: str
) -> None:
    model = by_name[name]
    inputs = make_inputs(model, batch=2, length=VARIABLE_LENGTHS[1], seed=1)
    expected = onnxruntime_outputs(model, inputs)
    if protocol == "http":
        result = http_infer(triton_server.http_url, model.name, inputs)
        got = {out: result.as_numpy(out) for out in expected}
    else:
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            grpc_result = client.infer(model.name, grpc_inputs(inputs))
        finally:
            client.close()
        got = {out: grpc_result.as_numpy(out) for out in expected}
    for out, value in expected.items():
        assert got[out].dtype == value.dtype
        np.testing.assert_allclose(got[out], value, rtol=1e-5, atol=1e-5, err_msg=out)


# -- dynamic batching ----------------------------------------------------------------------
def _fire_concurrently(
    url: str, model: str, requests: list[dict[str, np.ndarray]]
) -> list[grpcclient.InferResult | InferenceServerException]:
    """Send every request at once (asyncio gRPC) so they queue together at Triton."""

    async def fire() -> list[grpcclient.InferResult | InferenceServerException]:
        client = grpcaio.InferenceServerClient(url)
        try:
            prepared = [grpc_inputs(arrays) for arrays in requests]
            answers = await asyncio.gather(
                *(client.infer(model, inputs) for inputs in prepared), return_exceptions=True
            )
        finally:
            await client.close()
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(
                answer, InferenceServerException
            ):
                raise answer
        return list(answers)  # type: ignore[arg-type]

    return asyncio.run(fire())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dynamic_batching_batches_concurrent_requests(
    triton_server: LocalTriton, by_name: dict[str, ModelFiles], name: str
) -> None:
    model = by_name[name]
    # Triton batches only requests whose variable dims match (no ragged batching in
    # the repository), so all requests of a model share one length; models differ in length.
    length = VARIABLE_LENGTHS[MODEL_NAMES.index(name) % len(VARIABLE_LENGTHS)]
    requests = [make_inputs(model, 1, length, seed=100 + i) for i in range(48)]
    expected = [onnxruntime_outputs(model, r) for r in requests]
    count_before = scrape_counter(triton_server.metrics_url, "nv_inference_count", model.name)
    exec_before = scrape_counter(triton_server.metrics_url, "nv_inference_exec_count", model.name)

    results = _fire_concurrently(triton_server.grpc_url, model.name, requests)

    inferences = (
        scrape_counter(triton_server.metrics_url, "nv_inference_count", model.name) - count_before
    )
    executions = (
        scrape_counter(triton_server.metrics_url, "nv_inference_exec_count", model.name)
        - exec_before
    )
    assert inferences == len(requests)
    # Batched for real: far fewer model executions than inferences.
    assert executions <= inferences / 2, (executions, inferences)
    # ... and still each request's own answer.
    for result, reference in zip(results, expected, strict=True):
        assert not isinstance(result, InferenceServerException), result
        for out, value in reference.items():
            np.testing.assert_allclose(result.as_numpy(out), value, rtol=1e-4, atol=1e-4)


# -- bad requests --------------------------------------------------------------------------
def _first_fixed_input(models: list[ModelFiles]) -> tuple[ModelFiles, str]:
    for model in models:
        for spec in model.config.input:
            if spec.dims and all(d > 0 for d in spec.dims):
                return model, spec.name
    model = models[0]
    return model, model.config.input[0].name


def _infer(server: LocalTriton, protocol: str, model: str, arrays: dict[str, np.ndarray]) -> None:
    if protocol == "http":
        http_infer(server.http_url, model, arrays)
        return
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.infer(model, grpc_inputs(arrays))
    finally:
        client.close()


def _dims(values: object) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"  # type: ignore[attr-defined]


def _bad_request(
    case: str, model: ModelFiles, name: str, good: dict[str, np.ndarray]
) -> tuple[str, dict[str, np.ndarray], str, str]:
    """(target model, inputs, HTTP status, message pattern) of one bad request."""
    spec = next(s for s in model.config.input if s.name == name)
    if case == "wrong shape":
        arrays = dict(good)
        arrays[name] = np.zeros((1, *(d + 1 for d in good[name].shape[1:])), good[name].dtype)
        message = (
            f"unexpected shape for input '{name}' for model '{model.name}'. "
            f"Expected {_dims([-1, *spec.dims])}, got {_dims(arrays[name].shape)}"
        )
        return model.name, arrays, "400", re.escape(message)
    if case == "wrong dtype":
        arrays = {k: v.astype(np.float64) for k, v in good.items()}
        return (
            model.name,
            arrays,
            "400",
            (
                rf"inference input '\w+' data-type is 'FP64', but model '{model.name}' expects "
                rf"'{datatype_name(spec.data_type)}'"
            ),
        )
    if case == "unknown model":
        return "no_such_model", good, "404", "unknown model: 'no_such_model' is not found"
    missing = {k: v for k, v in good.items() if k != name}
    message = (
        f"expected {len(good)} inputs but got {len(missing)} inputs for model "
        f"'{model.name}'. Got input(s) {sorted(missing)}, but missing required input(s) "
        f"['{name}']"
    )
    return model.name, missing, "400", re.escape(message)


# Triton answers HTTP with the status, gRPC with the matching code.
GRPC_STATUS = {"400": "StatusCode.INVALID_ARGUMENT", "404": "StatusCode.NOT_FOUND"}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", ["wrong shape", "wrong dtype", "unknown model", "missing input"])
def test_bad_request_is_refused_with_the_reason(
    triton_server: LocalTriton, models: list[ModelFiles], case: str, protocol: str
) -> None:
    """Triton itself checks shapes, dtypes, inputs and model names before any backend runs."""
    model, name = _first_fixed_input(models)
    good = make_inputs(model, 1, VARIABLE_LENGTHS[0], seed=7)
    target, arrays, status, pattern = _bad_request(case, model, name, good)
    with pytest.raises(InferenceServerException) as info:
        _infer(triton_server, protocol, target, arrays)
    assert info.value.status() == (status if protocol == "http" else GRPC_STATUS[status])
    assert re.search(pattern, info.value.message()), info.value.message()
    # The server is still up and answers correctly.
    result = http_infer(triton_server.http_url, model.name, good)
    for out, value in onnxruntime_outputs(model, good).items():
        np.testing.assert_allclose(result.as_numpy(out), value, rtol=1e-5, atol=1e-5)


def test_the_local_backend_fails_a_bad_request_alone(
    triton_server: LocalTriton, models: list[ModelFiles]
) -> None:
    """Out-of-vocabulary token ids make ONNX Runtime fail for that request only.

    A property of the local backend (backends/onnxruntime/model.py retries a failed
    batch one request at a time), not of production: the official image's native
    onnxruntime backend runs the batch as one ORT call and, when that call fails,
    answers every request of the batch with the error (docs/local-triton.md).
    """
    token_models = [
        (m, spec.name)
        for m in models
        for spec in m.config.input
        if not is_mask(TensorSpec.from_config(spec))
        and TensorSpec.from_config(spec).np_dtype.kind in "iu"
    ]
    if not token_models:
        pytest.skip("no model with integer token inputs in this repository")
    model, ids_name = token_models[0]
    requests = [make_inputs(model, 1, VARIABLE_LENGTHS[1], seed=300 + i) for i in range(16)]
    bad_index = 5
    requests[bad_index][ids_name][0, 0] = 10**9  # far outside any embedding table
    expected = {i: onnxruntime_outputs(model, r) for i, r in enumerate(requests) if i != bad_index}

    results = _fire_concurrently(triton_server.grpc_url, model.name, requests)

    failure = results[bad_index]
    assert isinstance(failure, InferenceServerException)
    assert failure.status() == "StatusCode.INTERNAL"
    assert failure.message().startswith(f"{model.name}: ")  # the backend's own error, one line
    assert "indices element out of data bounds" in failure.message()
    for index, reference in expected.items():
        result = results[index]
        assert not isinstance(result, InferenceServerException), (index, result)
        for out, value in reference.items():
            np.testing.assert_allclose(result.as_numpy(out), value, rtol=1e-4, atol=1e-4)


# -- launcher error paths and lifecycle -----------------------------------------------------
def test_port_in_use_is_a_clear_error(model_repository: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = LocalTriton(model_repository, grpc_port=port)
        with pytest.raises(LocalTritonError, match=rf"gRPC port {port} .* already in use"):
            server.start()
        assert not server.is_running()


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalTritonError, match="does not exist"):
        LocalTriton(tmp_path / "nowhere").start()
    with pytest.raises(LocalTritonError, match=r"has no <model>/config\.pbtxt"):
        LocalTriton(tmp_path).start()


def test_broken_repository_fails_fast_with_the_cause(
    tmp_path: Path, models: list[ModelFiles]
) -> None:
    model = models[0]
    broken = tmp_path / "repository"
    shutil.copytree(model.onnx_path.parents[1], broken / model.name)
    (broken / model.name / str(model.onnx_path.parent.name) / model.onnx_path.name).write_bytes(
        b"not an onnx file"
    )
    server = LocalTriton(broken, ready_timeout_s=120)
    with pytest.raises(LocalTritonError) as info:
        server.start()
    message = str(info.value)
    assert "\n" not in message
    assert "repository is broken" in message
    assert model.name in message
    assert not server.is_running()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_leaves_no_process_behind(model_repository: Path, models: list[ModelFiles]) -> None:
    name = models[0].name
    with LocalTriton(model_repository, model_control_mode="explicit", load_models=[name]) as server:
        pgid = server.pid
        assert pgid is not None
        with httpclient.InferenceServerClient(server.http_url) as client:
            assert client.is_model_ready(name)
            # Explicit mode loaded only the requested model.
            others = [m.name for m in models if m.name != name]
            assert not any(client.is_model_ready(other) for other in others)
    assert not _group_alive(pgid)


def test_cli_serves_until_interrupted(model_repository: Path, models: list[ModelFiles]) -> None:
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [
        sys.executable,
        "-c",
        "from service.cli import app; app()",
        "triton",
        "--repository",
        str(model_repository),
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        "--model-control-mode",
        "explicit",
        "--load-model",
        models[0].name,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{ports[0]}" in output, output
        assert f"127.0.0.1:{ports[1]}" in output
        with httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}") as client:
            assert client.is_model_ready(models[0].name)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "Triton stopped" in rest
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The server is gone: its HTTP port is free again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", ports[0]))


def test_server_dies_with_a_killed_launcher(
    model_repository: Path, models: list[ModelFiles]
) -> None:
    """A launcher that dies without teardown (timeout, SIGKILL) leaves no server behind."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from service.local_triton import LocalTriton\n"
        "server = LocalTriton(Path(sys.argv[1]), model_control_mode='explicit',"
        " load_models=[sys.argv[2]]).start()\n"
        "print(server.pid, flush=True)\n"
        "os._exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_repository), models[0].name],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    pgid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(pgid)
