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
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
from common import (  # first: puts the project root on sys.path
    add_common_arguments,
    closed_loop,
    grpc_inputs,
    latency_summary,
    model_tensors,
    rest_body,
    rest_predict_loop,
    sample_payload,
    start_gateway,
)

from service.backends.triton import TritonBackend
from service.dataplane import DataPlane
from service.local_triton import LocalTriton
from service.metrics import Metrics
from service.repository import ModelSpec, load_repository, load_repository_versions
from service.settings import Settings


async def bench_triton(url: str, spec: ModelSpec, tensors: dict[str, np.ndarray], args: Any) -> Any:
    client = grpcaio.InferenceServerClient(url)
    outputs = [grpcaio.InferRequestedOutput(spec.output)]
    inputs = grpc_inputs(spec, tensors)

    async def call() -> None:
        await client.infer(spec.name, inputs, outputs=outputs)

    try:
        return await closed_loop(call, args.concurrency, args.warmup, args.duration)
    finally:
        await client.close()


async def bench_core(
    url: str, repository: Path, spec: ModelSpec, tensors: dict[str, np.ndarray], args: Any
) -> Any:
    overrides = dict(setting.partition("=")[::2] for setting in args.gateway_setting)
    settings = Settings(model_repository=repository, triton_url=url, **overrides)
    specs = load_repository_versions(repository)
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


def summary(name: str, result: tuple[list[float], float, int]) -> dict[str, Any]:
    latencies, seconds, errors = result
    return {"path": name, **latency_summary(latencies, errors, seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, model="vowels_gru", gateway_url="http://host:port")
    args = parser.parse_args()

    specs = load_repository(args.repository)
    spec = specs[args.model]
    payload, _ = sample_payload(spec)
    body = rest_body(spec, payload)
    tensors = model_tensors(spec, payload)

    with ExitStack() as stack:
        triton_url = args.triton_url
        if triton_url is None:
            triton = stack.enter_context(LocalTriton(args.repository))
            triton_url = triton.grpc_url
        gateway_url = (
            args.gateway_url
            or start_gateway(stack, args.repository, triton_url, args.gateway_setting)[0]
        )

        direct = summary(
            "triton-direct (gRPC, tensors)",
            asyncio.run(bench_triton(triton_url, spec, tensors, args)),
        )
        core = summary(
            "gateway core (in-process, tensors)",
            asyncio.run(bench_core(triton_url, args.repository, spec, tensors, args)),
        )
        via = summary(
            "gateway (REST, raw payload)",
            asyncio.run(
                rest_predict_loop(
                    gateway_url,
                    spec.name,
                    json.dumps(body).encode(),
                    args.concurrency,
                    args.warmup,
                    args.duration,
                )
            ),
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
