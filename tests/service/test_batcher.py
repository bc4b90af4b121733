"""The batcher alone: batching while busy, size cap, fill delay, overload, deadlines, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from service.batcher import Batcher
from service.errors import BadInput, DeadlineExceeded, Overloaded

Tensors = dict[str, np.ndarray]


def concat(parts: Sequence[Mapping[str, np.ndarray]]) -> Tensors:
    return {"x": np.concatenate([p["x"] for p in parts])}


class GatedModel:
    """A backend that doubles its input; each batch waits for `gate` so tests control timing."""

    def __init__(self, open_gate: bool = True) -> None:
        self.batches: list[list[float]] = []
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.started = asyncio.Event()
        self.fail_with: Exception | None = None

    async def __call__(self, inputs: Tensors) -> Tensors:
        self.batches.append(inputs["x"].tolist())
        self.started.set()
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return {"y": inputs["x"] * 2}


class Recorder:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.waits: list[float] = []
        self.sizes: list[int] = []

    def queue_depth(self, rows: int) -> None:
        self.depths.append(rows)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        self.sizes.append(rows)


def make(model: GatedModel, **kwargs: object) -> Batcher:
    options: dict[str, object] = {
        "max_batch_size": 8, "max_delay_s": 0.0, "max_queue_rows": 64, "concurrency": 1,
    }  # fmt: skip
    options.update(kwargs)
    batcher = Batcher("m", model, concat, **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def one(value: float) -> Tensors:
    return {"x": np.array([value], np.float32)}


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def submit(batcher: Batcher, value: float, within: float = 5.0) -> float:
    out = await batcher.submit(one(value), 1, deadline(within))
    return float(out["y"][0])


def test_batches_whatever_queued_while_busy_and_answers_each_caller() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        recorder = Recorder()
        batcher = make(model, observer=recorder)
        first = asyncio.create_task(submit(batcher, 1))
        await model.started.wait()  # batch [1] is in flight, the only slot is taken
        rest = [asyncio.create_task(submit(batcher, v)) for v in (2, 3, 4, 5)]
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 4
        model.gate.set()
        assert await first == 2
        assert await asyncio.gather(*rest) == [4, 6, 8, 10]
        assert model.batches == [[1], [2, 3, 4, 5]]
        assert recorder.sizes == [1, 4] and len(recorder.waits) == 5
        assert recorder.depths[-1] == 0
        await batcher.close(1)

    asyncio.run(scenario())


def test_batches_never_exceed_max_batch_size() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        batcher = make(model, max_batch_size=3)
        blocker = asyncio.create_task(submit(batcher, 0))
        await model.started.wait()
        tasks = [asyncio.create_task(submit(batcher, v)) for v in range(1, 8)]
        await asyncio.sleep(0.01)
        model.gate.set()
        assert await asyncio.gather(blocker, *tasks) == [2.0 * v for v in range(8)]
        assert model.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
        await batcher.close(1)

    asyncio.run(scenario())


def test_multi_row_requests_get_their_own_rows_back() -> None:
    async def scenario() -> None:
        model = GatedModel()
        batcher = make(model)
        a, b = await asyncio.gather(
            batcher.submit({"x": np.array([1, 2, 3], np.float32)}, 3, deadline()),
            batcher.submit({"x": np.array([4, 5], np.float32)}, 2, deadline()),
        )
        assert a["y"].tolist() == [2, 4, 6] and b["y"].tolist() == [8, 10]
        with pytest.raises(BadInput):
            await batcher.submit({"x": np.zeros(9, np.float32)}, 9, deadline())
        await batcher.close(1)

    asyncio.run(scenario())


def test_fill_delay_waits_for_more_rows_until_full() -> None:
    async def scenario() -> None:
        model = GatedModel()
        batcher = make(model, max_batch_size=2, max_delay_s=30.0)
        first = asyncio.create_task(submit(batcher, 1))
        await asyncio.sleep(0.02)
        assert model.batches == []  # waiting for a second row (delay is 30 s)
        second = asyncio.create_task(submit(batcher, 2))
        assert await asyncio.gather(first, second) == [2, 4]
        assert model.batches == [[1, 2]]  # sent as soon as the batch was full
        await batcher.close(1)

    asyncio.run(scenario())


def test_full_queue_sheds_load_at_once_with_retry_after() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        batcher = make(model, max_queue_rows=2)
        inflight = asyncio.create_task(submit(batcher, 0))
        await model.started.wait()
        queued = [asyncio.create_task(submit(batcher, v)) for v in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as info:
            await submit(batcher, 3)
        assert info.value.http_status == 503 and info.value.headers["Retry-After"] == "1"
        model.gate.set()
        assert await asyncio.gather(inflight, *queued) == [0, 2, 4]
        assert await submit(batcher, 5) == 10  # serving again once the queue drained
        await batcher.close(1)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("max_batch_size", "max_queue_rows", "limit", "named"),
    [(64, 32, 32, "MODELGATE_MAX_QUEUE_SIZE"), (8, 64, 8, "max batch size")],
)
def test_a_request_that_can_never_fit_gets_400_naming_the_limit(
    max_batch_size: int, max_queue_rows: int, limit: int, named: str
) -> None:
    async def scenario() -> None:
        model = GatedModel()
        batcher = make(model, max_batch_size=max_batch_size, max_queue_rows=max_queue_rows)
        rows = limit + 1
        inputs = {"x": np.zeros(rows, np.float32)}
        with pytest.raises(BadInput) as info:
            await batcher.submit(inputs, rows, deadline())
        assert info.value.http_status == 400
        assert f"takes 1 to {limit}" in info.value.message and named in info.value.message
        assert model.batches == []  # refused before queueing: retrying cannot help
        out = await batcher.submit({"x": np.zeros(limit, np.float32)}, limit, deadline())
        assert out["y"].shape == (limit,)  # exactly the limit still fits
        await batcher.close(1)

    asyncio.run(scenario())


def test_deadline_gives_504_and_drops_unsent_rows() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        batcher = make(model)
        inflight = asyncio.create_task(submit(batcher, 1))
        await model.started.wait()
        with pytest.raises(DeadlineExceeded):
            await submit(batcher, 99, within=0.05)
        assert batcher.queued_rows == 0
        model.gate.set()
        assert await inflight == 2
        assert await submit(batcher, 3) == 6
        assert [99.0] not in model.batches and all(99.0 not in b for b in model.batches)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(one(1), 1, deadline(-1))  # already past
        await batcher.close(1)

    asyncio.run(scenario())


def test_deadline_while_in_flight_still_gives_504() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        batcher = make(model)
        with pytest.raises(DeadlineExceeded):
            await submit(batcher, 1, within=0.05)
        model.gate.set()
        assert await submit(batcher, 2) == 4
        await batcher.close(1)

    asyncio.run(scenario())


def test_cancelled_caller_leaves_the_queue_and_others_still_get_answers() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        batcher = make(model)
        inflight = asyncio.create_task(submit(batcher, 1))
        await model.started.wait()
        gone = asyncio.create_task(submit(batcher, 99))  # queued behind the busy slot
        waiting = asyncio.create_task(submit(batcher, 3))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 2
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.queued_rows == 1
        model.gate.set()
        assert await inflight == 2
        assert await waiting == 6
        assert all(99.0 not in b for b in model.batches)
        await batcher.close(1)

    asyncio.run(scenario())


def test_backend_errors_reach_every_caller_of_the_batch() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        model.fail_with = BadInput("model rejected the batch")
        batcher = make(model)
        blocker = asyncio.create_task(submit(batcher, 0))
        await model.started.wait()
        tasks = [asyncio.create_task(submit(batcher, v)) for v in (1, 2)]
        await asyncio.sleep(0.01)
        model.gate.set()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        assert all(isinstance(r, BadInput) for r in results)
        model.fail_with = RuntimeError("boom")
        with pytest.raises(Exception, match="batch failed"):
            await submit(batcher, 1)
        model.fail_with = None
        assert await submit(batcher, 4) == 8
        await batcher.close(1)

    asyncio.run(scenario())


def test_close_drains_queued_requests_then_refuses_new_ones() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)
        batcher = make(model)
        tasks = [asyncio.create_task(submit(batcher, v)) for v in (1, 2, 3)]
        await model.started.wait()
        closing = asyncio.create_task(batcher.close(5))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="shutting down"):
            await submit(batcher, 4)
        model.gate.set()
        await closing
        assert await asyncio.gather(*tasks) == [2, 4, 6]

    asyncio.run(scenario())


def test_close_gives_up_after_the_grace_period() -> None:
    async def scenario() -> None:
        model = GatedModel(open_gate=False)  # never opens
        batcher = make(model)
        tasks = [asyncio.create_task(submit(batcher, v)) for v in (1, 2)]
        await model.started.wait()
        await batcher.close(0.05)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, Overloaded) for r in results)

    asyncio.run(scenario())
