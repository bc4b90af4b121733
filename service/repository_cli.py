"""`modelgate repository index|load|unload`: repository control of a running gateway.

Speaks the OIP repository extension over HTTP with tritonclient, the same calls any Triton
client makes, so the commands work against the gateway and against a Triton alike.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="repository",
    no_args_is_help=True,
    help="Index, load and unload models in a running gateway (OIP repository extension).",
)

UrlOption = Annotated[
    str,
    typer.Option(
        "--url", envvar="MODELGATE_URL", help="Gateway HTTP address (host:port or http://...)."
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="MODELGATE_API_KEY", help="The gateway's API key, when it has one."
    ),
]
DEFAULT_URL = "127.0.0.1:8080"


def _client(url: str) -> Any:
    import tritonclient.http as httpclient  # only when a command runs

    return httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=300.0)


def _headers(api_key: str | None) -> dict[str, str] | None:
    return {"authorization": f"Bearer {api_key}"} if api_key else None


def _run(call: Any) -> Any:
    from tritonclient.utils import InferenceServerException

    try:
        return call()
    except InferenceServerException as exc:
        typer.echo(f"error: {exc.message()}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # gateway not reachable
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def index(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: bool = False) -> None:
    """Every model version in the repository with its state (READY, UNAVAILABLE) and reason."""
    client = _client(url)
    rows = _run(lambda: client.get_model_repository_index(headers=_headers(api_key)))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        reason = f"  {row['reason']}" if row.get("reason") else ""
        typer.echo(f"{row['name']:<20} {row.get('version', ''):>4}  {row['state']}{reason}")


@app.command()
def load(model: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Load (or reload) MODEL from the repository; returns once its versions serve."""
    client = _client(url)
    _run(lambda: client.load_model(model, headers=_headers(api_key)))
    versions = [
        r["version"]
        for r in _run(lambda: client.get_model_repository_index(headers=_headers(api_key)))
        if r["name"] == model and r["state"] == "READY"
    ]
    typer.echo(f"{model}: serving versions {', '.join(versions)}")


@app.command()
def unload(model: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Stop serving MODEL once its queued requests are answered."""
    client = _client(url)
    _run(lambda: client.unload_model(model, headers=_headers(api_key)))
    typer.echo(f"{model}: unloaded")
