"""Model monitoring on vs off, in one process, without HTTP: CPU per `DataPlane.predict` request.

For each model, a data plane over the embedded backend (in-process ONNX Runtime) answers one
payload per request (`benchmarks/common.py`'s sample payload), `--concurrency` of them in flight
at a time (at 1 every batch holds one request; at 16 the batcher merges what queues while ONNX
Runtime runs, as under load). Four data planes live side by side in the process (monitoring
off, drift only, OOD scoring only, both) and take turns, one block of `--requests` requests
each, `--rounds` times, so a slow spell of a shared machine falls on all four alike; the table
shows each one's median process CPU per request and the differences to "off". Without HTTP parsing
and sockets the differences are a larger share of the total than through a server
(`benchmarks/vs_naive.py`).

    PYTHONPATH=. python benchmarks/monitoring_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from common import ROOT, sample_payload  # first: puts the project root on sys.path

from service.app import create_backend
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.repository import load_repository, load_repository_versions
from service.settings import Settings

MODES = {"off": (False, False), "drift": (True, False), "ood": (False, True), "both": (True, True)}


async def start_dataplane(repository: Path, mode: str) -> DataPlane:
    drift, ood = MODES[mode]
    settings = Settings(
        model_repository=repository,
        backend="embedded",
        drift_monitoring=drift,
        ood_enabled=ood,
        watch_interval_s=0,
    )
    specs = load_repository_versions(repository)
    metrics = Metrics(specs)
    backend = create_backend(
        settings, [spec for versions in specs.values() for spec in versions.values()], metrics
    )
    dataplane = DataPlane(settings, specs, backend, metrics)
    await dataplane.start()
    return dataplane


async def cpu_per_request(
    dataplane: DataPlane, model: str, payload: Any, requests: int, concurrency: int
) -> float:
    """Process CPU per request of one block of `requests`, `concurrency` at a time."""

    async def client(count: int) -> None:
        for _ in range(count):
            await dataplane.predict(model, [payload], 1)

    per_client = max(1, requests // concurrency)
    started = time.process_time()
    await asyncio.gather(*(client(per_client) for _ in range(concurrency)))
    return (time.process_time() - started) / (per_client * concurrency) * 1e6


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--models", nargs="+", help="default: every model of the repository")
    parser.add_argument("--requests", type=int, default=400, help="requests per timed block")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=15, help="blocks per setting, interleaved")
    args = parser.parse_args()
    specs = load_repository(args.repository)
    dataplanes = {mode: await start_dataplane(args.repository, mode) for mode in MODES}
    print(f"{'model':20} {'c':>3} " + " ".join(f"{m + ' us':>9}" for m in MODES) + "   diffs")
    try:
        for model in args.models or list(specs):
            payload = sample_payload(specs[model])[0]
            for concurrency in args.concurrency:
                runs: dict[str, list[float]] = {mode: [] for mode in MODES}
                for dataplane in dataplanes.values():  # warm-up, untimed
                    await cpu_per_request(dataplane, model, payload, 200, concurrency)
                for _ in range(args.rounds):
                    for mode, dataplane in dataplanes.items():
                        runs[mode].append(
                            await cpu_per_request(
                                dataplane, model, payload, args.requests, concurrency
                            )
                        )
                median = {mode: statistics.median(values) for mode, values in runs.items()}
                diffs = " ".join(
                    f"{mode} {median[mode] - median['off']:+.1f}" for mode in MODES if mode != "off"
                )
                print(
                    f"{model:20} {concurrency:3} "
                    + " ".join(f"{median[m]:9.1f}" for m in MODES)
                    + f"   {diffs}",
                    flush=True,
                )
    finally:
        for dataplane in dataplanes.values():
            await dataplane.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
