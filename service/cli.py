"""The `modelgate` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, help="modelgate: train, export and serve models behind Triton."
)


@app.callback()
def main() -> None:
    """modelgate command line."""
