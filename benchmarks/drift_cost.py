"""What drift monitoring costs the gateway, stage by stage, on the committed models.

Per item on the request path: the input features (`extract`, on the decoded payload and its
tensors, which preprocessing already holds) and appending the item to the window (`add`, here
one item per request, the worst case). Per scrape: recomputing every feature's PSI over a full
window (`refresh`). Next to them, what the gateway's own decode + preprocess of the same item
costs, for scale. Single-threaded, best of `--repeat` timings of `--number` calls each.

    PYTHONPATH=. python benchmarks/drift_cost.py
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import ROOT, sample_payload  # first: puts the project root on sys.path
from prometheus_client import CollectorRegistry

from service import preprocess
from service.monitoring.drift import DriftMonitor
from service.repository import load_repository


def best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--window", type=int, default=500)
    args = parser.parse_args()
    specs = load_repository(args.repository)
    monitor = DriftMonitor(CollectorRegistry(), args.window, 1, 5.0)
    print(
        f"{'model':20} {'decode+preprocess':>17} {'extract':>8} {'add':>6} "
        f"{'refresh (1 window)':>18}   [microseconds]"
    )
    for name, spec in specs.items():
        pre = preprocess.for_model(spec, max_image_pixels=16_000_000)
        window = monitor.window_for(spec, getattr(pre, "tokenizer", None))
        assert window is not None
        payload = sample_payload(spec)[0]
        decoded = pre.decode(payload)
        tensors = pre.preprocess(decoded)
        logits = np.zeros((1, len(spec.labels)), dtype=np.float32)
        row = window.extract(decoded, tensors)
        baseline = best_us(
            lambda p=pre, x=payload: p.preprocess(p.decode(x)), args.number, args.repeat
        )
        extract = best_us(
            lambda w=window, d=decoded, t=tensors: w.extract(d, t), args.number, args.repeat
        )
        add = best_us(lambda w=window, r=row, o=logits: w.add([r], o), args.number, args.repeat)
        refresh = best_us(window.distances, max(1, args.number // 100), args.repeat)
        print(f"{name:20} {baseline:17.1f} {extract:8.1f} {add:6.1f} {refresh:18.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
