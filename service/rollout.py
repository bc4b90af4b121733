"""Rollout steps as routing changes: hold, canary, shadow, promote, rollback.

Each step reads the model's `routing.json`, computes the next policy and writes it atomically
(`routing.write_policy`); the gateway picks the change up within `MODELGATE_ROUTING_RELOAD_S`
without a restart and without dropping a request (routing only decides which loaded version
answers the next unpinned request). The `modelgate rollout` commands call these.

Without a routing file the newest served version takes all unpinned traffic. So that a new
version does not take over the moment it is loaded, `hold` first fixes the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from service.model_contract import (
    CONFIG_FILE,
    ROUTING_FILE,
    is_model_dir,
    parse_config,
    version_dirs,
)
from service.repository import RepositoryError
from service.repository import served_versions as policy_versions
from service.routing import RoutingFileError, RoutingPolicy, parse_policy, read_policy, write_policy


class RolloutError(Exception):
    """A rollout step that cannot be applied; the message says why and what to do."""


@dataclass(frozen=True)
class RolloutState:
    """A model's versions on disk and its routing as the file says."""

    model: str
    versions: list[str]
    policy: RoutingPolicy | None
    path: Path

    @property
    def effective(self) -> RoutingPolicy:
        """The routing in force: the file's, or the newest version taking everything."""
        if self.policy is not None:
            return self.policy
        return RoutingPolicy(self.model, {self.versions[-1]: 100.0})

    def describe(self) -> str:
        """Human-readable lines for `modelgate rollout status`."""
        effective = self.effective
        weights = ", ".join(
            f"v{v} {w:g} %" for v, w in effective.to_json()["weights"].items() if w > 0
        )
        lines = [
            f"model {self.model}: served versions {', '.join(self.versions)}",
            f"  unpinned traffic: {weights}"
            + ("" if self.policy is not None else f"  (no {ROUTING_FILE}: newest version)"),
            f"  shadow: v{effective.shadow}" if effective.shadow else "  shadow: none",
            "  rollback goes to: " + _rollback_target_text(effective),
        ]
        return "\n".join(lines)


def _rollback_target_text(policy: RoutingPolicy) -> str:
    """What `rollback` would do (the same order as `rollback` itself)."""
    if policy.canaries or policy.shadow:
        return f"v{policy.primary} alone (ends the canary/shadow)"
    if policy.previous:
        return f"v{policy.previous}"
    return "nothing recorded"


def served_versions(model_dir: Path) -> list[str]:
    """Versions a routing file may name: those on disk that the config's `version_policy`
    keeps (what Triton and the gateway serve)."""
    on_disk = version_dirs(model_dir)
    try:
        kept = policy_versions(parse_config(model_dir / CONFIG_FILE), on_disk)
    except (OSError, text_format.ParseError, RepositoryError):
        kept = on_disk  # the gateway reports a broken config itself; do not hide the versions
    return [str(v) for v in kept]


def state(repository: Path, model: str) -> RolloutState:
    """Read a model's versions and routing file; `RolloutError` when either is unusable."""
    model_dir = repository / model
    if not is_model_dir(model_dir):
        known = (
            sorted(p.name for p in repository.iterdir() if is_model_dir(p))
            if (repository.is_dir())
            else []
        )
        raise RolloutError(
            f"no model {model!r} in {repository}"
            + (f"; models: {', '.join(known)}" if known else "")
        )
    versions = served_versions(model_dir)
    if not versions:
        raise RolloutError(f"model {model} has no served version in {model_dir}")
    path = model_dir / ROUTING_FILE
    try:
        policy = read_policy(model, path, versions)
    except RoutingFileError as exc:
        raise RolloutError(f"{exc}; fix or delete the file first") from exc
    return RolloutState(model, versions, policy, path)


def _apply(
    current: RolloutState, weights: dict[str, float], shadow: str | None, previous: str | None
) -> RoutingPolicy:
    data: dict[str, object] = {"weights": weights}
    if shadow is not None:
        data["shadow"] = shadow
    if previous is not None:
        data["previous"] = previous
    try:
        policy = parse_policy(current.model, data, current.versions, str(current.path))
    except RoutingFileError as exc:
        raise RolloutError(str(exc)) from exc
    write_policy(current.path, policy)
    return policy


