"""OIP gRPC straight to Triton versus through the gateway: same model, client, tensors, concurrency.

The same stock `tritonclient.grpc.aio` closed loop runs three times in one process, one after the
other, for `--duration` seconds each (after `--warmup` unmeasured seconds):

1. triton-direct:  the model's own tensors (batch 1 per call) to Triton's gRPC port;
2. gateway-tensor: the same tensors to the gateway's OIP gRPC port (validated, batched by the
                   gateway, forwarded to the same Triton over gRPC);
3. gateway-raw:    the equivalent raw payload (PNG / phrase / JSON sequence) in the model's
                   BYTES input, preprocessed by the gateway (skip with --no-raw).

Starts a local Triton and a gateway (`modelgate serve`, one worker) unless addresses are given.

    PYTHONPATH=. python benchmarks/oip_grpc_vs_triton.py --model digits_cnn --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service import preprocess  # noqa: E402
from service.cli import wait_for_gateway  # noqa: E402
from service.local_triton import LocalTriton, free_port  # noqa: E402
from service.oip.core import raw_input_name  # noqa: E402
from service.repository import ModelSpec, load_repository  # noqa: E402


def sample(spec: ModelSpec) -> tuple[Any, bytes]:
    """One realistic raw payload for the model and its BYTES encoding."""
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


def tensor_inputs(spec: ModelSpec, payload: Any) -> list[grpcaio.InferInput]:
    pre = preprocess.for_model(spec, max_image_pixels=10**8)
    tensors = pre.preprocess(pre.decode(payload))
    inputs = []
    for tensor in spec.inputs:
        array = tensors[tensor.name][None, ...]
        item = grpcaio.InferInput(tensor.name, list(array.shape), tensor.datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def raw_inputs(spec: ModelSpec, encoded: bytes) -> list[grpcaio.InferInput]:
    item = grpcaio.InferInput(raw_input_name(spec), [1, 1], "BYTES")
    item.set_data_from_numpy(np.array([[encoded]], dtype=object))
    return [item]


async def closed_loop(
    url: str, model: str, inputs: list[Any], outputs: list[Any], args: argparse.Namespace
) -> dict[str, float]:
    """`concurrency` workers on one client, each sending its next call when answered."""
    client = grpcaio.InferenceServerClient(url)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + args.warmup, start + args.warmup + args.duration

    async def worker() -> None:
        nonlocal errors
        while (t0 := time.perf_counter()) < stop_at:
            try:
                await client.infer(model, inputs, outputs=outputs)
            except Exception:
                errors += 1
                continue
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    finally:
        await client.close()
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / args.duration,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def start_gateway(stack: ExitStack, args: argparse.Namespace, triton_url: str) -> str:
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MODELGATE_MODEL_REPOSITORY": str(args.repository),
        "MODELGATE_TRITON_URL": triton_url,
        "MODELGATE_PORT": str(http_port),
        "MODELGATE_GRPC_PORT": str(grpc_port),
        "MODELGATE_LOG_LEVEL": "warning",
    }
    for setting in args.gateway_setting:
        name, _, value = setting.partition("=")
        env[f"MODELGATE_{name.upper()}"] = value
    gateway = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env)
    stack.callback(lambda: (gateway.terminate(), gateway.wait(30)))
    wait_for_gateway(f"http://127.0.0.1:{http_port}", gateway, timeout_s=60)
    return f"127.0.0.1:{grpc_port}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per path")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--triton-url", help="existing Triton gRPC host:port (default: start one)")
    parser.add_argument(
        "--gateway-url", help="existing gateway gRPC host:port (default: start one)"
    )
    parser.add_argument(
        "--gateway-setting", action="append", default=[], metavar="NAME=VALUE",
        help="extra setting for the started gateway, e.g. batch_concurrency=4 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-payload path")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    spec = load_repository(args.repository)[args.model]
    payload, encoded = sample(spec)
    tensors = tensor_inputs(spec, payload)
    logits = [grpcaio.InferRequestedOutput(spec.output)]
    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        triton_url = args.triton_url
        if triton_url is None:
            triton_url = stack.enter_context(LocalTriton(args.repository)).grpc_url
        gateway_url = args.gateway_url or start_gateway(stack, args, triton_url)
        paths = [
            ("triton-direct (tensors)", triton_url, tensors, logits),
            ("gateway OIP gRPC (tensors)", gateway_url, tensors, logits),
        ]
        if not args.no_raw:
            labels = [grpcaio.InferRequestedOutput("LABELS")]
            paths.append(("gateway OIP gRPC (raw payload)", gateway_url, raw_inputs(spec, encoded),
                          labels))  # fmt: skip
        for name, url, inputs, outputs in paths:
            results[name] = asyncio.run(closed_loop(url, spec.name, inputs, outputs, args))

    print(
        f"model={spec.name} concurrency={args.concurrency} duration={args.duration:g}s per path, "
        f"batch 1 per call, gateway settings={args.gateway_setting or 'defaults'}"
    )
    print(f"{'path':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in results.items():
        print(
            f"{name:32} {row['throughput_rps']:8.0f} {row['p50_ms']:8.2f} "
            f"{row['p99_ms']:8.2f} {row['errors']:7.0f}"
        )
    direct = results["triton-direct (tensors)"]["throughput_rps"]
    via = results["gateway OIP gRPC (tensors)"]["throughput_rps"]
    print(
        f"gateway/direct throughput ratio (tensors): {via / direct if direct else float('nan'):.2f}"
    )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
