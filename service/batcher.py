"""A per-model request batcher in front of the inference backend.

Requests (each one or more rows) wait in a bounded queue. A batch leaves when a dispatch slot
is free and either it is full (`max_batch_size` rows) or the oldest request has waited
`max_delay_s`. With a zero delay it sends whatever queued while every slot was busy
("batch when busy"), which on small models beats waiting to fill
(docs/architecture.md, "Batching").

A full queue refuses new requests at once (`Overloaded`, 503 + Retry-After), so memory stays
bounded. Every request has a deadline: past it the caller gets `DeadlineExceeded` (504) and,
if its rows were not sent yet, they leave the queue. Results and errors of a batch go back to
each waiting caller. Times come from a monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.errors import BadInput, DeadlineExceeded, ModelGateError, Overloaded, UpstreamError

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
InferFn = Callable[[Tensors], Awaitable[Mapping[str, np.ndarray]]]
CollateFn = Callable[[Sequence[Mapping[str, np.ndarray]]], Tensors]


class BatchObserver(Protocol):
    """Receives the batcher's measurements (the metrics module implements it)."""

    def queue_depth(self, rows: int) -> None:
        """Rows now waiting."""

    def queue_wait(self, seconds: float) -> None:
        """How long one request waited before its batch was sent."""

    def batch(self, rows: int, seconds: float) -> None:
        """One batch of `rows` rows took `seconds` in the backend."""


class BatchTracer(Protocol):
    """Turns a batch's timestamps into spans of the requests in it (service.tracing)."""

    def batch_sent(self, waits: Sequence[tuple[Any, float]], rows: int, sent_at: float) -> Any:
        """A batch leaves: (request trace, enqueued) of each traced request; returns a handle."""

    def batch_done(self, handle: Any, finished: float, error: BaseException | None) -> None:
        """The batch's backend call ended (with `error` when it failed)."""


@dataclass(eq=False)
class _Entry:
    inputs: Mapping[str, np.ndarray]
    rows: int
    deadline: float
    enqueued: float
    future: asyncio.Future[Tensors] = field(repr=False)
    sent: bool = False
    trace: Any = None  # the request's span when it is traced


def _consume_result(future: asyncio.Future[Tensors]) -> None:
    # A caller that gave up (deadline, disconnect) no longer reads its future: mark the
    # exception as retrieved so asyncio does not log it as lost.
    if not future.cancelled():
        future.exception()


