"""Routing of unpinned requests between a model's served versions: canary weights and a shadow.

Per model, an optional `routing.json` beside `config.pbtxt` (name: `model_contract.ROUTING_FILE`):

```json
{"weights": {"1": 90, "2": 10}, "shadow": "2", "previous": "1"}
```

- `weights`: percentages of unpinned traffic per version, summing to 100. A request that names
  a client (the `x-modelgate-client` header, gRPC metadata of the same name) always lands on the
  same version while the weights stay the same; without one each request draws at random.
- `shadow`: a version that also gets a copy of every request; its answers are only compared.
- `previous`: the version `modelgate rollout rollback` returns to (written by `promote`).

No file: every unpinned request goes to the newest served version, as before routing existed.
A request pinned to a version (`/versions/{v}/`, gRPC `model_version`) ignores all of this.

What runs per request is `RoutingPolicy.pick`: a lookup in a table precomputed when the file was
read (no file access, no lock). `RoutingTable.refresh` re-reads files whose mtime, size or inode
changed; the gateway calls it from a background task every `routing_reload_s` seconds. A file
that fails validation is reported and leaves the policy in force untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.model_contract import ROUTING_FILE

log = logging.getLogger(__name__)

# Header (HTTP) and metadata key (gRPC) naming the client, for sticky routing.
CLIENT_HEADER = "x-modelgate-client"
# Weights are percentages; this much rounding slack is accepted in their sum.
WEIGHT_SUM_TOLERANCE = 0.01
_FIELDS = ("weights", "shadow", "previous")
_HASH_SCALE = float(2**64)


class RoutingFileError(ValueError):
    """A routing.json that cannot be used; the message names the file and what is wrong."""


def client_point(model: str, client: str) -> float:
    """A point in [0, 1) fixed by (model, client): the same in every process and on every run.

    blake2b rather than `hash()`, which Python salts per process. The model name is part of the
    key so a client that is in one model's canary slice is not in every model's.
    """
    digest = hashlib.blake2b(f"{model}\0{client}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 62, version)


@dataclass(frozen=True)
class RoutingPolicy:
    """One model's routing, validated; `pick` is the per-request call."""

    model: str
    weights: Mapping[str, float]  # version -> percent, summing to 100
    shadow: str | None = None
    previous: str | None = None
    # The random source of unkeyed requests (tests pass a seeded one).
    draw: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    # Precomputed: versions with a positive weight in ascending order and their cumulative
    # shares. Ascending order keeps stickiness monotone: raising a canary from 10 % to 20 %
    # moves clients only towards the canary, never away from it.
    _versions: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _only: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        live = sorted((v for v, w in self.weights.items() if w > 0), key=_version_key)
        total = sum(self.weights[v] for v in live)
        running, cumulative = 0.0, []
        for version in live:
            running += self.weights[version] / total
            cumulative.append(running)
        if cumulative:
            cumulative[-1] = 1.0  # no draw may fall past the last version through rounding
        object.__setattr__(self, "_versions", tuple(live))
        object.__setattr__(self, "_cumulative", tuple(cumulative))
        object.__setattr__(self, "_only", live[0] if len(live) == 1 else None)

    def pick(self, client: str | None = None) -> str:
        """The version for one unpinned request (sticky when `client` is given)."""
        if self._only is not None:
            return self._only
        point = self.draw() if client is None else client_point(self.model, client)
        return self._versions[bisect_right(self._cumulative, point)]

    @property
    def primary(self) -> str:
        """The version with the largest share (the newest of equals): what a rollout replaces."""
        return max(self._versions, key=lambda v: (self.weights[v], _version_key(v)))

    @property
    def canaries(self) -> list[str]:
        """Versions with a positive share other than the primary, ascending."""
        return [v for v in self._versions if v != self.primary]

    def shadow_for(self, version: str) -> str | None:
        """The shadow version for a request answered by `version` (none when they are equal)."""
        return None if self.shadow == version else self.shadow

    def to_json(self) -> dict[str, Any]:
        """The file's content for this policy."""
        data: dict[str, Any] = {
            "weights": {
                v: _plain_number(self.weights[v]) for v in sorted(self.weights, key=_version_key)
            }
        }
        if self.shadow is not None:
            data["shadow"] = self.shadow
        if self.previous is not None:
            data["previous"] = self.previous
        return data


