"""The SLA file: per-target latency/error/throughput budgets plus the load profile.

An SLA file is YAML (see `loadtests/sla.yaml`). `load_sla` validates it with
pydantic and turns every problem into one `SlaError` whose message names the
file and the exact field, so a typo never surfaces as a stack trace halfway
through a load run.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

Protocol = Literal["rest", "v2_http", "v2_grpc"]
PayloadKind = Literal["image", "text", "sequence"]
# Shifted traffic for watching drift monitoring react (loadtests/drift.yaml): the held-out items
# transformed, or (text) phrases in languages the model does not know.
Shift = Literal["none", "inverted", "noisy", "foreign", "scaled"]
SHIFTS_BY_KIND: dict[str, tuple[str, ...]] = {
    "image": ("inverted", "noisy"),
    "text": ("foreign",),
    "sequence": ("scaled", "noisy"),
}

# The product's models and the kind of payload each takes (docs/architecture.md).
# Any other model name needs an explicit `payload:` in its target.
KNOWN_MODEL_KINDS: dict[str, PayloadKind] = {
    "digits_cnn": "image",
    "vowels_gru": "sequence",
    "langid_transformer": "text",
}


class SlaError(ValueError):
    """An SLA file that cannot be used; the message says which field and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    """Budgets for one target; every field is optional but at least one must be set."""

    p50_ms: PositiveFloat | None = Field(None, description="median latency budget, ms")
    p95_ms: PositiveFloat | None = Field(None, description="95th percentile budget, ms")
    p99_ms: PositiveFloat | None = Field(None, description="99th percentile budget, ms")
    max_error_ratio: float | None = Field(
        None, ge=0.0, le=1.0, description="failed / all requests, 0..1"
    )
    min_throughput_rps: NonNegativeFloat | None = Field(
        None, description="successful requests per second, at least"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Budget:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError(
                "a budget needs at least one of p50_ms, p95_ms, p99_ms, "
                "max_error_ratio, min_throughput_rps"
            )
        ordered = [(k, getattr(self, k)) for k in ("p50_ms", "p95_ms", "p99_ms")]
        given = [(k, v) for k, v in ordered if v is not None]
        for (low_name, low), (high_name, high) in pairwise(given):
            if low > high:
                raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high})")
        return self


class Target(_Strict):
    """One model reached through one protocol: a Locust user class and a verdict block."""

    model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    protocol: Protocol = "rest"
    payload: PayloadKind | None = Field(
        None, description="payload kind; inferred for the product's own models"
    )
    weight: PositiveInt = Field(1, description="share of the users running this target")
    batch: int = Field(1, ge=1, le=256, description="items per request")
    top_k: PositiveInt = 1
    image_format: Literal["png", "jpeg"] = "png"
    encoding: Literal["json", "multipart"] = Field(
        "json", description="REST body: JSON with base64 images, or multipart `files`"
    )
    shift: Shift = Field(
        "none",
        description="send shifted items instead of held-out ones (drift scenario): images "
        "inverted|noisy, texts foreign, sequences scaled|noisy",
    )
    budget: Budget

    @model_validator(mode="after")
    def _resolvable(self) -> Target:
        if self.payload is None and self.model not in KNOWN_MODEL_KINDS:
            raise ValueError(
                f"model {self.model!r} is not one of {sorted(KNOWN_MODEL_KINDS)}: "
                "say which payload it takes with `payload: image|text|sequence`"
            )
        if self.encoding == "multipart" and (self.kind != "image" or self.protocol != "rest"):
            raise ValueError("encoding: multipart is only for image models over protocol: rest")
        if self.shift != "none" and self.shift not in SHIFTS_BY_KIND[self.kind]:
            raise ValueError(
                f"shift {self.shift!r} does not apply to {self.kind} payloads; "
                f"use one of {list(SHIFTS_BY_KIND[self.kind])}"
            )
        return self

    @property
    def kind(self) -> PayloadKind:
        return self.payload or KNOWN_MODEL_KINDS[self.model]

    @property
    def name(self) -> str:
        """The name of this target's requests in Locust's statistics."""
        if self.shift != "none":
            return f"{self.protocol} {self.model} {self.shift}"
        return f"{self.protocol} {self.model}"


