"""What the out-of-distribution score costs per request: the detector alone, in process.

For each model, the benchmark payload of `common.sample_payload` is preprocessed as the gateway
does it and run once through ONNX Runtime for its logits; then `OodDetector.score` (what the
gateway adds to every request) is timed on batches of 1 and 16 rows, best of `--repeat` runs of
`--number` calls (timeit's convention: the best run is the least disturbed one).

    PYTHONPATH=. python benchmarks/ood_cost.py
"""

from __future__ import annotations

import argparse
import itertools
import timeit
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import ROOT, model_tensors, sample_payload  # first: puts the project root on sys.path

from service.monitoring.ood import OodDetector
from service.repository import load_repository


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--number", type=int, default=2000, help="calls per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (the best is shown)")
    args = parser.parse_args()
    print(f"{'model':20} {'rows':>4} {'score us/call':>13} {'us/row':>7}")
    for name, spec in load_repository(args.repository).items():
        detector = OodDetector.load(spec.path / spec.version)
        if detector is None:
            print(f"{name:20} no detector")
            continue
        session = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
        row = model_tensors(spec, sample_payload(spec)[0])
        for rows in (1, 16):
            tensors = {k: np.repeat(v[None, ...], rows, axis=0) for k, v in row.items()}
            (logits,) = session.run([spec.output], tensors)
            # Two copies taken in turn: the detector keeps its last batch's token likelihoods
            # (shared by two text components), and the gateway never scores one array twice.
            batches = itertools.cycle([tensors, {k: v.copy() for k, v in tensors.items()}])
            runs = timeit.repeat(
                lambda d=detector, b=batches, lg=logits: d.score(next(b), lg),  # type: ignore[misc]
                number=args.number,
                repeat=args.repeat,
            )
            per_call = min(runs) / args.number * 1e6
            print(f"{name:20} {rows:4d} {per_call:13.1f} {per_call / rows:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
