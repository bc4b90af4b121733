"""`python -m modelgate`: the same command line as the `modelgate` script."""

from modelgate.cli import app

app()
