"""SIGTERM to a gateway under keep-alive load: how many requests were answered, refused, dropped.

Starts a local Triton and a gateway (`modelgate serve`, one worker, `--drain-s` drain window),
runs `--http-clients` keep-alive HTTP clients and `--grpc-clients` stock tritonclient gRPC
clients sending `langid_transformer` requests back to back, sends SIGTERM after `--warmup`
seconds and records every request until the gateway exits (see loadtests/restart_load.py).

    PYTHONPATH=. python benchmarks/restart_under_load.py --http-clients 16 --grpc-clients 16

`--drain-s 0` shows the restart without a drain window; `--root` runs the gateway from another
source tree (e.g. `git archive` of an older commit) to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import ROOT, start_gateway_process  # first: puts the project root on sys.path

from loadtests.restart_load import Backend, ReadinessBalancer, RestartRecord, sigterm_under_load
from service.local_triton import LocalTriton
from service.settings import Settings


def summary(record: RestartRecord, drain_s: float) -> dict[str, Any]:
    window_ends = record.signalled + drain_s
    result: dict[str, Any] = {
        "exit_code": record.exit_code,
        "exit_after_signal_s": round(record.exited - record.signalled, 3),
    }
    for prefix in ("http", "grpc", "probe"):
        attempts = record.of(prefix)
        result[prefix] = {
            "answered": record.count(prefix, "ok"),
            "failed": record.count(prefix, "failed"),
            "refused": record.count(prefix, "refused"),
            "answered_after_signal": sum(
                1 for a in attempts if a.outcome == "ok" and a.sent >= record.signalled
            ),
            "refused_before_window_end": sum(
                1 for a in attempts if a.outcome == "refused" and a.sent < window_ends
            ),
            "failures": sorted({a.detail[:120] for a in attempts if a.outcome == "failed"}),
        }
    probes = [a for a in record.of("probe") if a.outcome == "ok" and a.sent >= record.signalled]
    result["probe"]["readyz_after_signal"] = sorted({a.status for a in probes})
    http = [a for a in record.of("http") if a.outcome == "ok"]
    result["http"]["connection_close_answers"] = sum(1 for a in http if a.connection_close)
    return result


def backend(address: str, http_url: str) -> Backend:
    """A gateway port behind the balancer, ready when its gateway's /readyz says so."""
    host, _, port = address.removeprefix("http://").rpartition(":")
    return Backend(host, int(port), f"{http_url}/readyz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-clients", type=int, default=16)
    parser.add_argument("--grpc-clients", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before SIGTERM")
    parser.add_argument("--drain-s", type=float, default=Settings.model_fields["drain_s"].default)
    parser.add_argument(
        "--grpc-max-connection-age-s",
        type=float,
        default=2.0,
        help="as the deployment files set it (0: unset, connections live until the close)",
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="source tree the gateway runs from (another checkout: a before/after comparison)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="restarts, each a fresh gateway")
    parser.add_argument(
        "--balanced",
        action="store_true",
        help="a rolling restart: two gateways behind a balancer that follows /readyz (as a "
        "Kubernetes Service does); the clients talk to the balancer, one gateway gets SIGTERM",
    )
    args = parser.parse_args()

    results = []
    with LocalTriton(args.repository) as triton:
        for _ in range(args.rounds):
            with ExitStack() as stack:
                settings = [f"drain_s={args.drain_s}"]
                if args.grpc_max_connection_age_s > 0:
                    settings.append(f"grpc_max_connection_age_s={args.grpc_max_connection_age_s}")
                http_url, grpc_address, process = start_gateway_process(
                    stack, args.repository, triton.grpc_url, settings, root=args.root
                )
                if args.balanced:
                    other_http, other_grpc, _ = start_gateway_process(
                        stack, args.repository, triton.grpc_url, settings, root=args.root
                    )
                    http_lb = stack.enter_context(
                        ReadinessBalancer([backend(u, u) for u in (http_url, other_http)])
                    )
                    grpc_lb = stack.enter_context(
                        ReadinessBalancer(
                            [
                                backend(grpc_address, http_url),
                                backend(other_grpc, other_http),
                            ]
                        )
                    )
                    http_url = f"http://127.0.0.1:{http_lb.port}"
                    grpc_address = f"127.0.0.1:{grpc_lb.port}"
                record = sigterm_under_load(
                    process,
                    http_url,
                    grpc_address,
                    http_clients=args.http_clients,
                    grpc_clients=args.grpc_clients,
                    warmup_s=args.warmup,
                    load_after_exit_s=1.0 if args.balanced else 0.0,
                )
            results.append(summary(record, args.drain_s))
            print(json.dumps(results[-1], indent=1), flush=True)
    dropped = sum(r["http"]["failed"] + r["grpc"]["failed"] + r["probe"]["failed"] for r in results)
    print(f"{len(results)} restart(s), {dropped} dropped request(s)")
    sys.exit(1 if dropped else 0)


if __name__ == "__main__":
    main()
