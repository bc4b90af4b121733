"""The verdict: budgets against Locust's statistics, line by line."""

from __future__ import annotations

from pathlib import Path

from loadtests.sla import parse_sla
from loadtests.verdict import Measurement, breaches, evaluate, read_locust_stats

# The header and row layout of Locust 2.x's `<prefix>_stats.csv`.
STATS_CSV = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,\
90%,95%,98%,99%,99.9%,99.99%,100%
POST,rest digits_cnn,2000,20,4,4.6,1.2,60.1,180.0,100.0,1.0,4,5,5,6,7,9,12,15,40,60,60
POST,rest vowels_gru,0,0,0,0.0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
,Aggregated,2000,20,4,4.6,1.2,60.1,180.0,100.0,1.0,4,5,5,6,7,9,12,15,40,60,60
"""

SLA = parse_sla(
    """
load: {users: 2, spawn_rate: 2, duration_s: 10}
targets:
  - model: digits_cnn
    budget: {p50_ms: 5, p95_ms: 8, p99_ms: 20, max_error_ratio: 0.02, min_throughput_rps: 99}
  - model: vowels_gru
    budget: {p99_ms: 20}
"""
)


def test_reads_locusts_csv(tmp_path: Path) -> None:
    path = tmp_path / "locust_stats.csv"
    path.write_text(STATS_CSV)
    stats = read_locust_stats(path)
    digits = stats["rest digits_cnn"]
    assert (digits.requests, digits.failures, digits.p95_ms, digits.p99_ms) == (2000, 20, 9, 15)
    assert digits.error_ratio == 0.01
    assert digits.ok_rps == 99.0
    assert stats["rest vowels_gru"].p99_ms is None


def test_each_budget_is_one_line_and_breaches_are_named(tmp_path: Path) -> None:
    path = tmp_path / "locust_stats.csv"
    path.write_text(STATS_CSV)
    stats = read_locust_stats(path)
    lines = evaluate(SLA.targets[0], stats["rest digits_cnn"])
    assert [(line.metric, line.passed) for line in lines] == [
        ("p50", True),
        ("p95", False),
        ("p99", True),
        ("error ratio", True),
        ("throughput", True),
    ]
    (breach,) = breaches(lines)
    assert breach.describe() == "FAIL rest digits_cnn: p95 <= 8 ms (measured 9 ms)"


def test_a_target_without_requests_fails_every_line() -> None:
    silent = Measurement("rest vowels_gru", 0, 0, 0.0, None, None, None)
    for measured in (silent, None):
        (line,) = evaluate(SLA.targets[1], measured)
        assert not line.passed
        assert line.measured_text == "no requests"


def test_throughput_counts_successes_only_and_can_be_left_out() -> None:
    half_failed = Measurement("rest digits_cnn", 100, 50, 190.0, 1.0, 1.0, 1.0)
    lines = evaluate(SLA.targets[0], half_failed)
    throughput = next(line for line in lines if line.metric == "throughput")
    assert throughput.measured == 95.0  # 190 req/s, half of them failed
    assert not throughput.passed
    assert next(line for line in lines if line.metric == "error ratio").passed is False
    without = evaluate(SLA.targets[0], half_failed, include_throughput=False)
    assert "throughput" not in {line.metric for line in without}


def test_verdict_command_judges_a_csv_from_elsewhere(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelgate.cli import app

    stats = tmp_path / "master_stats.csv"
    stats.write_text(STATS_CSV)
    sla = tmp_path / "sla.yaml"
    sla.write_text(
        "load: {users: 2, spawn_rate: 2, duration_s: 10}\n"
        "targets: [{model: digits_cnn, budget: {p99_ms: 20, max_error_ratio: 0.001}}]\n"
    )
    result = CliRunner().invoke(app, ["verdict", "--sla", str(sla), "--stats", str(stats)])
    assert result.exit_code == 1
    assert "FAIL rest digits_cnn: error ratio <= 0.001 (measured 0.01)" in result.output
    missing = CliRunner().invoke(
        app, ["verdict", "--sla", str(sla), "--stats", str(tmp_path / "nope.csv")]
    )
    assert missing.exit_code == 2
    assert "not a readable Locust stats CSV" in missing.output
