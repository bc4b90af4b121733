"""What the gateway benchmarks share: payloads, options, a gateway, the closed loop, summaries."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import tritonclient.grpc.aio as grpcaio
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service import preprocess  # noqa: E402
from service.cli import stop_process, wait_for_gateway  # noqa: E402
from service.local_triton import free_port  # noqa: E402
from service.repository import ModelSpec  # noqa: E402


def sample_payload(spec: ModelSpec) -> tuple[Any, bytes]:
    """One realistic raw payload for the model (as its preprocessor takes it) and its bytes."""
    rng = np.random.default_rng(0)
    if spec.image is not None:
        pixels = (rng.random((spec.image.height, spec.image.width)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "L").save(buffer, format="PNG")
        return buffer.getvalue(), buffer.getvalue()
    if spec.text is not None:
        text = "the weather is nice today and we walk to the harbour"
        return text, text.encode()
    assert spec.sequence is not None
    steps = rng.normal(size=(20, spec.sequence.channels)) * np.array(spec.sequence.std)
    steps = (steps + np.array(spec.sequence.mean)).round(4).tolist()
    return steps, json.dumps(steps).encode()


def rest_body(spec: ModelSpec, payload: Any) -> dict[str, Any]:
    """The REST predict body carrying the raw payload (images as base64), top-1 answer."""
    item = base64.b64encode(payload).decode() if spec.image is not None else payload
    return {"inputs": item if spec.sequence is not None else [item], "top_k": 1}


def model_tensors(spec: ModelSpec, payload: Any) -> dict[str, np.ndarray]:
    """The payload preprocessed exactly as the gateway does it (no batch axis)."""
    pre = preprocess.for_model(spec, max_image_pixels=10**8)
    return pre.preprocess(pre.decode(payload))


def grpc_inputs(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> list[grpcaio.InferInput]:
    """The model's own inputs for one row, ready for `tritonclient.grpc.aio`."""
    inputs = []
    for tensor in spec.inputs:
        array = tensors[tensor.name][None, ...]
        item = grpcaio.InferInput(tensor.name, list(array.shape), tensor.datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def add_common_arguments(parser: argparse.ArgumentParser, model: str, gateway_url: str) -> None:
    """Options every gateway benchmark takes; `gateway_url` says what address form it wants."""
    parser.add_argument("--model", default=model)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per path")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--triton-url", help="existing Triton gRPC host:port (default: start one)")
    parser.add_argument(
        "--gateway-url", help=f"existing gateway {gateway_url} (default: start one)"
    )
    parser.add_argument(
        "--gateway-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for the started gateway, e.g. max_batch_size=1 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")


def start_gateway(
    stack: ExitStack, repository: Path, triton_url: str, settings: list[str]
) -> tuple[str, str]:
    """`modelgate serve` (one worker) on free ports; returns its HTTP URL and gRPC host:port."""
    http_url, grpc_url, _ = start_gateway_process(stack, repository, triton_url, settings)
    return http_url, grpc_url


def start_gateway_process(
    stack: ExitStack, repository: Path, triton_url: str, settings: list[str], root: Path = ROOT
) -> tuple[str, str, subprocess.Popen[bytes]]:
    """As `start_gateway`, and the gateway process too (to read its CPU time); `root` is the
    source tree the gateway runs from (another checkout compares two versions)."""
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "MODELGATE_MODEL_REPOSITORY": str(repository),
        "MODELGATE_TRITON_URL": triton_url,
        "MODELGATE_PORT": str(http_port),
        "MODELGATE_GRPC_PORT": str(grpc_port),
        "MODELGATE_LOG_LEVEL": "warning",
        "MODELGATE_WORKERS": "1",  # one process per server, as compared; settings may say more
    }
    for setting in settings:
        name, _, value = setting.partition("=")
        env[f"MODELGATE_{name.upper()}"] = value
    gateway = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, cwd=root)
    stack.callback(stop_process, gateway, 30.0)
    http_url = f"http://127.0.0.1:{http_port}"
    wait_for_gateway(http_url, gateway, timeout_s=60)
    return http_url, f"127.0.0.1:{grpc_port}", gateway


async def closed_loop(
    call: Callable[[], Awaitable[None]], concurrency: int, warmup_s: float, duration_s: float
) -> tuple[list[float], float, int]:
    """Run `concurrency` workers; returns latencies after warm-up, measured seconds and errors."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def worker() -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                await call()
            except Exception:
                errors += 1
                continue
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, duration_s, errors


@asynccontextmanager
async def rest_predict_call(
    url: str, model: str, body: bytes, concurrency: int
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A `closed_loop` call that POSTs one REST predict body (JSON bytes) over a pool of
    `concurrency` connections and raises on any answer but 200."""
    target = f"{url}/v1/models/{model}/predict"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> None:
            async with session.post(target, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        yield call


async def rest_predict_loop(
    url: str, model: str, body: bytes, concurrency: int, warmup_s: float, duration_s: float
) -> tuple[list[float], float, int]:
    """`closed_loop` over `rest_predict_call`: latencies, measured seconds, errors."""
    async with rest_predict_call(url, model, body, concurrency) as call:
        return await closed_loop(call, concurrency, warmup_s, duration_s)


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (from /proc)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def latency_summary(latencies_s: list[float], errors: int, seconds: float) -> dict[str, float]:
    """Throughput and p50/p99 (milliseconds) of one measured window."""
    ms = np.asarray(latencies_s) * 1000
    return {
        "requests": len(latencies_s),
        "errors": errors,
        "throughput_rps": len(latencies_s) / seconds,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def print_results(results: dict[str, dict[str, float]]) -> None:
    """One line per path; server CPU per request where it was measured."""
    width = max(len(name) for name in results) + 2
    print(
        f"{'path':{width}} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} "
        f"{'errors':>7} {'server cpu us/req':>18}"
    )
    for name, row in results.items():
        cpu = row.get("server_cpu_us")
        print(
            f"{name:{width}} {row['throughput_rps']:8.0f} {row['p50_ms']:8.2f} "
            f"{row['p99_ms']:8.2f} {row['p99_ms'] / row['p50_ms']:8.1f} {row['errors']:7.0f} "
            f"{'' if cpu is None else f'{cpu:.0f}':>18}"
        )
