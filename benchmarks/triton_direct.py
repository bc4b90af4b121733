"""Throughput of one model straight against Triton (no gateway), closed loop over gRPC.

Starts a local Triton on the repository (or uses --url), then for each
concurrency level runs that many asyncio clients for --duration seconds, each
sending one batch-1 request after the other. Reports requests/s, latency
percentiles, and Triton's own counters: how many inferences ran in how many
model executions (the average batch the dynamic batcher formed).

    PYTHONPATH=. python benchmarks/triton_direct.py --model digits_cnn --concurrency 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput, model_config_pb2

from service.local_triton import DEFAULT_REPOSITORY, LocalTriton
from service.model_contract import CONFIG_FILE, TensorSpec, example_inputs, parse_config

SEQUENCE_LENGTH = 24  # used for every `-1` dim


def make_request(config: model_config_pb2.ModelConfig, seed: int) -> list[InferInput]:
    specs = [TensorSpec.from_config(t) for t in config.input]
    arrays = example_inputs(specs, 1, SEQUENCE_LENGTH, seed)
    inputs = []
    for spec in specs:
        tensor = InferInput(spec.name, list(arrays[spec.name].shape), spec.datatype)
        tensor.set_data_from_numpy(arrays[spec.name])
        inputs.append(tensor)
    return inputs


def triton_counters(metrics_url: str, model: str) -> tuple[float, float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    values = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in values and f'model="{model}"' in line:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["nv_inference_count"], values["nv_inference_exec_count"]


async def closed_loop(
    url: str, model: str, inputs: list[InferInput], concurrency: int, duration: float
) -> list[float]:
    client = grpcaio.InferenceServerClient(url)
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await client.infer(model, inputs)
            latencies.append(time.perf_counter() - start)

    try:
        for _ in range(20):  # warm the connection and the model
            await client.infer(model, inputs)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return latencies


def run(
    url: str,
    metrics_url: str,
    model: str,
    config: model_config_pb2.ModelConfig,
    levels: list[int],
    duration: float,
) -> None:
    inputs = make_request(config, seed=0)
    print(f"model {model}, batch 1 per request, {duration:.0f} s per level, gRPC ({url})")
    print("concurrency  req/s   p50 ms  p99 ms  avg batch (Triton inferences/executions)")
    for concurrency in levels:
        count0, exec0 = triton_counters(metrics_url, model)
        started = time.perf_counter()
        latencies = asyncio.run(closed_loop(url, model, inputs, concurrency, duration))
        elapsed = time.perf_counter() - started
        count1, exec1 = triton_counters(metrics_url, model)
        ms = np.array(latencies) * 1000
        inferences, executions = count1 - count0, exec1 - exec0
        batch = inferences / max(executions, 1)
        print(
            f"{concurrency:>11}  {len(latencies) / elapsed:6.0f}  {np.percentile(ms, 50):6.2f}"
            f"  {np.percentile(ms, 99):6.2f}  {batch:5.2f} ({inferences:.0f}/{executions:.0f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--url", help="gRPC host:port of a running Triton (default: start one)")
    parser.add_argument("--metrics-url", help="metrics URL of that Triton")
    args = parser.parse_args()
    config = parse_config(args.repository / args.model / CONFIG_FILE)
    if args.url:
        metrics_url = args.metrics_url or f"http://{args.url.split(':')[0]}:8002/metrics"
        run(args.url, metrics_url, args.model, config, args.concurrency, args.duration)
        return
    with LocalTriton(args.repository) as server:
        run(
            server.grpc_url, server.metrics_url, args.model, config, args.concurrency, args.duration
        )


if __name__ == "__main__":
    main()
