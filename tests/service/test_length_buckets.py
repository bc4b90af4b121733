"""Which lengths a backend gets: the batch's longest row, or length buckets when set."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from service.backends.embedded import EmbeddedBackend
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.repository import ModelSpec, load_repository_versions
from service.settings import Settings


class RecordingEmbedded(EmbeddedBackend):
    """The real in-process backend, noting the token length of every batch it runs."""

    lengths: list[int]

    async def infer(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self.lengths.append(int(inputs["INPUT_IDS"].shape[1]))
        return await super().infer(spec, inputs)


@pytest.mark.parametrize(("setting", "expected"), [(None, 3), (True, 8), (False, 3)])
def test_a_phrase_reaches_the_model_at_its_own_length_unless_buckets_are_set(
    model_repository: Path, setting: bool | None, expected: int
) -> None:
    async def scenario() -> list[int]:
        chosen = {} if setting is None else {"length_buckets": setting}
        settings = Settings(
            model_repository=model_repository, backend="embedded", watch_interval_s=0, **chosen
        )
        specs = load_repository_versions(model_repository)
        backend = RecordingEmbedded([s for versions in specs.values() for s in versions.values()])
        backend.lengths = []
        dataplane = DataPlane(settings, specs, backend, Metrics(specs))
        await dataplane.start()
        try:
            ids = np.array([[5, 17, 230]], np.int64)
            await dataplane.infer_tensors(
                "langid_transformer", None, {"INPUT_IDS": ids, "ATTENTION_MASK": np.ones_like(ids)}
            )
        finally:
            await dataplane.close()
        return backend.lengths

    assert asyncio.run(scenario()) == [expected]
