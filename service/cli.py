"""The `modelgate` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, help="modelgate: train, export and serve models behind Triton."
)


@app.callback()
def main() -> None:
    """modelgate command line."""


# Load testing against SLAs (loadtests/README.md); heavy imports stay inside the commands.
from service.loadtest import cli as _loadtest_cli  # noqa: E402

app.command("loadtest")(_loadtest_cli.loadtest)
app.command("capacity")(_loadtest_cli.capacity)


if __name__ == "__main__":
    app()
