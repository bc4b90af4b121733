"""The run's chart: throughput from Locust's history counts, and a real PNG on disk."""

from __future__ import annotations

from pathlib import Path

from loadtests.capacity import Capacity, StepRecord
from loadtests.chart import capacity_chart, loadtest_chart, read_history
from loadtests.promdiff import StageFigure
from loadtests.sla import parse_sla

HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
    "99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
    "Total Average Content Size"
)


def row(at: int, name: str, total: int, p99: str = "9") -> str:
    kind = "" if name == "Aggregated" else "POST"
    percentiles = ",".join(["3", "4", "4", "5", "6", "7", "8", p99, p99, p99, p99])
    return f"{at},4,{kind},{name},0.0,0.0,{percentiles},{total},0,3,3.5,1,20,180"


def history(tmp_path: Path) -> Path:
    rows = [HEADER]
    # 100 req/s, then the warm-up reset at t=3 (the count restarts), then 200 req/s.
    for at, total in ((0, 0), (1, 100), (2, 200), (3, 150), (4, 350)):
        rows += [row(1000 + at, "rest digits_cnn", total), row(1000 + at, "Aggregated", total)]
    path = tmp_path / "locust_stats_history.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_throughput_is_the_growth_of_the_request_count(tmp_path: Path) -> None:
    per_name, users = read_history(history(tmp_path))
    assert per_name["rest digits_cnn"]["rps"] == [(1, 100), (2, 100), (3, 150), (4, 200)]
    assert per_name["rest digits_cnn"]["p99"][0] == (0, 9.0)
    assert users[-1] == (4, 4.0)


def test_charts_are_written_as_png(tmp_path: Path) -> None:
    sla = parse_sla(
        "load: {users: 4, spawn_rate: 4, duration_s: 2, warmup_s: 3}\n"
        "targets: [{model: digits_cnn, budget: {p99_ms: 50}}]\n"
    )
    stages = [StageFigure("digits_cnn", "triton", 350, 1.0, 2.0, 3.0)]
    out = loadtest_chart(history(tmp_path), sla.targets, stages, 3.0, tmp_path / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [StepRecord(1, 7.0, 0.0, 700, 0, 100.0, 2.0, 3.0, 4.0, [])]
    capacity = capacity_chart([Capacity("rest digits_cnn", steps)], tmp_path / "capacity.png")
    assert capacity.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
