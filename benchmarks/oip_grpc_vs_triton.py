"""OIP gRPC straight to Triton versus through the gateway: same model, client, tensors, concurrency.

The same stock `tritonclient.grpc.aio` closed loop runs three times in one process, one after the
other, for `--duration` seconds each (after `--warmup` unmeasured seconds):

1. triton-direct:  the model's own tensors (batch 1 per call) to Triton's gRPC port;
2. gateway-tensor: the same tensors to the gateway's OIP gRPC port (validated, batched by the
                   gateway, forwarded to the same Triton over gRPC);
3. gateway-raw:    the equivalent raw payload (PNG / phrase / JSON sequence) in the model's
                   BYTES input, preprocessed by the gateway (skip with --no-raw);
4. bare:           the same tensors to `benchmarks/bare_servers.py grpc`, a `grpc.aio` server
                   that answers without doing anything: the floor of a Python gRPC front door
                   (skip with --no-bare);
5. bare proxy:     the same tensors to `benchmarks/bare_servers.py grpc-proxy`, which forwards
                   each request's bytes unparsed to the same Triton and its answer back: the
                   floor of any Python gRPC proxy in front of Triton (skip with --no-bare).

Starts a local Triton and a gateway (`modelgate serve`, one worker) unless addresses are given.

    PYTHONPATH=. python benchmarks/oip_grpc_vs_triton.py --model digits_cnn --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcaio
from common import (  # first: puts the project root on sys.path
    ROOT,
    add_common_arguments,
    closed_loop,
    grpc_inputs,
    latency_summary,
    model_tensors,
    print_results,
    sample_payload,
    start_gateway_process,
    tree_cpu_s,
)

from service.cli import stop_process
from service.local_triton import LocalTriton, free_port
from service.oip.core import raw_input_name
from service.repository import ModelSpec, load_repository


def raw_inputs(spec: ModelSpec, encoded: bytes) -> list[grpcaio.InferInput]:
    item = grpcaio.InferInput(raw_input_name(spec), [1, 1], "BYTES")
    item.set_data_from_numpy(np.array([[encoded]], dtype=object))
    return [item]


async def run_path(
    url: str,
    model: str,
    inputs: list[Any],
    outputs: list[Any],
    args: argparse.Namespace,
    pid: int | None,
) -> dict[str, float]:
    """`concurrency` workers on one client, each sending its next call when answered; the
    server's CPU per answered request (its process tree, from /proc) when its pid is known."""
    client = grpcaio.InferenceServerClient(url)

    async def call() -> None:
        await client.infer(model, inputs, outputs=outputs)

    try:
        await closed_loop(call, args.concurrency, 0.0, args.warmup)
        cpu_before = tree_cpu_s(pid) if pid else 0.0
        latencies, seconds, errors = await closed_loop(call, args.concurrency, 0.0, args.duration)
        cpu = tree_cpu_s(pid) - cpu_before if pid else None
    finally:
        await client.close()
    row = latency_summary(latencies, errors, seconds)
    if cpu is not None:
        row["server_cpu_us"] = cpu / max(1, len(latencies)) * 1e6
    return row


def wait_for_grpc(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Until the server at `url` answers ServerLive (or its process exits)."""

    async def live() -> bool:
        client = grpcaio.InferenceServerClient(url)
        try:
            return bool(await client.is_server_live())
        except Exception:
            return False
        finally:
            await client.close()

    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up and process.poll() is None:
        if asyncio.run(live()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"no gRPC server at {url}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, model="digits_cnn", gateway_url="gRPC host:port")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-payload path")
    parser.add_argument("--no-bare", action="store_true", help="skip the do-nothing server")
    args = parser.parse_args()

    spec = load_repository(args.repository)[args.model]
    payload, encoded = sample_payload(spec)
    tensors = grpc_inputs(spec, model_tensors(spec, payload))
    logits = [grpcaio.InferRequestedOutput(spec.output)]
    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        triton_url, triton_pid = args.triton_url, None
        if triton_url is None:
            triton = stack.enter_context(LocalTriton(args.repository))
            triton_url, triton_pid = triton.grpc_url, triton.pid
        gateway_url, gateway_pid = args.gateway_url, None
        if gateway_url is None:
            _, gateway_url, gateway = start_gateway_process(
                stack, args.repository, triton_url, args.gateway_setting
            )
            gateway_pid = gateway.pid
        paths = [
            ("triton-direct (tensors)", triton_url, tensors, logits, triton_pid),
            ("gateway OIP gRPC (tensors)", gateway_url, tensors, logits, gateway_pid),
        ]
        if not args.no_raw:
            labels = [grpcaio.InferRequestedOutput("LABELS")]
            paths.append(("gateway OIP gRPC (raw payload)", gateway_url, raw_inputs(spec, encoded),
                          labels, gateway_pid))  # fmt: skip
        if not args.no_bare:
            floors = [
                ("bare gRPC server (floor)", ["grpc"]),
                ("bare gRPC proxy to Triton (floor)", ["grpc-proxy", "--upstream", triton_url]),
            ]
            for name, command in floors:
                port = free_port()
                floor = subprocess.Popen(
                    [sys.executable, str(ROOT / "benchmarks" / "bare_servers.py"), *command,
                     "--port", str(port)]
                )  # fmt: skip
                stack.callback(stop_process, floor, 10.0)
                wait_for_grpc(f"127.0.0.1:{port}", floor)
                paths.append((name, f"127.0.0.1:{port}", tensors, logits, floor.pid))
        for name, url, inputs, outputs, pid in paths:
            results[name] = asyncio.run(run_path(url, spec.name, inputs, outputs, args, pid))

    print(
        f"model={spec.name} concurrency={args.concurrency} duration={args.duration:g}s per path, "
        f"batch 1 per call, gateway settings={args.gateway_setting or 'defaults'}, "
        f"server cpu: Triton's for triton-direct, the gateway's for gateway paths"
    )
    print_results(results)
    direct = results["triton-direct (tensors)"]["throughput_rps"]
    via = results["gateway OIP gRPC (tensors)"]["throughput_rps"]
    print(
        f"gateway/direct throughput ratio (tensors): {via / direct if direct else float('nan'):.2f}"
    )
    proxy = results.get("bare gRPC proxy to Triton (floor)")
    if proxy is not None:
        floor = proxy["throughput_rps"]
        direct_p50 = results["triton-direct (tensors)"]["p50_ms"]
        gateway_p50 = results["gateway OIP gRPC (tensors)"]["p50_ms"]
        print(
            f"bare proxy/direct throughput ratio: {floor / direct if direct else float('nan'):.2f}"
            f"; gateway/bare proxy: {via / floor if floor else float('nan'):.2f}"
            f"; p50 over direct: gateway {gateway_p50 - direct_p50:+.2f} ms, "
            f"bare proxy {proxy['p50_ms'] - direct_p50:+.2f} ms"
        )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