def _check_version(current: RolloutState, version: str) -> str:
    if version not in current.versions:
        raise RolloutError(
            f"model {current.model} serves no version {version} (served: "
            f"{', '.join(current.versions)}; config.pbtxt's version_policy decides which)"
        )
    return version


def hold(repository: Path, model: str, version: str | None = None) -> RoutingPolicy:
    """All unpinned traffic to `version` (default: the one taking it now), so a version added
    later starts with no traffic until a canary or promote gives it some."""
    current = state(repository, model)
    target = _check_version(current, version or current.effective.primary)
    effective = current.effective
    shadow = effective.shadow if effective.shadow != target else None
    return _apply(current, {target: 100.0}, shadow, effective.previous)


def canary(repository: Path, model: str, version: str, percent: float) -> RoutingPolicy:
    """Send `percent` % of unpinned traffic to `version`, the rest to the current primary."""
    current = state(repository, model)
    version = _check_version(current, version)
    if not 0 <= percent < 100:
        raise RolloutError(
            f"a canary takes 0 to under 100 %, got {percent:g}; use promote for 100 %"
        )
    primary = current.effective.primary
    if version == primary:
        raise RolloutError(
            f"v{version} already takes most unpinned traffic of {model}; name the new version"
        )
    effective = current.effective
    return _apply(
        current,
        {primary: 100.0 - percent, version: float(percent)},
        effective.shadow,
        effective.previous,
    )


def set_shadow(repository: Path, model: str, version: str | None) -> RoutingPolicy:
    """Mirror every unpinned request to `version` (None: stop mirroring)."""
    current = state(repository, model)
    effective = current.effective
    if version is not None:
        _check_version(current, version)
    return _apply(current, dict(effective.weights), version, effective.previous)


def candidate(current: RolloutState, version: str | None) -> str:
    """The version a promote makes primary: the one named, else the only canary, else the
    shadow, else the newest version on disk."""
    if version is not None:
        return _check_version(current, version)
    effective = current.effective
    canaries = effective.canaries
    if len(canaries) > 1:
        raise RolloutError(
            f"model {current.model} has several canaries ({', '.join(canaries)}); "
            "say which to promote with --version"
        )
    if canaries:
        return canaries[0]
    if effective.shadow is not None:
        return effective.shadow
    return current.versions[-1]


def promote(repository: Path, model: str, version: str | None = None) -> RoutingPolicy:
    """The candidate takes 100 % of unpinned traffic; the version it replaces is kept as
    `previous` for rollback; the shadow ends."""
    current = state(repository, model)
    effective = current.effective
    target = candidate(current, version)
    if effective.primary == target and not effective.canaries:
        raise RolloutError(
            f"v{target} already takes all unpinned traffic of {model}; "
            "add a version (modelgate build --new-version) or name one with --version"
        )
    previous = effective.primary if effective.primary != target else effective.previous
    return _apply(current, {target: 100.0}, None, previous)


def rollback(repository: Path, model: str) -> RoutingPolicy:
    """Undo the last step: end a canary or shadow (the primary takes everything), or after a
    promote give all unpinned traffic back to the version it replaced."""
    current = state(repository, model)
    effective = current.effective
    if effective.canaries or effective.shadow is not None:
        return _apply(current, {effective.primary: 100.0}, None, effective.previous)
    if effective.previous is None:
        raise RolloutError(
            f"nothing to roll back for {model}: no canary, no shadow and no promoted version "
            f"recorded in {current.path}"
        )
    return _apply(current, {effective.previous: 100.0}, None, None)


def describe_policy(policy: RoutingPolicy) -> str:
    """One line: `v1 90 %, v2 10 %; shadow v2; previous v1`."""
    parts = [", ".join(f"v{v} {w:g} %" for v, w in policy.to_json()["weights"].items())]
    if policy.shadow:
        parts.append(f"shadow v{policy.shadow}")
    if policy.previous:
        parts.append(f"previous v{policy.previous}")
    return "; ".join(parts)
