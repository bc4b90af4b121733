"""modelgate against the server a user would write instead, on every model, as a user runs it.

Three servers, one process each, on free ports:

- naive:    `benchmarks/naive_server.py` (FastAPI + onnxruntime, one ORT call per request);
- embedded: `modelgate serve` with `MODELGATE_BACKEND=embedded` (in-process ONNX Runtime);
- triton:   `modelgate serve` in front of a local Triton (started here) over gRPC;
- bare:     `benchmarks/bare_servers.py http`, a server that answers without doing anything: the
            floor of any Python HTTP server on this machine with this client;
- bare-proxy: `benchmarks/bare_servers.py http-proxy`, the same server making one prebuilt
            gRPC call to the local Triton per request: the floor of any Python REST front door
            in front of Triton (not in the default set; name it in `--servers`).

One client process (aiohttp) sends the same REST predict body to each (`{"inputs": [...],
"top_k": 1}`: a base64 PNG, a phrase, a JSON sequence) in a closed loop. Rounds are interleaved:
each round runs every model x concurrency x server for `--duration` seconds after `--warmup`
unmeasured seconds, so a slow spell on the shared machine hits all servers alike; with several
rounds the table shows medians. Server CPU per request is the process tree's user+system time
(from /proc) during the measured window divided by the answered requests; for the Triton path
Triton's own CPU is shown apart.

    PYTHONPATH=. python benchmarks/vs_naive.py --duration 5 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
from common import (  # first: puts the project root on sys.path
    ROOT,
    closed_loop,
    latency_summary,
    rest_body,
    rest_predict_call,
    sample_payload,
    start_gateway_process,
    tree_cpu_s,
)

from service.cli import stop_process, wait_for_gateway
from service.local_triton import LocalTriton, free_port
from service.repository import load_repository

SERVERS = ("naive", "embedded", "triton", "bare", "bare-proxy")
DEFAULT_SERVERS = ("naive", "embedded", "triton", "bare")


def start_server(stack: ExitStack, *command: str) -> tuple[str, subprocess.Popen[bytes]]:
    """A benchmark server script of this folder on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / command[0]), *command[1:], "--port", str(port)]
    )
    stack.callback(stop_process, process, 30.0)
    url = f"http://127.0.0.1:{port}"
    wait_for_gateway(url, process, timeout_s=60)
    return url, process


