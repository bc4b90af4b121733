"""Where the embedded backend runs a batch: on the event loop when it is expected to be brief,
in a worker thread when not; the expectation is the version's measured time per row."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from service.backends.embedded import EmbeddedBackend, _Session
from service.repository import ModelSpec, load_repository


class ThreadRecordingSession(_Session):
    """The real session, noting the thread each run happened on."""

    threads: list[str]

    def run(self, names: list[str], feed: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        self.threads.append(threading.current_thread().name)
        return super().run(names, feed, rows)


@pytest.fixture(scope="module")
def langid(model_repository: Path) -> ModelSpec:
    return load_repository(model_repository)["langid_transformer"]


def _phrases(rows: int) -> dict[str, np.ndarray]:
    ids = np.tile(np.array([[5, 17, 230, 41]], np.int64), (rows, 1))
    return {"INPUT_IDS": ids, "ATTENTION_MASK": np.ones_like(ids)}


def _runs(backend: EmbeddedBackend, spec: ModelSpec, batches: list[int]) -> list[str]:
    """Run batches of these sizes in turn; the thread each ran on, and check every answer."""

    async def scenario() -> list[str]:
        await backend.start()
        key = (spec.name, spec.version)
        session = ThreadRecordingSession(backend._sessions[key].session)
        session.threads = []
        backend._sessions[key] = session
        try:
            for rows in batches:
                outputs = await backend.infer(spec, _phrases(rows))
                assert outputs[spec.output].shape == (rows, len(spec.labels))
                assert np.isfinite(outputs[spec.output]).all()
        finally:
            await backend.close()
        return session.threads

    return asyncio.run(scenario())


def test_brief_batches_run_on_the_event_loop(langid: ModelSpec) -> None:
    backend = EmbeddedBackend([langid], inline_rows=16, inline_us=1e9)
    threads = _runs(backend, langid, [1, 4, 16])
    assert threads == [threading.main_thread().name] * 3


def test_batches_expected_to_take_longer_than_the_limit_run_in_a_thread(langid: ModelSpec) -> None:
    # The first batch has nothing measured and runs inline; its time (hundreds of µs for this
    # transformer) is far above a 1 µs limit, so every later one goes to a worker thread.
    backend = EmbeddedBackend([langid], inline_rows=16, inline_us=1.0)
    threads = _runs(backend, langid, [1, 1, 2])
    assert threads[0] == threading.main_thread().name
    assert all(name.startswith("onnxruntime") for name in threads[1:]), threads


def test_more_rows_than_inline_rows_always_run_in_a_thread(langid: ModelSpec) -> None:
    backend = EmbeddedBackend([langid], inline_rows=2, inline_us=1e9)
    threads = _runs(backend, langid, [3, 2])
    assert threads[0].startswith("onnxruntime")
    assert threads[1] == threading.main_thread().name


def test_the_estimate_is_a_moving_average_per_row(langid: ModelSpec) -> None:
    backend = EmbeddedBackend([langid])
    asyncio.run(backend.start())
    session = backend._sessions[langid.name, langid.version]
    assert session.us_per_row is None
    session.run([langid.output], _phrases(4), 4)
    first = session.us_per_row
    assert first is not None and first > 0
    assert backend.inline(session, 1) == (first <= 400.0)
    assert backend.inline(session, 16) == (first * 16 <= 400.0)
    session.run([langid.output], _phrases(4), 4)
    assert session.us_per_row != first  # updated, not replaced: within the two runs' range
    assert not EmbeddedBackend([langid], inline_us=0).inline(session, 1)
