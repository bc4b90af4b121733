"""`modelgate loadtest` and `modelgate capacity`: Locust headless as a subprocess, then a verdict.

Locust runs in its own process (gevent monkey-patches everything it
imports, and its CPU must be watched from outside). The runner starts it with
the SLA's profile, watches its CPU, scrapes the gateway's `/metrics` when the
warm-up ends and again at the end, then judges Locust's own statistics.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from loadtests import chart, promdiff, report
from loadtests.capacity import Capacity, read_steps
from loadtests.contract import (
    API_KEY_ENV,
    CAPACITY_STEPS_ENV,
    SLA_ENV,
    TARGETS_ENV,
    WARMUP_OVER,
)
from loadtests.cpu import CpuAssessment, CpuMonitor, CpuSample, assess
from loadtests.promdiff import StageFigure
from loadtests.rollout_steps import RolloutSchedule, StepOutcome
from loadtests.sla import Sla, load_sla
from loadtests.verdict import VerdictLine, breaches, evaluate_all, read_locust_stats

LOCUST_GRACE_S = 120.0  # pool building, spawning and shutdown on top of the planned run time
LOG_TAIL_LINES = 30
MACHINE_BUSY_PERCENT = 90.0  # whole-machine CPU worth a warning (not a verdict on the run)


class LoadtestError(RuntimeError):
    """The run could not produce a verdict (unreachable host, Locust failed, ...)."""


def locustfile_dir() -> Path:
    """`loadtests/` of the working directory, else this package's own directory."""
    for candidate in (Path.cwd() / "loadtests", Path(__file__).resolve().parent):
        if (candidate / "locustfile.py").is_file():
            return candidate
    raise LoadtestError("cannot find loadtests/locustfile.py (run from the project root)")


def default_out_dir(kind: str) -> Path:
    return Path("reports") / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resolve_host(sla: Sla, host: str | None) -> str:
    chosen = host or sla.host
    if not chosen:
        raise LoadtestError("no gateway URL: pass --host or set `host` in the SLA file")
    if not chosen.startswith(("http://", "https://")):
        raise LoadtestError(f"--host must be an http(s) URL, got {chosen!r}")
    return chosen.rstrip("/")


def check_reachable(host: str) -> None:
    """Fail fast, with a clear message, when nothing answers at `host`."""
    try:
        httpx.get(f"{host}/healthz", timeout=5.0)
    except httpx.HTTPError as exc:
        raise LoadtestError(f"cannot reach the gateway at {host}: {exc}") from exc


# --- one Locust subprocess -----------------------------------------------------------


@dataclass
class LocustProcess:
    """What happened while one Locust subprocess ran."""

    returncode: int
    log: Path
    samples: list[CpuSample]
    warmup_over_at: float | None = None
    timed_out: bool = False

    def tail(self) -> str:
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