class LoadProfile(_Strict):
    """A steady closed-loop load: `users` concurrent users, each sending back to back."""

    users: PositiveInt
    spawn_rate: PositiveFloat = Field(description="users started per second")
    warmup_s: NonNegativeFloat = Field(5.0, description="excluded from the verdict")
    duration_s: PositiveFloat = Field(description="measured window after the warm-up")
    processes: PositiveInt = Field(1, description="Locust worker processes (--processes)")
    think_time_s: NonNegativeFloat = Field(0.0, description="pause between a user's requests")


class CapacityProfile(_Strict):
    """The step load of `modelgate capacity`: one step per user count, each held `step_s`."""

    user_steps: list[PositiveInt] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=1
    )
    step_s: PositiveFloat = 10.0
    settle_s: NonNegativeFloat = Field(3.0, description="start of each step left out")
    spawn_rate: PositiveFloat = 50.0

    @model_validator(mode="after")
    def _steps(self) -> CapacityProfile:
        steps = self.user_steps
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"user_steps must increase strictly, got {steps}")
        if self.settle_s >= self.step_s:
            raise ValueError(f"settle_s ({self.settle_s}) must be below step_s ({self.step_s})")
        return self


class RolloutStep(_Strict):
    """One `modelgate rollout` step applied while the load runs (`modelgate loadtest`)."""

    at_s: NonNegativeFloat = Field(description="seconds after the warm-up ended")
    command: Literal["hold", "canary", "shadow", "promote", "rollback"]
    model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str | None = Field(None, description="version for hold/canary/shadow/promote")
    percent: float | None = Field(None, ge=0, lt=100, description="canary share, percent")

    @model_validator(mode="after")
    def _arguments(self) -> RolloutStep:
        if self.command == "canary" and (self.version is None or self.percent is None):
            raise ValueError("a canary step needs `version` and `percent`")
        if self.command != "canary" and self.percent is not None:
            raise ValueError("`percent` is only for a canary step")
        if self.command == "rollback" and self.version is not None:
            raise ValueError("a rollback step takes no `version` (it returns to the previous one)")
        return self


class Sla(_Strict):
    """A whole SLA file."""

    host: str | None = Field(
        None, pattern=r"^https?://", description="gateway base URL; --host overrides it"
    )
    grpc_url: str | None = Field(None, description="host:port of the OIP gRPC endpoint")
    model_repository: str | None = Field(
        None, description="where preprocessing.json lives, for v2 tensor payloads"
    )
    request_timeout_s: PositiveFloat = 10.0
    cpu_saturation_percent: float = Field(
        90.0, gt=0, le=100, description="load-generator CPU (one core) deemed saturated"
    )
    load: LoadProfile
    capacity: CapacityProfile = Field(default_factory=lambda: CapacityProfile.model_validate({}))
    targets: list[Target] = Field(min_length=1)
    rollout: list[RolloutStep] = Field(
        default_factory=list,
        description="routing changes applied during the measured window (needs model_repository)",
    )

    @model_validator(mode="after")
    def _unique_and_reachable(self) -> Sla:
        names = [t.name for t in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"each model/protocol/shift may appear once; repeated: {duplicates}")
        if any(t.protocol == "v2_grpc" for t in self.targets) and not self.grpc_url:
            raise ValueError("a target uses protocol v2_grpc: set grpc_url (host:port)")
        if self.rollout and not self.model_repository:
            raise ValueError(
                "rollout steps change routing.json in the gateway's repository: "
                "set model_repository"
            )
        times = [step.at_s for step in self.rollout]
        if times != sorted(times):
            raise ValueError(f"rollout steps must be in time order, got at_s {times}")
        if self.rollout and times[-1] >= self.load.duration_s:
            raise ValueError(
                f"the last rollout step (at_s {times[-1]:g}) must come before the measured "
                f"window ends (duration_s {self.load.duration_s:g})"
            )
        return self

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid SLA file ({error.error_count()} problem(s)):"]
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        where = _location(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see loadtests/README.md)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def parse_sla(text: str, source: str = "<sla>") -> Sla:
    """Validate SLA text (YAML); raise `SlaError` with a readable message."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SlaError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SlaError(f"{source}: an SLA file must be a YAML mapping with `load` and `targets`")
    try:
        return Sla.model_validate(data)
    except ValidationError as exc:
        raise SlaError(format_validation_error(source, exc)) from exc


def load_sla(path: str | Path) -> Sla:
    """Read and validate an SLA file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SlaError(f"{file}: cannot read SLA file: {exc.strerror or exc}") from exc
    return parse_sla(text, str(file))
