"""Drift monitoring on vs off, in one process, without HTTP: CPU per `DataPlane.predict` call.

For each model, a data plane over the embedded backend (in-process ONNX Runtime) answers one
payload per call (`benchmarks/common.py`'s sample payload), `--calls` times after 200 warm-up
calls, with drift monitoring off and on, alternating `--rounds` times; the table shows the
median process CPU per call of each and the difference. Without HTTP parsing and sockets the
difference is a larger share of the total than through a server (`benchmarks/vs_naive.py`).

    PYTHONPATH=. python benchmarks/drift_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from common import ROOT, sample_payload  # first: puts the project root on sys.path

from service.app import create_backend
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.repository import load_repository
from service.settings import Settings


async def cpu_per_call(repository: Path, model: str, drift: bool, calls: int) -> float:
    settings = Settings(model_repository=repository, backend="embedded", drift_monitoring=drift)
    specs = load_repository(repository)
    metrics = Metrics(specs)
    backend = create_backend(settings, list(specs.values()), metrics)
    dataplane = DataPlane(settings, specs, backend, metrics)
    await dataplane.start()
    payload = sample_payload(specs[model])[0]
    try:
        for _ in range(200):
            await dataplane.predict(model, [payload], 1)
        started = time.process_time()
        for _ in range(calls):
            await dataplane.predict(model, [payload], 1)
        return (time.process_time() - started) / calls * 1e6
    finally:
        await dataplane.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':20} {'off us/call':>11} {'on us/call':>10} {'difference':>10}")
    for model in load_repository(args.repository):
        off, on = [], []
        for _ in range(args.rounds):
            off.append(await cpu_per_call(args.repository, model, False, args.calls))
            on.append(await cpu_per_call(args.repository, model, True, args.calls))
        off_us, on_us = statistics.median(off), statistics.median(on)
        print(f"{model:20} {off_us:11.1f} {on_us:10.1f} {on_us - off_us:+10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
