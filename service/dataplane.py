"""The transport-neutral core: every protocol (REST, OIP HTTP, OIP gRPC) calls this and only this.

- `predict`: raw payloads (image bytes, strings, sequences) -> decode -> preprocess -> batch ->
  infer -> softmax/top-k/labels.
- `infer_tensors`: the model's own tensors -> validate against config.pbtxt -> batch -> infer.
- `track`: wraps one request of any transport to record latency, status class and error reason.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from service import drain, preprocess
from service.backends.base import InferenceBackend, Readiness
from service.batcher import Batcher
from service.errors import BadInput, ModelGateError, ModelNotFound
from service.metrics import UNKNOWN_MODEL, Metrics
from service.monitoring.drift import DriftMonitor, DriftWindow
from service.postprocess import top_k as top_k_predictions
from service.repository import ModelSpec
from service.settings import Settings
from service.tensors import Collator

log = logging.getLogger(__name__)

# Request ids: a random per-process prefix and a counter. As unique as uuid4 across processes
# and replicas for any practical purpose, without a call for 16 random bytes per request.
_id_prefix = uuid.uuid4().hex[:16]
_id_counter = itertools.count()


def _new_id_prefix() -> None:  # a forked worker must not repeat its parent's ids
    global _id_prefix
    _id_prefix = uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    """A fresh 32-hex-digit request id."""
    return f"{_id_prefix}{next(_id_counter):016x}"


# Payloads at least this large are decoded in a worker thread so the event loop keeps serving.
THREAD_DECODE_BYTES = 256 * 1024


@dataclass
class PredictResult:
    """Answer of `predict`: one prediction per payload, in order."""

    model: str
    version: str
    request_id: str
    predictions: list[dict[str, Any]]
    # the model's output rows ([inputs, classes]), for callers that want more than the top-k
    logits: np.ndarray | None = None


@dataclass
class RequestScope:
    """Per-request facts collected by `DataPlane.track` (transports may fill in `model`)."""

    model: str
    endpoint: str
    protocol: str
    request_id: str
    started: float
    deadline: float
    status: int = 200
    extra: dict[str, Any] = field(default_factory=dict)


class _Tracked:
    """`DataPlane.track` as a plain class: a generator-based context manager costs noticeably
    more on a path that runs for every request."""

    __slots__ = ("_dataplane", "_scope")

    def __init__(
        self,
        dataplane: DataPlane,
        model: str,
        endpoint: str,
        protocol: str,
        request_id: str | None,
    ) -> None:
        started = time.monotonic()
        self._dataplane = dataplane
        self._scope = RequestScope(
            model=model,
            endpoint=endpoint,
            protocol=protocol,
            request_id=request_id or new_request_id(),
            started=started,
            deadline=started + dataplane.settings.request_timeout_s,
        )

    async def __aenter__(self) -> RequestScope:
        self._dataplane.metrics.inflight.inc()
        return self._scope

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        scope = self._scope
        reason: str | None = None
        if isinstance(exc, ModelGateError):
            scope.status, reason = exc.http_status, exc.reason
        elif isinstance(exc, asyncio.CancelledError):  # client went away
            scope.status, reason = 499, None
        elif isinstance(exc, Exception):
            scope.status, reason = 500, "internal"
            log.error("request %s failed", scope.request_id, exc_info=exc)
        dataplane = self._dataplane
        metrics = dataplane.metrics
        metrics.inflight.dec()
        label = scope.model if scope.model in dataplane._models else UNKNOWN_MODEL
        metrics.observe_request(
            label,
            scope.endpoint,
            scope.protocol,
            scope.status,
            time.monotonic() - scope.started,
            reason,
        )


class _Model:
    """Runtime state of one model: spec, preprocessor, collator, batcher."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        backend: InferenceBackend,
        metrics: Metrics,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.spec = spec
        self.preprocessor = preprocess.for_model(spec, max_image_pixels=settings.max_image_pixels)
        self.drift: DriftWindow | None = None
        if drift is not None:
            self.drift = drift.window_for(spec, getattr(self.preprocessor, "tokenizer", None))
        self.collator = Collator(spec)
        max_batch = min(settings.max_batch_size or spec.max_batch_size, spec.max_batch_size)
        delay_s = (
            settings.max_batch_delay_ms / 1000.0
            if settings.max_batch_delay_ms is not None
            else spec.max_queue_delay_us / 1e6
        )

        async def infer(inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
            return await backend.infer(spec, inputs)

        self.batcher = Batcher(
            spec.name,
            infer,
            self.collator,
            max_batch_size=max_batch,
            max_delay_s=delay_s,
            max_queue_rows=settings.max_queue_size,
            concurrency=settings.batch_concurrency * backend.replicas,
            observer=metrics.observer(spec.name),
        )


class DataPlane:
    """One instance per process; owns the backend and a batcher per model."""

    def __init__(
        self,
        settings: Settings,
        specs: Mapping[str, ModelSpec],
        backend: InferenceBackend,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics
        self.drift: DriftMonitor | None = None
        if settings.drift_monitoring:
            self.drift = DriftMonitor(
                metrics.registry,
                settings.drift_window_items,
                settings.drift_min_items,
                settings.drift_refresh_s,
            )
            metrics.before_render.append(self.drift.refresh)
        self._models = {
            name: _Model(spec, settings, backend, metrics, self.drift)
            for name, spec in specs.items()
        }

    async def start(self) -> None:
        """Connect the backend and start the batchers."""
        await self.backend.start()
        for model in self._models.values():
            model.batcher.start()
        if self.drift is not None:
            self.drift.start()

    async def close(self) -> None:
        """Finish queued work (bounded by `shutdown_grace_s`), then release the backend."""
        await asyncio.gather(
            *(m.batcher.close(self.settings.shutdown_grace_s) for m in self._models.values())
        )
        if self.drift is not None:
            await self.drift.close()
        await self.backend.close()

    # -- metadata -----------------------------------------------------------------------------

    def models(self) -> list[ModelSpec]:
        """Every model of the repository."""
        return [m.spec for m in self._models.values()]

    def model(self, name: str, version: str | None = None) -> ModelSpec:
        """The model `name` (optionally a given version); `ModelNotFound` otherwise."""
        return self._get(name, version).spec

    def _get(self, name: str, version: str | None = None) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"unknown model {name!r}; known models: {', '.join(sorted(self._models))}"
            )
        if version not in (None, "", model.spec.version):
            raise ModelNotFound(
                f"model {name!r} has no served version {version!r} (serving {model.spec.version})"
            )
        return model

    async def ready(self) -> Readiness:
        """Whether the backend can serve every model now (never while the process drains)."""
        if drain.draining():
            return Readiness(False, "shutting down: draining connections")
        return await self.backend.readiness(self.models())

    async def model_ready(self, spec: ModelSpec) -> Readiness:
        """Whether the backend can serve this one model now."""
        return await self.backend.readiness([spec])

    # -- request accounting -------------------------------------------------------------------

    def track(
        self, model: str, endpoint: str, protocol: str, request_id: str | None = None
    ) -> AbstractAsyncContextManager[RequestScope]:
        """Time one request of any transport and count it by status class and error reason."""
        return _Tracked(self, model, endpoint, protocol, request_id)

    def _stage(self, model: str, stage: str, started: float) -> float:
        now = time.monotonic()
        self.metrics.observe_stage(model, stage, now - started)
        return now

    # -- inference ----------------------------------------------------------------------------

    def payloads_from_json(self, name: str, value: Any) -> list[Any]:
        """Split a JSON `inputs` value into payloads the model's preprocessor takes."""
        return self._get(name).preprocessor.from_json(value)

    async def predict(
        self,
        name: str,
        payloads: Sequence[Any],
        top_k: int | None = None,
        protocol: str = "rest",
        *,
        scope: RequestScope | None = None,
        version: str | None = None,
    ) -> PredictResult:
        """Raw payloads in, top-k labelled predictions out (one per payload).

        A transport that already opened `track` (to count its own parsing errors too) passes its
        `scope`; otherwise the call is tracked here under `protocol`.
        """
        if scope is None:
            async with self.track(name, "predict", protocol) as own:
                return await self._predict(name, payloads, top_k, own, version)
        return await self._predict(name, payloads, top_k, scope, version)

    async def _predict(
        self,
        name: str,
        payloads: Sequence[Any],
        top_k: int | None,
        scope: RequestScope,
        version: str | None,
    ) -> PredictResult:
        model = self._get(name, version)
        spec = model.spec
        k = top_k if top_k is not None else self.settings.default_top_k
        if k < 1:
            raise BadInput("top_k must be at least 1")
        logits = await self._infer_payloads(model, payloads, scope.deadline)
        t0 = time.monotonic()
        predictions = top_k_predictions(logits, spec.labels, k)
        self._stage(spec.name, "postprocess", t0)
        return PredictResult(
            model=spec.name,
            version=spec.version,
            request_id=scope.request_id,
            predictions=predictions,
            logits=logits,
        )

    async def infer_payloads(
        self, name: str, version: str | None, payloads: Sequence[Any], scope: RequestScope
    ) -> np.ndarray:
        """Raw payloads in, the model's output rows out ([payloads, classes]); for protocols that
        return tensors and build their own answer from them (OIP)."""
        return await self._infer_payloads(self._get(name, version), payloads, scope.deadline)

    async def _infer_payloads(
        self, model: _Model, payloads: Sequence[Any], deadline: float
    ) -> np.ndarray:
        spec = model.spec
        if not payloads:
            raise BadInput("no inputs given")
        if len(payloads) > self.settings.max_items_per_request:
            raise BadInput(
                f"{len(payloads)} inputs in one request; the limit is "
                f"{self.settings.max_items_per_request}"
            )
        preprocessor = model.preprocessor
        drift = model.drift
        observed: list[list[float] | None] = []
        items = []
        for payload in payloads:
            t0 = time.monotonic()
            if isinstance(payload, bytes | bytearray) and len(payload) >= THREAD_DECODE_BYTES:
                decoded = await asyncio.to_thread(preprocessor.decode, payload)
            else:
                decoded = preprocessor.decode(payload)
            t1 = self._stage(spec.name, "decode", t0)
            tensors = preprocessor.preprocess(decoded)
            if drift is not None:
                observed.append(drift.features(decoded, tensors))
            self._stage(spec.name, "preprocess", t1)
            items.append({k_: v[None, ...] for k_, v in tensors.items()})
        inputs = model.collator(items)
        outputs = await model.batcher.submit(inputs, len(items), deadline)
        logits = outputs[spec.output].reshape(len(items), -1)
        if drift is not None:  # only answered items: a failed batch raised above
            drift.add(observed, logits)
        return logits

    def validate_tensors(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> int:
        """Check names, datatypes and shapes against config.pbtxt; returns the number of rows."""
        expected = {t.name for t in spec.inputs}
        if set(inputs) != expected:
            missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
            raise BadInput(
                f"model {spec.name} takes inputs {sorted(expected)}; "
                f"missing {missing}, unexpected {extra}"
            )
        rows: int | None = None
        for tensor in spec.inputs:
            array = inputs[tensor.name]
            if array.dtype != tensor.np_dtype:
                raise BadInput(f"input {tensor.name} must be {tensor.datatype}, got {array.dtype}")
            if array.ndim != len(tensor.dims) + 1:
                raise BadInput(
                    f"input {tensor.name} must have shape "
                    f"[batch, {', '.join(map(str, tensor.dims))}], "
                    f"got {list(array.shape)}"
                )
            for axis, (want, got) in enumerate(zip(tensor.dims, array.shape[1:], strict=True)):
                if want >= 0 and want != got:
                    raise BadInput(f"input {tensor.name} dim {axis + 1} must be {want}, got {got}")
                if want < 0 and got < 1:
                    raise BadInput(f"input {tensor.name} dim {axis + 1} must not be empty")
            if rows is None:
                rows = int(array.shape[0])
            elif rows != array.shape[0]:
                raise BadInput("all inputs must have the same batch size")
        if rows is None or rows < 1:
            raise BadInput("the batch dimension must not be empty")
        return rows

    async def infer_tensors(
        self,
        name: str,
        version: str | None,
        inputs: Mapping[str, np.ndarray],
        protocol: str = "v2_http",
        *,
        scope: RequestScope | None = None,
    ) -> dict[str, np.ndarray]:
        """Tensor passthrough: the model's own inputs in, every model output out.

        Tracked under `protocol` (endpoint `infer`) unless the transport passes its own `scope`.
        """
        if scope is None:
            async with self.track(name, "infer", protocol) as own:
                return await self._infer_tensors(name, version, inputs, own.deadline)
        return await self._infer_tensors(name, version, inputs, scope.deadline)

    async def _infer_tensors(
        self, name: str, version: str | None, inputs: Mapping[str, np.ndarray], deadline: float
    ) -> dict[str, np.ndarray]:
        model = self._get(name, version)
        rows = self.validate_tensors(model.spec, inputs)
        outputs = await model.batcher.submit(dict(inputs), rows, deadline)
        return dict(outputs)