async def measure(
    url: str,
    model: str,
    body: bytes,
    concurrency: int,
    args: argparse.Namespace,
    pids: dict[str, int],
) -> dict[str, float]:
    """One closed-loop window against one server; CPU of each named process during it."""
    async with rest_predict_call(url, model, body, concurrency) as call:
        await closed_loop(call, concurrency, 0.0, args.warmup)
        cpu_before = {name: tree_cpu_s(pid) for name, pid in pids.items()}
        client_before = time.process_time()
        latencies, seconds, errors = await closed_loop(call, concurrency, 0.0, args.duration)
        client_cpu = time.process_time() - client_before
        cpu = {name: tree_cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
    row = latency_summary(latencies, errors, seconds)
    answered = max(1, len(latencies))
    for name, seconds_used in cpu.items():
        row[f"{name}_cpu_us"] = seconds_used / answered * 1e6
    row["client_cpu_us"] = client_cpu / answered * 1e6
    return row


def median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", help="default: every model of the repository")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per window")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per window")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians)")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(DEFAULT_SERVERS))
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument(
        "--gateway-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for both gateways, e.g. workers=2 (repeatable)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout of the project: also runs its gateways (embedded@base, "
        "triton@base) in the same interleaved rounds, for before/after figures",
    )
    parser.add_argument(
        "--baseline-setting",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="settings of the @base gateways instead of --gateway-setting (repeatable); "
        "without --baseline-tree this tree runs them, to compare two configurations",
    )
    parser.add_argument(
        "--triton-otlp-url",
        help="start Triton with OpenTelemetry tracing exporting there (OTLP/HTTP); it traces "
        "only requests that carry a traceparent, i.e. those of a gateway with otlp_endpoint set",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()

    specs = load_repository(args.repository)
    models = args.models or list(specs)
    bodies = {
        m: json.dumps(rest_body(specs[m], sample_payload(specs[m])[0])).encode() for m in models
    }
    windows: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        pids: dict[str, dict[str, int]] = {}
        if "naive" in args.servers:
            url, process = start_server(
                stack, "naive_server.py", "--repository", str(args.repository)
            )
            urls["naive"], pids["naive"] = url, {"server": process.pid}
        if "bare" in args.servers:
            url, process = start_server(stack, "bare_servers.py", "http")
            urls["bare"], pids["bare"] = url, {"server": process.pid}
        trees = {"": (ROOT, args.gateway_setting)}
        if args.baseline_tree is not None or args.baseline_setting is not None:
            tree = args.baseline_tree.resolve() if args.baseline_tree else ROOT
            trees["@base"] = (tree, args.baseline_setting or args.gateway_setting)
        if "embedded" in args.servers:
            for suffix, (tree, settings) in trees.items():
                url, _, process = start_gateway_process(
                    stack, args.repository, "unused:1", ["backend=embedded", *settings], root=tree
                )
                urls[f"embedded{suffix}"] = url
                pids[f"embedded{suffix}"] = {"server": process.pid}
        if "triton" in args.servers or "bare-proxy" in args.servers:
            triton = stack.enter_context(
                LocalTriton(args.repository, trace_otlp_url=args.triton_otlp_url)
            )
            assert triton.pid is not None
        if "bare-proxy" in args.servers:
            url, process = start_server(
                stack, "bare_servers.py", "http-proxy", "--upstream", triton.grpc_url,
                "--repository", str(args.repository),
            )  # fmt: skip
            urls["bare-proxy"] = url
            pids["bare-proxy"] = {"server": process.pid, "triton": triton.pid}
        if "triton" in args.servers:
            for suffix, (tree, settings) in trees.items():
                upstream = (
                    triton.http_url if "triton_protocol=http" in settings else triton.grpc_url
                )
                url, _, process = start_gateway_process(
                    stack, args.repository, upstream, settings, root=tree
                )
                urls[f"triton{suffix}"] = url
                pids[f"triton{suffix}"] = {"server": process.pid, "triton": triton.pid}
        for round_ in range(args.rounds):
            for model in models:
                for concurrency in args.concurrency:
                    for server, url in urls.items():
                        row = asyncio.run(
                            measure(url, model, bodies[model], concurrency, args, pids[server])
                        )
                        windows.setdefault((model, concurrency, server), []).append(row)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

    results = {key: median_rows(rows) for key, rows in windows.items()}
    load = " ".join(f"{x:.2f}" for x in psutil.getloadavg())
    print(
        f"rounds={args.rounds} duration={args.duration:g}s warmup={args.warmup:g}s "
        f"gateway settings={args.gateway_setting or 'defaults'} "
        f"@base: {args.baseline_tree or 'this tree'} {args.baseline_setting or ''} "
        f"triton tracing={args.triton_otlp_url or 'off'} "
        f"cpus={psutil.cpu_count()} "
        f"load={load}"
    )
    print(
        f"{'model':20} {'c':>3} {'server':13} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99/p50':>7} {'x naive':>7} {'cpu us/req':>10} {'triton us':>9} {'errors':>6}"
    )
    for (model, concurrency, server), row in results.items():
        naive = results.get((model, concurrency, "naive"))
        ratio = row["throughput_rps"] / naive["throughput_rps"] if naive else float("nan")
        triton_cpu = f"{row['triton_cpu_us']:9.0f}" if "triton_cpu_us" in row else f"{'':9}"
        print(
            f"{model:20} {concurrency:3d} {server:13} {row['throughput_rps']:7.0f} "
            f"{row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['p99_ms'] / row['p50_ms']:7.1f} "
            f"{ratio:7.2f} {row['server_cpu_us']:10.0f} {triton_cpu} {row['errors']:6.0f}"
        )
    if args.json:
        print(json.dumps([{"model": m, "concurrency": c, "server": s, **row}
                          for (m, c, s), row in results.items()]))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
