"""How high the drift gauges read on in-distribution traffic, by window size.

For each committed model, windows of N items are drawn from the reference distribution itself
(the profile's held-out bin shares) and compared with the reference by PSI, exactly as the
gateway does; the table shows the largest feature PSI per window (what the drift alerts compare
with 0.25), median and 99th percentile over `--draws` windows. It sets the default window
(`drift_window_items`) and the minimum before publishing (`drift_min_items`).

    PYTHONPATH=. python benchmarks/drift_noise.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import ROOT  # first: puts the project root on sys.path

from service.model_contract import REFERENCE_PROFILE_FILE, is_model_dir, version_dirs
from service.monitoring.profile import load_profile, psi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 300, 500, 1000])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'model':20} {'window':>6} {'max PSI p50':>11} {'p99':>6} {'max':>6}")
    for model_dir in sorted(p for p in args.repository.iterdir() if is_model_dir(p)):
        version = version_dirs(model_dir)[-1]
        profile = load_profile(model_dir / str(version) / REFERENCE_PROFILE_FILE)
        for size in args.sizes:
            largest = []
            for _ in range(args.draws):
                worst = 0.0
                for feature in profile.features:
                    shares = feature.counts / feature.counts.sum()
                    counts = np.bincount(
                        rng.choice(len(shares), size=size, p=shares), minlength=len(shares)
                    )
                    worst = max(worst, psi(counts, feature.counts))
                largest.append(worst)
            print(
                f"{model_dir.name:20} {size:6d} {np.median(largest):11.3f} "
                f"{np.quantile(largest, 0.99):6.3f} {max(largest):6.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