def run_locust(
    args: list[str],
    env: dict[str, str],
    log: Path,
    timeout_s: float,
    on_warmup_over: Callable[[], None] | None = None,
) -> LocustProcess:
    """Run `python -m locust ARGS`, teeing its output to `log`, watching its CPU."""
    command = [sys.executable, "-m", "locust", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    monitor = CpuMonitor(process.pid).start()
    result = LocustProcess(returncode=-1, log=log, samples=[])

    def pump() -> None:
        assert process.stdout is not None
        with log.open("w", encoding="utf-8") as sink:
            sink.write("$ " + " ".join(command) + "\n")
            for line in process.stdout:
                sink.write(line)
                sink.flush()
                if WARMUP_OVER in line and result.warmup_over_at is None:
                    result.warmup_over_at = time.time()
                    if on_warmup_over is not None:
                        on_warmup_over()

    reader = threading.Thread(target=pump, name="locust-log", daemon=True)
    reader.start()
    try:
        result.returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        process.terminate()
        try:
            result.returncode = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            result.returncode = process.wait()
    finally:
        result.samples = monitor.stop()
        reader.join(timeout=10)
    return result


def _locust_env(sla_path: Path, targets: list[str] | None = None) -> dict[str, str]:
    env = {SLA_ENV: str(sla_path.resolve())}
    if targets:
        env[TARGETS_ENV] = ",".join(targets)
    return env


# --- modelgate loadtest --------------------------------------------------------------


@dataclass
class LoadtestOutcome:
    sla: Sla
    host: str
    out_dir: Path
    lines: list[VerdictLine]
    stages: list[StageFigure]
    gateway_totals: list[StageFigure]
    cpu: CpuAssessment
    warnings: list[str] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every budget met and every rollout step applied."""
        return not breaches(self.lines) and all(step.error is None for step in self.steps)

    @property
    def breakdown(self) -> list[StageFigure]:
        """Per model: its stages in path order, then the gateway's end-to-end figure."""
        combined = self.stages + self.gateway_totals
        order: dict[str, int] = {}
        for figure in combined:
            order.setdefault(figure.model, len(order))
        return sorted(combined, key=lambda f: (order[f.model], f.stage.startswith("total")))

    @property
    def trustworthy(self) -> bool:
        return not self.cpu.saturated

    def render_text(self) -> str:
        parts = [
            f"SLA verdict for {self.host} "
            f"({self.sla.load.users} users, {self.sla.load.duration_s:g} s measured "
            f"after {self.sla.load.warmup_s:g} s warm-up)",
            report.text_table(report.VERDICT_HEADER, report.verdict_rows(self.lines)),
        ]
        if self.stages or self.gateway_totals:
            parts += [
                "Gateway per-stage latency over the measured window (/metrics diff):",
                report.text_table(report.STAGE_HEADER, report.stage_rows(self.breakdown)),
            ]
        if self.steps:
            parts.append(
                "\n".join(
                    ["Rollout steps during the load:", *(f"  {s.describe()}" for s in self.steps)]
                )
            )
        parts.append(f"Load generator CPU: {self.cpu.describe()}")
        if self.warnings:
            parts.append("\n".join(f"WARNING: {w}" for w in self.warnings))
        failed = breaches(self.lines)
        if failed:
            parts.append("\n".join(["BREACHED:", *(f"  {line.describe()}" for line in failed)]))
        parts.append(f"RESULT: {'PASS' if self.passed else 'FAIL'}" + _trust_suffix(self))
        parts.append(f"Reports in {self.out_dir}")
        return "\n\n".join(parts)

    def render_markdown(self, command: str) -> str:
        parts = [
            "# Load test verdict",
            f"Command: `{command}`",
            f"Result: **{'PASS' if self.passed else 'FAIL'}**{_trust_suffix(self)}",
            report.markdown_table(report.VERDICT_HEADER, report.verdict_rows(self.lines)),
            "## Gateway per-stage latency (measured window)",
            report.markdown_table(report.STAGE_HEADER, report.stage_rows(self.breakdown))
            if self.stages or self.gateway_totals
            else "gateway /metrics not available",
            *(
                [
                    "## Rollout steps during the load",
                    "\n".join(f"- {s.describe()}" for s in self.steps),
                ]
                if self.steps
                else []
            ),
            "## Load generator",
            self.cpu.describe(),
            *[f"- WARNING: {w}" for w in self.warnings],
            "Files: `locust_report.html` (Locust), `locust_*.csv`, `chart.png`, `verdict.json`.",
        ]
        return "\n\n".join(parts) + "\n"

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "passed": self.passed,
            "trustworthy": self.trustworthy,
            "lines": [
                {
                    "target": line.target,
                    "metric": line.metric,
                    "comparator": line.comparator,
                    "budget": line.budget,
                    "measured": line.measured,
                    "unit": line.unit,
                    "passed": line.passed,
                }
                for line in self.lines
            ],
            "stages": [vars(f) for f in self.breakdown],
            "cpu": vars(self.cpu) | {"saturated": self.cpu.saturated},
            "warnings": self.warnings,
            "rollout": [step.to_json() for step in self.steps],
        }


def _trust_suffix(outcome: LoadtestOutcome) -> str:
    if outcome.trustworthy:
        return ""
    return " (UNTRUSTWORTHY: the load generator's CPU saturated)"


