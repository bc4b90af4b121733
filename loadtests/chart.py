"""A PNG next to Locust's HTML report: percentiles and throughput over time, stage breakdown.

Locust's report shows the run as a whole; this chart adds what it lacks: the
warm-up window that the verdict left out, each target's rolling p50/p95/p99
against its own budget, and the gateway's per-stage p95/p99 for the run.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt

from loadtests.capacity import Capacity
from loadtests.promdiff import StageFigure
from loadtests.sla import Target
from loadtests.verdict import AGGREGATED

Series = dict[str, list[tuple[float, float]]]


def _value(text: str) -> float | None:
    return None if text in ("", "N/A") else float(text)


def read_history(path: Path) -> tuple[dict[str, Series], list[tuple[float, float]]]:
    """Per request name: time -> p50/p95/p99/rps; plus the user count over time.

    Percentiles are Locust's rolling ones. Throughput is the growth of the total
    request count between rows (Locust's own rolling rate lags by seconds and
    reads zero right after the warm-up reset); a count that drops was reset.
    """
    per_name: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    users: list[tuple[float, float]] = []
    if not path.exists():
        return {}, []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}, []
    start = float(rows[0]["Timestamp"])
    last: dict[str, tuple[float, float]] = {}
    for row in rows:
        at = float(row["Timestamp"]) - start
        name = row["Name"]
        if name == AGGREGATED:
            users.append((at, float(row["User Count"])))
            continue
        for column, key in (("50%", "p50"), ("95%", "p95"), ("99%", "p99")):
            value = _value(row[column])
            if value:  # Locust writes 0 for a window without requests (e.g. after a reset)
                per_name[name][key].append((at, value))
        count = float(row["Total Request Count"])
        if name in last and at > last[name][0]:
            previous_at, previous = last[name]
            grown = count - previous if count >= previous else count
            per_name[name]["rps"].append((at, grown / (at - previous_at)))
        last[name] = (at, count)
    return per_name, users


def loadtest_chart(
    history_csv: Path,
    targets: Sequence[Target],
    stages: Sequence[StageFigure],
    warmup_s: float,
    out: Path,
) -> Path:
    per_name, users = read_history(history_csv)
    stage_height = max(3.0, 0.28 * len(stages))
    fig, axes = plt.subplots(
        3,
        1,
        figsize=(11, 8 + stage_height),
        height_ratios=[4, 4, stage_height],
        constrained_layout=True,
    )
    latency, throughput, breakdown = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, target in enumerate(targets):
        colour = colours[index % len(colours)]
        series = per_name.get(target.name, {})
        for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            points = series.get(key, [])
            if points:
                xs, ys = zip(*points, strict=True)
                latency.plot(xs, ys, style, color=colour, label=f"{target.name} {key}")
        if target.budget.p99_ms is not None:
            latency.axhline(target.budget.p99_ms, color=colour, alpha=0.35, linewidth=3)
        rps = series.get("rps", [])
        if rps:
            xs, ys = zip(*rps, strict=True)
            throughput.plot(xs, ys, color=colour, label=target.name)
    for axis in (latency, throughput):
        axis.axvspan(0, warmup_s, color="grey", alpha=0.15, label="warm-up (not judged)")
        axis.set_xlabel("seconds since start")
        axis.grid(alpha=0.3)
    latency.set_yscale("log")
    latency.set_ylabel("latency, ms (Locust, rolling; log scale)")
    latency.set_title("Latency percentiles (thick pale lines: p99 budgets)")
    latency.legend(fontsize="small", ncol=3)
    throughput.set_ylabel("requests/s")
    throughput.set_title("Throughput")
    if users:
        twin = throughput.twinx()
        xs, ys = zip(*users, strict=True)
        twin.plot(xs, ys, color="black", alpha=0.4, linewidth=1)
        twin.set_ylabel("users")
    throughput.legend(fontsize="small")
    _stage_bars(breakdown, stages)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _stage_bars(axis: plt.Axes, stages: Sequence[StageFigure]) -> None:
    axis.set_title("Gateway per-stage latency over the measured window (from /metrics)")
    if not stages:
        axis.text(0.5, 0.5, "gateway /metrics not available", ha="center", va="center")
        axis.set_axis_off()
        return
    labels = [f"{f.model}  {f.stage}" for f in stages]
    positions = range(len(stages))
    p95 = [f.p95_ms or 0.0 for f in stages]
    p99 = [f.p99_ms or 0.0 for f in stages]
    axis.barh([p - 0.2 for p in positions], p95, height=0.4, label="p95")
    axis.barh([p + 0.2 for p in positions], p99, height=0.4, label="p99")
    axis.set_yticks(list(positions), labels, fontsize="x-small")
    axis.invert_yaxis()
    axis.set_xlabel("ms")
    axis.legend()
    axis.grid(axis="x", alpha=0.3)


def capacity_chart(capacities: Sequence[Capacity], out: Path) -> Path:
    fig, (rate, tail) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for capacity in capacities:
        users = [s.users for s in capacity.steps]
        rate.plot(users, [s.ok_rps for s in capacity.steps], marker="o", label=capacity.target)
        tail.plot(
            users, [s.p99_ms or 0.0 for s in capacity.steps], marker="o", label=capacity.target
        )
        best = capacity.best
        if best is not None:
            rate.annotate(f"{best.ok_rps:.0f}", (best.users, best.ok_rps))
    for axis, label in ((rate, "successful requests/s"), (tail, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent users")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    rate.set_title("Throughput per step (annotated: capacity under SLA)")
    tail.set_title("p99 per step")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
