"""The `modelgate loadtest`, `capacity` and `verdict` commands (merged in by modelgate/cli.py).

Exit codes: 0 every budget met, 1 a budget breached, 2 the run could not be
judged (bad SLA file, unreachable gateway, Locust failed).
"""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_BREACH = 1
EXIT_UNUSABLE = 2

# Heavy imports (Locust, matplotlib) stay inside the commands.
app = typer.Typer()


@app.command()
def loadtest(
    sla: Path = typer.Option(..., "--sla", help="SLA file (YAML), e.g. loadtests/sla.yaml"),
    host: str | None = typer.Option(None, "--host", help="gateway URL; default: the SLA's host"),
    out: Path | None = typer.Option(
        None, "--out", help="report folder; default: reports/loadtest-<time>"
    ),
    model_repository: Path | None = typer.Option(
        None,
        "--model-repository",
        help="repository whose routing the SLA's rollout steps change; default: the SLA's",
    ),
) -> None:
    """Run the SLA's load with Locust, judge every budget, exit non-zero on a breach."""
    from loadtests.runner import LoadtestError, run_loadtest
    from loadtests.sla import SlaError

    try:
        outcome = run_loadtest(sla, host, out, model_repository)
    except (SlaError, LoadtestError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    typer.echo(outcome.render_text())
    if not outcome.passed:
        raise typer.Exit(EXIT_BREACH)


@app.command()
def capacity(
    sla: Path = typer.Option(..., "--sla", help="SLA file (YAML) with budgets and `capacity`"),
    host: str | None = typer.Option(None, "--host", help="gateway URL; default: the SLA's host"),
    out: Path | None = typer.Option(
        None, "--out", help="report folder; default: reports/capacity-<time>"
    ),
    target: list[str] | None = typer.Option(
        None, "--target", help="only this model or 'protocol model' (repeatable)"
    ),
) -> None:
    """Step the users up per target until a budget breaks; report the capacity under SLA."""
    from loadtests.runner import LoadtestError, run_capacity
    from loadtests.sla import SlaError

    try:
        outcome = run_capacity(sla, host, out, target or None)
    except (SlaError, LoadtestError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    typer.echo(outcome.render_text())
    typer.echo(f"\nReports in {outcome.out_dir}")


@app.command()
def verdict(
    sla: Path = typer.Option(..., "--sla", help="SLA file (YAML) with the budgets"),
    stats: Path = typer.Option(
        ..., "--stats", help="a Locust `<prefix>_stats.csv`, e.g. from a master/worker run"
    ),
) -> None:
    """Judge a Locust run made elsewhere (docker-compose master, CI) against the SLA's budgets."""
    from loadtests import report
    from loadtests.sla import SlaError, load_sla
    from loadtests.verdict import breaches, evaluate_all, read_locust_stats

    try:
        parsed = load_sla(sla)
        measured = read_locust_stats(stats)
    except SlaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    except (OSError, KeyError, ValueError) as exc:
        typer.echo(f"error: {stats} is not a readable Locust stats CSV: {exc}", err=True)
        raise typer.Exit(EXIT_UNUSABLE) from exc
    lines = evaluate_all(parsed.targets, measured)
    typer.echo(report.text_table(report.VERDICT_HEADER, report.verdict_rows(lines)))
    failed = breaches(lines)
    for line in failed:
        typer.echo(line.describe())
    typer.echo(f"RESULT: {'FAIL' if failed else 'PASS'}")
    if failed:
        raise typer.Exit(EXIT_BREACH)