def _plain_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def parse_policy(
    model: str, data: Any, versions: Collection[str], source: str = ROUTING_FILE
) -> RoutingPolicy:
    """Validate routing data against the model's served `versions`; `RoutingFileError` if bad."""
    known = ", ".join(sorted(versions, key=_version_key)) or "none"

    def fail(message: str) -> RoutingFileError:
        return RoutingFileError(f"{source}: {message}")

    def check_version(value: Any, what: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise fail(f"{what} must be a version number as a string, got {value!r}")
        if value not in versions:
            raise fail(f"{what} names version {value!r}, which is not served (served: {known})")
        return value

    if not isinstance(data, dict):
        raise fail('must be a JSON object such as {"weights": {"1": 90, "2": 10}}')
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise fail(f"unknown field(s) {unknown}; the fields are {list(_FIELDS)}")
    raw_weights = data.get("weights")
    if not isinstance(raw_weights, dict) or not raw_weights:
        raise fail('needs "weights": an object of version -> percent, e.g. {"1": 90, "2": 10}')
    weights: dict[str, float] = {}
    for key, value in raw_weights.items():
        version = check_version(key, "weights")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise fail(f"the weight of version {version} must be a number, got {value!r}")
        if value < 0:
            raise fail(f"the weight of version {version} must not be negative, got {value}")
        weights[version] = float(value)
    total = sum(weights.values())
    if abs(total - 100.0) > WEIGHT_SUM_TOLERANCE:
        raise fail(
            f"weights are percentages and must sum to 100; they sum to {total:g} "
            f"({', '.join(f'{v}: {w:g}' for v, w in weights.items())})"
        )
    shadow = data.get("shadow")
    if shadow is not None:
        shadow = check_version(shadow, "shadow")
        if weights.get(shadow, 0.0) >= 100.0:
            raise fail(f"shadow version {shadow} already takes all traffic; shadow another one")
    previous = data.get("previous")
    if previous is not None:
        previous = check_version(previous, "previous")
    return RoutingPolicy(model, weights, shadow, previous)


def read_policy(model: str, path: Path, versions: Collection[str]) -> RoutingPolicy | None:
    """The policy in `path`, or None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RoutingFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RoutingFileError(f"{path}: not valid JSON: {exc}") from exc
    return parse_policy(model, data, versions, str(path))


def write_policy(path: Path, policy: RoutingPolicy | None) -> None:
    """Replace `path` atomically (a reader sees the old file or the new one, never half);
    None removes it (back to "newest version takes everything")."""
    if policy is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(policy.to_json(), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- the gateway's view: one policy per model, refreshed in the background -------------------


def newest(versions: Collection[str]) -> str:
    """The newest of `versions` (numeric order): unpinned traffic's version without routing."""
    return max(versions, key=_version_key)


class RoutingObserver:
    """Receives routing changes (the metrics implement it; the default does nothing)."""

    def applied(self, model: str, weights: Mapping[str, float], shadow: str | None) -> None:
        """Routing now in force for `model`: percent per served version, and the shadow."""

    def rejected(self, model: str, error: str) -> None:
        """A changed routing file was refused; the policy in force stays."""


@dataclass
class _Watched:
    path: Path
    versions: frozenset[str]
    signature: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) last read
    error: str | None = None


