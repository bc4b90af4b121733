"""Plain-text and Markdown tables for verdicts, stage breakdowns and capacity results."""

from __future__ import annotations

from collections.abc import Sequence

from loadtests.capacity import Capacity
from loadtests.promdiff import StageFigure
from loadtests.verdict import VerdictLine


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    rule = "  ".join("-" * w for w in widths)
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=False)), rule]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


VERDICT_HEADER = ("target", "budget", "measured", "result")
STAGE_HEADER = ("model", "stage", "requests", "mean ms", "p95 ms", "p99 ms")
CAPACITY_HEADER = ("users", "ok req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "step")


def verdict_rows(lines: Sequence[VerdictLine]) -> list[tuple[str, str, str, str]]:
    return [
        (line.target, line.budget_text, line.measured_text, "PASS" if line.passed else "FAIL")
        for line in lines
    ]


def stage_rows(figures: Sequence[StageFigure]) -> list[tuple[str, ...]]:
    return [
        (f.model, f.stage, str(f.count), _ms(f.mean_ms), _ms(f.p95_ms), _ms(f.p99_ms))
        for f in figures
    ]


def capacity_rows(capacity: Capacity, saturated_users: set[int]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for step in capacity.steps:
        verdict = "ok" if step.passed else "breach"
        if step.users in saturated_users:
            verdict += " (generator CPU saturated)"
        errors = f"{step.failures}/{step.requests}"
        rows.append(
            (
                str(step.users),
                f"{step.ok_rps:.1f}",
                _ms(step.p50_ms),
                _ms(step.p95_ms),
                _ms(step.p99_ms),
                errors,
                verdict,
            )
        )
    return rows
