"""Direct Triton versus through the gateway: same model, same concurrency, one run.

(a) tritonclient gRPC asyncio straight to Triton with the model's own tensors (batch 1 per call);
(b) the gateway's REST predict with the equivalent raw payload (a sequence as JSON floats, a PNG,
    a phrase), which the gateway preprocesses, batches and sends to the same Triton over gRPC;
(c) the gateway's transport-neutral core in this process (`DataPlane.infer_tensors`, the path
    the Open Inference Protocol endpoints use for pre-tensorized input): validation, batcher,
    metrics and the Triton client, without HTTP.

Prints throughput and p50/p99 latency for both, and their ratio. Starts a local Triton and a
gateway (one uvicorn worker) unless URLs are given. Closed loop: each of `--concurrency`
workers sends its next request when the previous one is answered.

    python benchmarks/gateway_vs_triton.py --model vowels_gru --concurrency 16 --duration 10
"""

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
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcaio
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service import preprocess  # noqa: E402
from service.backends.triton import TritonBackend  # noqa: E402
from service.cli import wait_for_gateway  # noqa: E402
from service.dataplane import DataPlane  # noqa: E402
from service.local_triton import LocalTriton, free_port  # noqa: E402
from service.metrics import Metrics  # noqa: E402
from service.repository import ModelSpec, load_repository  # noqa: E402
from service.settings import Settings  # noqa: E402


def sample_payload(spec: ModelSpec) -> tuple[dict[str, Any], Any]:
    """A JSON body for the gateway and the raw payload it carries."""
    rng = np.random.default_rng(0)
    if spec.image is not None:
        pixels = (rng.random((spec.image.height, spec.image.width)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "L").save(buffer, format="PNG")
        return {
            "inputs": [base64.b64encode(buffer.getvalue()).decode()],
            "top_k": 1,
        }, buffer.getvalue()
    if spec.text is not None:
        text = "the weather is nice today and we walk to the harbour"
        return {"inputs": [text], "top_k": 1}, text
    assert spec.sequence is not None
    steps = (rng.normal(size=(20, spec.sequence.channels)) * np.array(spec.sequence.std)
             + np.array(spec.sequence.mean)).round(4).tolist()  # fmt: skip
    return {"inputs": steps, "top_k": 1}, steps


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


async def bench_triton(url: str, spec: ModelSpec, tensors: dict[str, np.ndarray], args: Any) -> Any:
    client = grpcaio.InferenceServerClient(url)
    outputs = [grpcaio.InferRequestedOutput(spec.output)]
    inputs = []
    for tensor in spec.inputs:
        array = tensors[tensor.name][None, ...]
        item = grpcaio.InferInput(tensor.name, list(array.shape), tensor.datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)

    async def call() -> None:
        await client.infer(spec.name, inputs, outputs=outputs)

    try:
        return await closed_loop(call, args.concurrency, args.warmup, args.duration)
    finally:
        await client.close()


async def bench_gateway(url: str, spec: ModelSpec, body: dict[str, Any], args: Any) -> Any:
    data = json.dumps(body).encode()
    target = f"{url}/v1/models/{spec.name}/predict"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> None:
            async with session.post(
                target, data=data, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        return await closed_loop(call, args.concurrency, args.warmup, args.duration)


async def bench_core(
    url: str, repository: Path, spec: ModelSpec, tensors: dict[str, np.ndarray], args: Any
) -> Any:
    overrides = dict(setting.partition("=")[::2] for setting in args.gateway_setting)
    settings = Settings(model_repository=repository, triton_url=url, **overrides)
    specs = load_repository(repository)
    metrics = Metrics(specs)
    backend = TritonBackend(settings.triton_urls, "grpc", settings.triton_timeout_s)
    dataplane = DataPlane(settings, specs, backend, metrics)
    await dataplane.start()
    batch = {name: value[None, ...] for name, value in tensors.items()}

    async def call() -> None:
        await dataplane.infer_tensors(spec.name, None, batch)

    try:
        return await closed_loop(call, args.concurrency, args.warmup, args.duration)
    finally:
        await dataplane.close()


def summary(name: str, result: tuple[list[float], float, int]) -> dict[str, float]:
    latencies, seconds, errors = result
    array = np.asarray(latencies) * 1000
    return {
        "path": name,  # type: ignore[dict-item]
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(array, 50)) if len(array) else float("nan"),
        "p99_ms": float(np.percentile(array, 99)) if len(array) else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vowels_gru")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per path")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--triton-url", help="existing Triton gRPC host:port (default: start one)")
    parser.add_argument(
        "--gateway-url", help="existing gateway http://host:port (default: start one)"
    )
    parser.add_argument(
        "--gateway-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway setting for the started gateway, e.g. max_batch_size=1 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    specs = load_repository(args.repository)
    spec = specs[args.model]
    body, payload = sample_payload(spec)
    pre = preprocess.for_model(spec, max_image_pixels=10**8)
    tensors = pre.preprocess(pre.decode(payload))

    with ExitStack() as stack:
        triton_url = args.triton_url
        if triton_url is None:
            triton = stack.enter_context(LocalTriton(args.repository))
            triton_url = triton.grpc_url
        gateway_url = args.gateway_url
        if gateway_url is None:
            port = free_port()
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "MODELGATE_MODEL_REPOSITORY": str(args.repository),
                "MODELGATE_TRITON_URL": triton_url,
                "MODELGATE_PORT": str(port),
                "MODELGATE_GRPC_PORT": str(free_port()),
                "MODELGATE_LOG_LEVEL": "warning",
            }
            for setting in args.gateway_setting:
                name, _, value = setting.partition("=")
                env[f"MODELGATE_{name.upper()}"] = value
            gateway = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env)
            stack.callback(lambda: (gateway.terminate(), gateway.wait(30)))
            gateway_url = f"http://127.0.0.1:{port}"
            wait_for_gateway(gateway_url, gateway, timeout_s=60)

        direct = summary(
            "triton-direct (gRPC, tensors)",
            asyncio.run(bench_triton(triton_url, spec, tensors, args)),
        )
        core = summary(
            "gateway core (in-process, tensors)",
            asyncio.run(bench_core(triton_url, args.repository, spec, tensors, args)),
        )
        via = summary(
            "gateway (REST, raw payload)", asyncio.run(bench_gateway(gateway_url, spec, body, args))
        )

    print(
        f"model={spec.name} concurrency={args.concurrency} duration={args.duration}s per path "
        f"gateway settings={args.gateway_setting or 'defaults'}"
    )
    print(f"{'path':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in (direct, core, via):
        print(
            f"{row['path']:34} {row['throughput_rps']:9.0f} {row['p50_ms']:8.2f} "
            f"{row['p99_ms']:8.2f} {row['errors']:7d}"
        )
    ratio = (
        via["throughput_rps"] / direct["throughput_rps"]
        if direct["throughput_rps"]
        else float("nan")
    )
    core_ratio = (
        core["throughput_rps"] / direct["throughput_rps"] if direct["throughput_rps"] else 0
    )
    print(
        f"gateway REST/direct throughput ratio: {ratio:.2f}; "
        f"p50 added: {via['p50_ms'] - direct['p50_ms']:.2f} ms"
    )
    print(
        f"gateway core/direct throughput ratio: {core_ratio:.2f}; "
        f"p50 added: {core['p50_ms'] - direct['p50_ms']:.2f} ms"
    )
    if args.json:
        print(json.dumps({"direct": direct, "core": core, "gateway": via, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