class Batcher:
    """Batches requests for one model; `submit` is the only call on the request path."""

    def __init__(
        self,
        name: str,
        infer: InferFn,
        collate: CollateFn,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_rows: int,
        concurrency: int,
        observer: BatchObserver | None = None,
        tracer: BatchTracer | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_rows < 1 or concurrency < 1 or max_delay_s < 0:
            raise ValueError("batch size, queue size and concurrency must be >= 1, delay >= 0")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_rows = max_queue_rows
        self.concurrency = concurrency
        # The most rows one request may carry: one batch, and never more than the queue holds.
        self._max_rows = min(max_batch_size, max_queue_rows)
        self._max_rows_source = (
            "its max batch size"
            if max_batch_size <= max_queue_rows
            else "the queue size, MODELGATE_MAX_QUEUE_SIZE"
        )
        self._infer = infer
        self._collate = collate
        self._observer = observer
        self._tracer = tracer
        self._queue: deque[_Entry] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        """Rows waiting to be sent."""
        return self._queued_rows

    def start(self) -> None:
        """Start the dispatch loop (needs a running event loop)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.name}"
            )

    async def submit(
        self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float, trace: Any = None
    ) -> Tensors:
        """Queue `rows` rows (tensors with a leading batch dim) and wait for their outputs;
        `trace`: the request's span, when it is traced."""
        if self._closing or self._runner is None:
            raise Overloaded(f"model {self.name} is not accepting requests (shutting down)")
        if rows < 1 or rows > self._max_rows:
            # Never fits, so a 4xx that names the limit (a 503 would invite useless retries).
            raise BadInput(
                f"{rows} rows in one request; model {self.name} takes 1 to {self._max_rows} "
                f"({self._max_rows_source})"
            )
        if self._queued_rows + rows > self.max_queue_rows:
            raise Overloaded(
                f"model {self.name} is overloaded ({self._queued_rows} rows queued), retry later"
            )
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineExceeded("request deadline passed before it could be queued")
        loop = asyncio.get_running_loop()
        entry = _Entry(inputs, rows, deadline, now, loop.create_future(), trace=trace)
        self._queue.append(entry)
        self._queued_rows += rows
        if self.max_delay_s == 0 and not self._slots.locked():
            # Nothing to wait for and a slot is free: send now instead of waking the dispatch
            # loop for it (one event-loop hop less per batch; the loop finds the queue empty).
            self._send(await self._acquire_and_take())
        else:
            self._report_depth()
            self._wakeup.set()
        # One timer that fails the entry's future at the deadline: far cheaper per request than
        # `wait_for(shield(...))`. A dispatched batch skips futures that are already done.
        timer = loop.call_later(deadline - now, self._expire, entry)
        try:
            return await entry.future
        except (DeadlineExceeded, asyncio.CancelledError):
            self._abandon(entry)
            raise
        finally:
            timer.cancel()

    def _expire(self, entry: _Entry) -> None:
        if not entry.future.done():
            entry.future.set_exception(
                DeadlineExceeded(f"no answer from model {self.name} within the request deadline")
            )

    def _abandon(self, entry: _Entry) -> None:
        if not entry.sent:
            with contextlib.suppress(ValueError):
                self._queue.remove(entry)
                self._queued_rows -= entry.rows
                self._report_depth()
        entry.future.add_done_callback(_consume_result)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self._queued_rows)

    async def _run(self) -> None:
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # Waiting for a free slot is what makes batches form while the backend is busy.
            self._send(await self._acquire_and_take())

    async def _acquire_and_take(self) -> list[_Entry]:
        """Take a slot and the next batch (empty: the slot is given back)."""
        await self._slots.acquire()
        try:
            if self.max_delay_s > 0:
                await self._wait_to_fill()
            batch = self._take()
        except BaseException:
            self._slots.release()
            raise
        if not batch:
            self._slots.release()
        return batch

    def _send(self, batch: list[_Entry]) -> None:
        """Dispatch a batch taken with a slot (its task gives the slot back)."""
        if batch:
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _wait_to_fill(self) -> None:
        while self._queue and self._queued_rows < self.max_batch_size and not self._closing:
            remaining = self._queue[0].enqueued + self.max_delay_s - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        rows = 0
        now = time.monotonic()
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            entry = self._queue.popleft()
            self._queued_rows -= entry.rows
            if entry.future.done():  # caller already gone
                continue
            if entry.deadline <= now:  # expired while queued: never send it
                entry.future.set_exception(DeadlineExceeded("request deadline passed in the queue"))
                entry.future.add_done_callback(_consume_result)
                continue
            entry.sent = True
            batch.append(entry)
            rows += entry.rows
        self._report_depth()
        return batch

    async def _dispatch(self, batch: list[_Entry]) -> None:
        tracer = self._tracer
        traced: Any = None  # the tracer's handle while a traced batch is in flight
        failure: BaseException | None = None
        try:
            sent_at = time.monotonic()
            if self._observer is not None:
                for entry in batch:
                    self._observer.queue_wait(sent_at - entry.enqueued)
            rows = sum(e.rows for e in batch)
            if tracer is not None:
                waits = [(e.trace, e.enqueued) for e in batch if e.trace is not None]
                if waits:
                    traced = tracer.batch_sent(waits, rows, sent_at)
            outputs = await self._infer(self._collate([e.inputs for e in batch]))
            finished = time.monotonic()
            if self._observer is not None:
                self._observer.batch(rows, finished - sent_at)
            if traced is not None and tracer is not None:
                handle, traced = traced, None
                tracer.batch_done(handle, finished, None)
            offset = 0
            for entry in batch:
                part = {
                    name: value[offset : offset + entry.rows] for name, value in outputs.items()
                }
                offset += entry.rows
                if not entry.future.done():
                    entry.future.set_result(part)
        except asyncio.CancelledError as exc:
            failure = exc
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(
                        Overloaded("the server shut down while this request ran")
                    )
            raise
        except Exception as exc:
            failure = exc
            error = (
                exc if isinstance(exc, ModelGateError) else UpstreamError(f"batch failed: {exc}")
            )
            if not isinstance(exc, ModelGateError):
                log.exception("batch for model %s failed", self.name)
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
        finally:
            if traced is not None and tracer is not None:  # the call failed or was cancelled
                tracer.batch_done(traced, time.monotonic(), failure)
            self._slots.release()

    async def close(self, grace_s: float) -> None:
        """Stop accepting; let queued and in-flight work finish within `grace_s`; fail the rest."""
        self._closing = True
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + grace_s
        if self._runner is not None:  # the loop drains the queue, then returns
            done, _ = await asyncio.wait([self._runner], timeout=grace_s)
            if not done:
                self._runner.cancel()
                await asyncio.wait([self._runner])
        if self._inflight:
            remaining = max(0.0, give_up_at - loop.time())
            _, still_running = await asyncio.wait([*self._inflight], timeout=remaining)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)
        while self._queue:
            entry = self._queue.popleft()
            if not entry.future.done():
                entry.future.set_exception(
                    Overloaded("the server shut down before this request ran")
                )
        self._queued_rows = 0
        self._report_depth()
