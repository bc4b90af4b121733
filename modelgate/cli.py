"""The `modelgate` command: the training, gateway and load-test commands in one.

Each package owns its commands (training/cli.py, service/cli.py, loadtests/cli.py);
this module only puts them side by side. It sits above the three, so the gateway
never imports training or load-test code, and the serving image, which has no
torch, still starts: every command imports its heavy modules only when it runs.
"""

from __future__ import annotations

import typer

from loadtests import cli as loadtests_cli
from service import cli as service_cli
from service import repository_cli
from training import cli as training_cli

app = typer.Typer(
    no_args_is_help=True,
    help="modelgate: train, export and serve models behind Triton.",
    pretty_exceptions_enable=False,
)
app.add_typer(training_cli.app)
app.add_typer(service_cli.app)
app.add_typer(repository_cli.app)
app.add_typer(loadtests_cli.app)


if __name__ == "__main__":
    app()
