"""Embedded backend: in-process ONNX Runtime over the same repository (no Triton needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from service.backends.base import InferenceBackend, Readiness
from service.errors import BadInput, ModelLoadFailed, UpstreamError
from service.repository import ModelSpec

# Weight of the newest run in a session's moving average of microseconds per row.
_COST_SMOOTHING = 0.1

# With a core to spare, a batch expected to take longer than this (µs) leaves the event loop for
# a thread on that core. It lies between digits' 16-row batch (326 µs, nothing gained by the
# thread) and language id's 4-row batch (551 µs, a gain); service/README.md.
INLINE_US = 400.0


class _Session:
    """An ONNX Runtime session and what one row costs it (moving average over its runs; None
    before the first)."""

    __slots__ = ("session", "us_per_row")

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.us_per_row: float | None = None

    def run(self, names: list[str], feed: Mapping[str, np.ndarray], rows: int) -> list[np.ndarray]:
        started = time.perf_counter()
        values: list[np.ndarray] = self.session.run(names, feed)
        per_row = (time.perf_counter() - started) * 1e6 / max(1, rows)
        estimate = self.us_per_row
        self.us_per_row = (
            per_row if estimate is None else estimate + _COST_SMOOTHING * (per_row - estimate)
        )
        return values


class EmbeddedBackend(InferenceBackend):
    """One ONNX Runtime session per model version. A batch that runs briefly runs on the event
    loop; a longer one runs in a small thread pool, so the loop serves other requests (on
    another core) meanwhile."""

    def __init__(
        self,
        specs: list[ModelSpec],
        threads: int = 1,
        inline_rows: int = 16,
        inline_us: float = INLINE_US,
    ) -> None:
        self._specs = specs
        self._threads = threads
        self._inline_rows = inline_rows
        self._inline_us = inline_us
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(specs)), thread_name_prefix="onnxruntime"
        )

    def _session(self, spec: ModelSpec) -> _Session:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        return _Session(
            ort.InferenceSession(str(spec.onnx_path), options, providers=["CPUExecutionProvider"])
        )

    def inline(self, session: _Session, rows: int) -> bool:
        """Whether a batch of `rows` runs on the event loop: few enough rows, and expected to
        take no longer than `inline_us` (a first batch, with nothing measured yet, does)."""
        if rows > self._inline_rows or self._inline_us <= 0:
            return False
        per_row = session.us_per_row
        return per_row is None or per_row * rows <= self._inline_us

    async def start(self) -> None:
        for spec in self._specs:
            try:
                self._sessions[spec.name, spec.version] = self._session(spec)
            except Exception as exc:  # reported through readiness, as Triton reports a model
                self._errors[spec.name, spec.version] = f"{type(exc).__name__}: {exc}"

    async def load(self, name: str, specs: Sequence[ModelSpec], keep: Sequence[str]) -> None:
        sessions = {}
        for spec in specs:
            try:
                sessions[spec.version] = await asyncio.to_thread(self._session, spec)
            except Exception as exc:
                raise ModelLoadFailed(
                    f"model {name} version {spec.version}: {type(exc).__name__}: {exc}"
                ) from exc
        wanted = {spec.version for spec in specs} | set(keep)
        for key in [k for k in self._sessions if k[0] == name and k[1] not in wanted]:
            del self._sessions[key]
        for version, session in sessions.items():
            self._sessions[name, version] = session
            self._errors.pop((name, version), None)

    async def unload(self, name: str) -> None:
        for key in [k for k in self._sessions if k[0] == name]:
            del self._sessions[key]

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._sessions.clear()

    async def infer(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        key = (spec.name, spec.version)
        session = self._sessions.get(key)
        if session is None:
            raise UpstreamError(
                f"model {spec.name} version {spec.version} is not loaded: "
                f"{self._errors.get(key, 'unknown')}"
            )
        names = [o.name for o in spec.outputs]
        feed = {t.name: inputs[t.name] for t in spec.inputs}
        rows = next(iter(feed.values())).shape[0] if feed else 0
        try:
            if self.inline(session, rows):
                # A short run costs less than the hop to a worker thread and back would cost the
                # event loop.
                values = session.run(names, feed, rows)
            else:
                loop = asyncio.get_running_loop()
                values = await loop.run_in_executor(self._pool, session.run, names, feed, rows)
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ValueError) as exc:
            raise BadInput(f"model {spec.name} rejected the input: {exc}") from exc
        except Exception as exc:
            raise UpstreamError(f"model {spec.name} failed: {exc}") from exc
        return dict(zip(names, values, strict=True))

    async def readiness(self, specs: list[ModelSpec]) -> Readiness:
        missing = [
            f"{s.name} v{s.version}: {self._errors.get((s.name, s.version), 'not loaded')}"
            for s in specs
            if (s.name, s.version) not in self._sessions
        ]
        if missing:
            return Readiness(False, "; ".join(missing), {"embedded": False})
        return Readiness(True, "", {"embedded": True})