def run_loadtest(
    sla_path: Path,
    host: str | None = None,
    out_dir: Path | None = None,
    model_repository: Path | None = None,
) -> LoadtestOutcome:
    """Run the SLA's steady load against `host` and judge it. Raises `SlaError`/`LoadtestError`.

    The SLA's `rollout` steps (if any) change routing in `model_repository` (default: the SLA's
    own `model_repository`, relative to the file) while the measured window runs.
    """
    sla = load_sla(sla_path)
    base_url = resolve_host(sla, host)
    check_reachable(base_url)
    repository = model_repository or (sla_path.parent / (sla.model_repository or ".")).resolve()
    schedule = RolloutSchedule(list(sla.rollout), repository, base_url)
    out = out_dir or default_out_dir("loadtest")
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    scrapes: dict[str, str] = {}

    def scrape(label: str) -> None:
        try:
            scrapes[label] = promdiff.scrape(base_url, os.environ.get(API_KEY_ENV))
        except httpx.HTTPError as exc:
            warnings.append(f"could not read {base_url}/metrics ({label}): {exc}")

    if sla.load.warmup_s == 0:
        scrape("before")
    profile = sla.load
    run_time = math.ceil(profile.warmup_s + profile.duration_s)
    args = [
        "-f",
        str(locustfile_dir() / "locustfile.py"),
        "--headless",
        "--host",
        base_url,
        "--users",
        str(profile.users),
        "--spawn-rate",
        str(profile.spawn_rate),
        "--run-time",
        f"{run_time}s",
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--html",
        str(out / "locust_report.html"),
        "--only-summary",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "0",
    ]
    if profile.processes > 1:
        args += ["--processes", str(profile.processes)]

    def warmup_over() -> None:
        scrape("before")
        schedule.start()

    if profile.warmup_s == 0:
        schedule.start()
    on_warmup = None if profile.warmup_s == 0 else warmup_over
    try:
        locust = run_locust(
            args, _locust_env(sla_path), out / "locust.log", run_time + LOCUST_GRACE_S, on_warmup
        )
    finally:
        steps = schedule.finish()
    scrape("after")
    stats_csv = out / "locust_stats.csv"
    if locust.timed_out or locust.returncode != 0 or not stats_csv.exists():
        raise LoadtestError(
            f"Locust failed (exit {locust.returncode}"
            f"{', timed out' if locust.timed_out else ''}); last lines of {locust.log}:\n"
            + locust.tail()
        )
    if profile.warmup_s > 0 and locust.warmup_over_at is None:
        warnings.append("the warm-up never ended: the statistics include it")
    lines = evaluate_all(sla.targets, read_locust_stats(stats_csv))
    stages: list[StageFigure] = []
    totals: list[StageFigure] = []
    if "before" in scrapes and "after" in scrapes:
        stages = promdiff.stage_breakdown(scrapes["before"], scrapes["after"])
        totals = promdiff.request_breakdown(scrapes["before"], scrapes["after"])
    cpu = assess(locust.samples, sla.cpu_saturation_percent, since=locust.warmup_over_at)
    if cpu.saturated:
        warnings.append(
            "the load generator's CPU saturated during the measured window: latencies are "
            "inflated by the generator itself; use fewer users, --processes, or run Locust "
            "on another machine"
        )
    if cpu.system_mean >= MACHINE_BUSY_PERCENT:
        warnings.append(
            f"the whole machine's CPU averaged {cpu.system_mean:.0f} %: if the gateway runs here "
            "too, it competed with the load generator (and anything else running) for CPU"
        )
    outcome = LoadtestOutcome(sla, base_url, out, lines, stages, totals, cpu, warnings, steps)
    chart.loadtest_chart(
        out / "locust_stats_history.csv", sla.targets, stages, profile.warmup_s, out / "chart.png"
    )
    command = f"modelgate loadtest --sla {sla_path} --host {base_url} --out {out}"
    (out / "report.md").write_text(outcome.render_markdown(command), encoding="utf-8")
    (out / "verdict.json").write_text(json.dumps(outcome.to_json(), indent=2), encoding="utf-8")
    return outcome


# --- modelgate capacity --------------------------------------------------------------


