"""What an inference backend offers the data plane."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.repository import ModelSpec


@dataclass
class Readiness:
    """Whether the backend can serve every model, and why not."""

    ready: bool
    reason: str = ""
    endpoints: dict[str, bool] = field(default_factory=dict)


class InferenceBackend(ABC):
    """Runs one batch of a model; errors are raised as `service.errors.ModelGateError`."""

    #: how many independent servers take batches (scales the batcher's concurrency)
    replicas: int = 1

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections / load sessions."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections / sessions."""

    @abstractmethod
    async def infer(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Run one batch and return every output of the model."""

    @abstractmethod
    async def readiness(self, specs: list[ModelSpec]) -> Readiness:
        """Check that the models can be served now."""

    @abstractmethod
    async def load(self, name: str, specs: Sequence[ModelSpec], keep: Sequence[str]) -> None:
        """Make model `name` serve the versions of `specs` (loading new or changed ones) and
        still the versions `keep`, which the gateway drains before it calls `load` again without
        them. Versions in neither are dropped. Raises `ModelLoadFailed` on failure; what served
        before then still serves."""

    @abstractmethod
    async def unload(self, name: str) -> None:
        """Stop serving every version of model `name`."""
