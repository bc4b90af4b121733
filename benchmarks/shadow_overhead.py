"""What shadow traffic costs the primary: p50/p99 with and without a shadow version, interleaved.

Builds a repository with digits_cnn versions 1 and 2 (version 2: version 1's export with
perturbed weights, tests/service/versioned_repository.py), starts a local Triton on it and one
gateway, and alternates rounds on that same gateway: routing held on version 1 (shadow off), then
version 1 with version 2 as shadow (shadow on). Each round is a closed loop of REST predict
requests (a real held-out digit PNG) at the given concurrency. The shadow copies' own counts
(compared, dropped by reason) come from the gateway's /metrics, diffed per round.

    python benchmarks/shadow_overhead.py --concurrency 16 --duration 8 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (  # first: puts the project root on sys.path
    ROOT,
    latency_summary,
    rest_predict_loop,
    start_gateway,
)
from prometheus_client.parser import text_string_to_metric_families

from service.local_triton import LocalTriton
from service.model_contract import ROUTING_FILE
from tests.service.rest.payloads import digit_pngs
from tests.service.versioned_repository import MODEL, add_version, copy_model, set_version_policy

OFF = {"weights": {"1": 100}}
ON = {"weights": {"1": 100}, "shadow": "2"}


def shadow_counts(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != MODEL:
                continue
            if sample.name == "modelgate_shadow_compared_total":
                counts["compared"] = counts.get("compared", 0.0) + sample.value
            elif sample.name == "modelgate_shadow_dropped_total":
                key = f"dropped_{sample.labels['reason']}"
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name == "modelgate_routing_shadow" and sample.value == 1:
                counts["shadow_on"] = 1.0
    return counts


def apply_routing(repository: Path, url: str, routing: dict[str, Any]) -> None:
    path = repository / MODEL / ROUTING_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(routing))
    tmp.replace(path)
    want = "shadow" in routing
    give_up = time.monotonic() + 15
    while (shadow_counts(url).get("shadow_on") == 1.0) != want:
        if time.monotonic() > give_up:
            raise RuntimeError("the gateway did not apply the routing change")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each mode, interleaved")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument(
        "--gateway-setting", action="append", default=[], metavar="NAME=VALUE",
        help="extra gateway setting, e.g. shadow_max_inflight=8 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    pngs, _ = digit_pngs(count=1)
    body = json.dumps({"inputs": [base64.b64encode(pngs[0]).decode()], "top_k": 1}).encode()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        repository = Path(tmp) / "repository"
        model_dir = copy_model(args.repository, repository)
        add_version(model_dir, 2, seed=2, labels=tuple(str(i) for i in range(10)))
        set_version_policy(model_dir, "latest { num_versions: 2 }")
        (model_dir / ROUTING_FILE).write_text(json.dumps(OFF))
        triton = LocalTriton(repository)
        triton.start()
        stack.callback(triton.stop)
        url, _ = start_gateway(
            stack, repository, triton.grpc_url, ["routing_reload_s=0.1", *args.gateway_setting]
        )
        latencies: dict[str, list[float]] = {"shadow off": [], "shadow on": []}
        errors = {"shadow off": 0, "shadow on": 0}
        seconds = {"shadow off": 0.0, "shadow on": 0.0}
        shadow_totals: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, routing in (("shadow off", OFF), ("shadow on", ON)):
                apply_routing(repository, url, routing)
                before = shadow_counts(url)
                lat, secs, errs = asyncio.run(
                    rest_predict_loop(
                        url, MODEL, body, args.concurrency, args.warmup, args.duration
                    )
                )
                after = shadow_counts(url)
                latencies[name] += lat
                errors[name] += errs
                seconds[name] += secs
                if name == "shadow on":
                    for key, value in after.items():
                        if key != "shadow_on":
                            shadow_totals[key] = (
                                shadow_totals.get(key, 0.0) + value - before.get(key, 0.0)
                            )
        results = {n: latency_summary(latencies[n], errors[n], seconds[n]) for n in latencies}
    print(
        f"digits_cnn REST, concurrency {args.concurrency}, {args.rounds} x {args.duration:g} s "
        "per mode, interleaved, one gateway"
    )
    print(f"{'mode':12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, row in results.items():
        print(
            f"{name:12} {row['throughput_rps']:8.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['errors']:7.0f}"
        )
    dropped = {k: v for k, v in shadow_totals.items() if k.startswith("dropped") and v}
    print(
        f"shadow copies while on: {shadow_totals.get('compared', 0):.0f} rows compared, "
        f"dropped {dropped or 'none'}"
    )
    if args.json:
        print(json.dumps({"results": results, "shadow": shadow_totals}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