@dataclass
class CapacityOutcome:
    host: str
    out_dir: Path
    capacities: list[Capacity]
    saturated_steps: dict[str, set[int]]
    min_throughput: dict[str, float | None]

    def render_text(self) -> str:
        parts = [f"Capacity under SLA for {self.host}"]
        for capacity in self.capacities:
            parts.append(f"{capacity.target}:")
            rows = report.capacity_rows(capacity, self.saturated_steps[capacity.target])
            parts.append(report.text_table(report.CAPACITY_HEADER, rows))
        parts.append(report.text_table(("target", "capacity under SLA", "limited by"), self.rows()))
        return "\n\n".join(parts)

    def rows(self) -> list[tuple[str, str, str]]:
        rows = []
        for capacity in self.capacities:
            best = capacity.best
            if best is None:
                figure = "none: the first step already breached"
            else:
                figure = f"{best.ok_rps:.1f} req/s at {best.users} users"
                if best.users in self.saturated_steps[capacity.target]:
                    figure += " (generator-bound: its CPU saturated)"
                minimum = self.min_throughput[capacity.target]
                if minimum is not None and best.ok_rps < minimum:
                    figure += f" (below the SLA's min_throughput_rps {minimum:g})"
            rows.append((capacity.target, figure, capacity.limited_by))
        return rows

    def render_markdown(self, command: str) -> str:
        parts = ["# Capacity under SLA", f"Command: `{command}`"]
        parts.append(
            report.markdown_table(("target", "capacity under SLA", "limited by"), self.rows())
        )
        for capacity in self.capacities:
            parts.append(f"## {capacity.target}")
            rows = report.capacity_rows(capacity, self.saturated_steps[capacity.target])
            parts.append(report.markdown_table(report.CAPACITY_HEADER, rows))
        return "\n\n".join(parts) + "\n"


def _saturated_steps(capacity: Capacity, samples: list[CpuSample], threshold: float) -> set[int]:
    saturated = set()
    for step in capacity.steps:
        window = [s for s in samples if step.ended_at - step.seconds <= s.at <= step.ended_at]
        if assess(window, threshold).saturated:
            saturated.add(step.users)
    return saturated


def run_capacity(
    sla_path: Path,
    host: str | None = None,
    out_dir: Path | None = None,
    only: list[str] | None = None,
) -> CapacityOutcome:
    """Step-load each target on its own until a budget breaks; report the best passing step."""
    sla = load_sla(sla_path)
    base_url = resolve_host(sla, host)
    check_reachable(base_url)
    targets = [t for t in sla.targets if not only or t.name in only or t.model in only]
    if not targets:
        raise LoadtestError(
            f"no target matches {only}; the SLA has {[t.name for t in sla.targets]}"
        )
    out = out_dir or default_out_dir("capacity")
    out.mkdir(parents=True, exist_ok=True)
    profile = sla.capacity
    planned = len(profile.user_steps) * profile.step_s
    folder = locustfile_dir()
    capacities, saturated, minimum = [], {}, {}
    for target in targets:
        target_out = out / target.name.replace(" ", "_")
        target_out.mkdir(exist_ok=True)
        steps_file = target_out / "steps.jsonl"
        steps_file.unlink(missing_ok=True)
        args = [
            "-f",
            f"{folder / 'locustfile.py'},{folder / 'capacity_shape.py'}",
            "--headless",
            "--host",
            base_url,
            "--csv",
            str(target_out / "locust"),
            "--csv-full-history",
            "--html",
            str(target_out / "locust_report.html"),
            "--only-summary",
            "--stop-timeout",
            "5",
            "--exit-code-on-error",
            "0",
        ]
        env = _locust_env(sla_path, [target.name]) | {CAPACITY_STEPS_ENV: str(steps_file)}
        locust = run_locust(args, env, target_out / "locust.log", planned + LOCUST_GRACE_S)
        steps = read_steps(steps_file)
        if locust.returncode != 0 or not steps:
            raise LoadtestError(
                f"capacity run for {target.name} failed (exit {locust.returncode}); "
                f"last lines of {locust.log}:\n{locust.tail()}"
            )
        capacity = Capacity(target.name, steps)
        capacities.append(capacity)
        saturated[target.name] = _saturated_steps(
            capacity, locust.samples, sla.cpu_saturation_percent
        )
        minimum[target.name] = target.budget.min_throughput_rps
    outcome = CapacityOutcome(base_url, out, capacities, saturated, minimum)
    chart.capacity_chart(capacities, out / "capacity.png")
    command = f"modelgate capacity --sla {sla_path} --host {base_url} --out {out}"
    (out / "capacity.md").write_text(outcome.render_markdown(command), encoding="utf-8")
    (out / "capacity.json").write_text(
        json.dumps(
            {
                c.target: {
                    "capacity_ok_rps": c.best.ok_rps if c.best else None,
                    "at_users": c.best.users if c.best else None,
                    "limited_by": c.limited_by,
                    "steps": [s.to_json() for s in c.steps],
                }
                for c in capacities
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return outcome