class RoutingTable:
    """The routing policy of every model, kept in step with the files on disk.

    `policy(model)` is a dict lookup; `refresh()` does the file work and is called every
    `reload_s` seconds by `watch()`, never on the request path.
    """

    def __init__(
        self,
        repository: Path,
        versions: Mapping[str, Collection[str]],
        observer: RoutingObserver | None = None,
    ) -> None:
        self._observer = observer or RoutingObserver()
        self._repository = repository
        self._watched = {
            model: _Watched(repository / model / ROUTING_FILE, frozenset(served))
            for model, served in versions.items()
        }
        self.policies: dict[str, RoutingPolicy] = {}
        for model in self._watched:
            self._report(model)
        self.refresh()

    def policy(self, model: str) -> RoutingPolicy | None:
        """The policy in force for `model` (None: newest version takes all unpinned traffic)."""
        return self.policies.get(model)

    def errors(self) -> dict[str, str]:
        """Models whose routing file was refused last time it changed, with the reason."""
        return {m: w.error for m, w in self._watched.items() if w.error is not None}

    def sync(self, versions: Mapping[str, Collection[str]]) -> None:
        """Follow the served versions (a version or model loaded or unloaded live): a model
        whose set changed has its routing file validated again against the new set."""
        for model, served in versions.items():
            served_set = frozenset(served)
            watched = self._watched.get(model)
            if watched is None:
                watched = self._watched[model] = _Watched(
                    self._repository / model / ROUTING_FILE, served_set
                )
            elif watched.versions == served_set:
                continue
            watched.versions, watched.signature = served_set, None
            if not self.refresh([model]):
                self._report(model)

    def refresh(self, models: Iterable[str] | None = None) -> list[str]:
        """Re-read the routing files that changed on disk; returns the models whose policy
        changed. A file that fails validation is logged and leaves the old policy in force."""
        changed = []
        for model in self._watched if models is None else models:
            watched = self._watched[model]
            try:
                stat = watched.path.stat()
                signature: tuple[int, int, int] | None = (
                    stat.st_mtime_ns,
                    stat.st_size,
                    stat.st_ino,
                )
            except FileNotFoundError:
                signature = None
            if signature == watched.signature and (
                signature is not None or model not in self.policies
            ):
                continue  # unchanged (or still absent)
            try:
                policy = read_policy(model, watched.path, watched.versions)
            except RoutingFileError as exc:
                watched.signature = signature
                if watched.error != str(exc):
                    log.error("routing of %s unchanged: %s", model, exc)
                watched.error = str(exc)
                self._observer.rejected(model, str(exc))
                continue
            watched.signature, watched.error = signature, None
            if policy == self.policies.get(model):
                continue
            if policy is None:
                self.policies.pop(model, None)
            else:
                self.policies[model] = policy
            log.info("routing of %s: %s", model, policy.to_json() if policy else "newest version")
            self._report(model)
            changed.append(model)
        return changed

    def _report(self, model: str) -> None:
        served = self._watched[model].versions
        policy = self.policies.get(model)
        weights = {v: 0.0 for v in served}
        if policy is not None:
            weights.update(policy.weights)
        elif served:
            weights[newest(served)] = 100.0
        self._observer.applied(model, weights, policy.shadow if policy else None)

    async def watch(
        self, every_s: float, served: Callable[[], Mapping[str, Collection[str]]] | None = None
    ) -> None:
        """Refresh every `every_s` seconds until cancelled (a background task of the gateway);
        `served` gives the versions served now, followed with `sync`."""
        while True:
            await asyncio.sleep(every_s)
            try:
                if served is not None:
                    self.sync(served())
                self.refresh()
            except Exception:  # never let the watch die: the next round tries again
                log.exception("routing refresh failed")


class RoutingMetrics(RoutingObserver):
    """`modelgate_routing_weight{model, version}` (percent of unpinned traffic, as in force) and
    `modelgate_routing_rejected_total{model}` (routing files refused)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.weight = Gauge(
            "modelgate_routing_weight",
            "Percent of the model's unpinned requests routed to the version (routing in force).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.shadowed = Gauge(
            "modelgate_routing_shadow",
            "1 for the version that receives shadow copies of the model's requests, else 0.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.rejected_files = Counter(
            "modelgate_routing_rejected",
            "Changed routing files refused (the routing in force stayed); see the gateway log.",
            ["model"],
            registry=registry,
        )
        self._reported: dict[str, set[str]] = {}

    def applied(self, model: str, weights: Mapping[str, float], shadow: str | None) -> None:
        for gone in self._reported.get(model, set()) - set(weights):  # a version unloaded
            self.weight.remove(model, gone)
            self.shadowed.remove(model, gone)
        self._reported[model] = set(weights)
        for version, percent in weights.items():
            self.weight.labels(model=model, version=version).set(percent)
            self.shadowed.labels(model=model, version=version).set(1 if version == shadow else 0)

    def rejected(self, model: str, error: str) -> None:
        self.rejected_files.labels(model=model).inc()
