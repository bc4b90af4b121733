"""`modelgate rollout ...`: each rollout step is one routing change, applied live.

The command writes the model's `routing.json` atomically (service/rollout.py); every gateway
serving that repository re-reads it within `MODELGATE_ROUTING_RELOAD_S`. With `--gateway URL`
the command also waits until that gateway's `/metrics` reports the new weights in force
(`modelgate_routing_weight`), so a script knows the step has taken effect.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client.parser import text_string_to_metric_families

from service import rollout
from service.routing import RoutingPolicy

app = typer.Typer(
    no_args_is_help=True,
    help="Roll a new model version out: hold, canary, shadow, promote, rollback, status.",
    pretty_exceptions_enable=False,
)

RepositoryOption = Annotated[
    Path, typer.Option("--repository", "-r", help="Model repository the gateway serves.")
]
GatewayOption = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        help="Gateway base URL (http://host:port): wait until it reports the change in force.",
    ),
]
WaitOption = Annotated[
    float, typer.Option("--wait-s", help="How long to wait for --gateway, in seconds.")
]
ModelArgument = Annotated[str, typer.Argument(help="Model name (its directory in the repository).")]
DEFAULT_REPOSITORY = Path("model_repository")


def gateway_routing(url: str, model: str) -> tuple[dict[str, float], str | None]:
    """Percent per version that the gateway at `url` routes now, and its shadow version (from
    its /metrics: `modelgate_routing_weight`, `modelgate_routing_shadow`)."""
    request = urllib.request.Request(f"{url.rstrip('/')}/metrics")
    key = os.environ.get("MODELGATE_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=5.0) as response:
        text = response.read().decode()
    weights: dict[str, float] = {}
    shadow = None
    for family in text_string_to_metric_families(text):
        if family.name not in ("modelgate_routing_weight", "modelgate_routing_shadow"):
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if family.name == "modelgate_routing_weight":
                weights[sample.labels["version"]] = sample.value
            elif sample.value == 1:
                shadow = sample.labels["version"]
    return weights, shadow


def wait_until_applied(url: str, policy: RoutingPolicy, timeout_s: float) -> float:
    """Poll the gateway until its weights and shadow equal the policy's; seconds it took."""
    started = time.monotonic()
    want = ({v: w for v, w in policy.weights.items() if w > 0}, policy.shadow)
    seen: tuple[dict[str, float], str | None] = ({}, None)
    while True:
        try:
            weights, shadow = gateway_routing(url, policy.model)
            seen = ({v: w for v, w in weights.items() if w > 0}, shadow)
        except (urllib.error.URLError, OSError) as exc:
            seen = ({}, None)
            last_error = str(exc)
        else:
            last_error = ""
        if seen == want:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            detail = last_error or f"it routes {seen[0] or 'nothing'}, shadow {seen[1]}"
            raise rollout.RolloutError(
                f"written, but the gateway at {url} did not apply it within {timeout_s:g} s "
                f"({detail}); its log says why (a routing file it refused is logged and counted "
                "in modelgate_routing_rejected_total)"
            )
        time.sleep(0.2)


def _apply(
    step: Callable[[], RoutingPolicy], what: str, gateway: str | None, wait_s: float
) -> None:
    """Run one rollout step (it writes routing.json), report it, and with `gateway` wait until
    that gateway has it in force; a refused step exits 1 with the reason."""
    try:
        policy = step()
        typer.echo(f"{what}: {policy.model} routes {rollout.describe_policy(policy)}")
        if gateway is not None:
            took = wait_until_applied(gateway, policy, wait_s)
            typer.echo(f"in force at {gateway} after {took:.1f} s")
    except rollout.RolloutError as exc:
        raise _fail(exc) from None


def _fail(exc: rollout.RolloutError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def status(
    model: ModelArgument,
    repository: RepositoryOption = DEFAULT_REPOSITORY,
    gateway: GatewayOption = None,
) -> None:
    """Versions on disk, the routing file's split, shadow and rollback target."""
    try:
        current = rollout.state(repository, model)
    except rollout.RolloutError as exc:
        raise _fail(exc) from None
    typer.echo(current.describe())
    if gateway is not None:
        try:
            weights, shadow = gateway_routing(gateway, model)
        except (urllib.error.URLError, OSError) as exc:
            typer.echo(f"  gateway {gateway}: not reachable ({exc})")
        else:
            shown = ", ".join(f"v{v} {w:g} %" for v, w in sorted(weights.items()) if w > 0)
            shown = (shown or "nothing reported") + (f"; shadow v{shadow}" if shadow else "")
            typer.echo(f"  gateway {gateway} routes: {shown}")


@app.command()
def hold(
    model: ModelArgument,
    version: Annotated[
        str | None, typer.Option(help="Version to keep (default: the one serving now).")
    ] = None,
    repository: RepositoryOption = DEFAULT_REPOSITORY,
    gateway: GatewayOption = None,
    wait_s: WaitOption = 15.0,
) -> None:
    """Keep all unpinned traffic on the current version (run before adding a new one)."""
    _apply(lambda: rollout.hold(repository, model, version), "held", gateway, wait_s)


@app.command()
def canary(
    model: ModelArgument,
    version: Annotated[str, typer.Option(help="The new version.")],
    percent: Annotated[float, typer.Option(help="Share of unpinned traffic, 0 to under 100.")],
    repository: RepositoryOption = DEFAULT_REPOSITORY,
    gateway: GatewayOption = None,
    wait_s: WaitOption = 15.0,
) -> None:
    """Send PERCENT % of unpinned traffic to VERSION (sticky per x-modelgate-client)."""
    _apply(lambda: rollout.canary(repository, model, version, percent), "canary", gateway, wait_s)


@app.command()
def shadow(
    model: ModelArgument,
    version: Annotated[
        str | None, typer.Option(help="Version that gets a copy of every request.")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop shadowing.")] = False,
    repository: RepositoryOption = DEFAULT_REPOSITORY,
    gateway: GatewayOption = None,
    wait_s: WaitOption = 15.0,
) -> None:
    """Mirror requests to VERSION and record agreement (its answers are never returned)."""
    if (version is None) == (not off):
        typer.echo("error: give --version V or --off", err=True)
        raise typer.Exit(2)
    target = None if off else version
    _apply(lambda: rollout.set_shadow(repository, model, target), "shadow", gateway, wait_s)


@app.command()
def promote(
    model: ModelArgument,
    version: Annotated[
        str | None,
        typer.Option(
            help="Version to promote (default: the canary, else the shadow, else newest)."
        ),
    ] = None,
    repository: RepositoryOption = DEFAULT_REPOSITORY,
    gateway: GatewayOption = None,
    wait_s: WaitOption = 15.0,
) -> None:
    """The candidate takes 100 % of unpinned traffic; the one it replaces is kept for rollback."""
    _apply(lambda: rollout.promote(repository, model, version), "promoted", gateway, wait_s)


@app.command()
def rollback(
    model: ModelArgument,
    repository: RepositoryOption = DEFAULT_REPOSITORY,
    gateway: GatewayOption = None,
    wait_s: WaitOption = 15.0,
) -> None:
    """Back to the previous version (after a promote), or end a canary/shadow."""
    _apply(lambda: rollout.rollback(repository, model), "rolled back", gateway, wait_s)
