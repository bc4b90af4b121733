"""The transport-neutral core: every protocol (REST, OIP HTTP, OIP gRPC) calls this and only this.

- `predict`: raw payloads (image bytes, strings, sequences) -> decode -> preprocess -> batch ->
  infer -> softmax/top-k/labels.
- `infer_tensors`: the model's own tensors -> validate against config.pbtxt -> batch -> infer.
- `track`: wraps one request of any transport to record latency, status class and error reason.

Versions: every served version of a model has its own preprocessor, collator and batcher, so a
batch never mixes versions. `route` is the one place that picks the version of a request; the
table it reads (`_served`) is replaced whole when the served set changes (service/lifecycle.py),
so a request resolves its version with dictionary lookups and no lock.
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
from typing import TYPE_CHECKING, Any

import numpy as np

from service import drain, preprocess
from service.backends.base import InferenceBackend, Readiness
from service.batcher import Batcher
from service.errors import BadInput, ModelGateError, ModelNotFound
from service.metrics import NO_VERSION, UNKNOWN_MODEL, Metrics
from service.monitoring.drift import DriftMonitor, DriftWindow
from service.monitoring.ood import ModelOod, OodDetector, OodResult, one_blas_thread
from service.postprocess import top_k as top_k_predictions
from service.repository import ModelSpec
from service.settings import Settings
from service.tensors import Collator
from service.traffic import Traffic, preprocessing_key

if TYPE_CHECKING:  # imported at run time only when tracing is on (service.app)
    from service.tracing import RequestTracing

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


# Where a request's OOD result waits in `RequestScope.extra` for the transport to answer with it.
OOD_KEY = "ood"
# A batch's OOD scores and flags travel beside the model outputs under these keys, so the
# batcher's fan-out hands each request its rows (no model output can have them: tensor names in
# a Triton config are identifiers).
OOD_SCORES = "modelgate:ood_scores"
OOD_FLAGS = "modelgate:ood_flags"


def take_ood(outputs: dict[str, np.ndarray]) -> OodResult | None:
    """Remove a request's OOD scores and flags from its batch outputs (None: not scored)."""
    scores = outputs.pop(OOD_SCORES, None)
    flags = outputs.pop(OOD_FLAGS, None)
    return None if scores is None or flags is None else OodResult(scores, flags)


# Payloads at least this large are decoded in a worker thread so the event loop keeps serving.
THREAD_DECODE_BYTES = 256 * 1024
# An unpinned request whose version was retired under it looks this often for its successor.
REROUTE_POLL_S = 0.01


@dataclass
class PredictResult:
    """Answer of `predict`: one prediction per payload, in order."""

    model: str
    version: str
    request_id: str
    predictions: list[dict[str, Any]]
    # the model's output rows ([inputs, classes]), for callers that want more than the top-k
    logits: np.ndarray | None = None
    # out-of-distribution scores and flags (None when monitoring is off or the model has none)
    ood: OodResult | None = None


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
    # The version that answers, set by the data plane once `route` chose it: transports read
    # the answering version (and its labels) here.
    spec: ModelSpec | None = None
    # A stable id of the client (header or key) for routing policies that keep a client on one
    # version; transports fill it in when they have one.
    client_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    trace: Any = None  # the request's span when it is traced (service.tracing), else None


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
        trace_carrier: Any,
    ) -> None:
        started = time.monotonic()
        self._dataplane = dataplane
        self._scope = scope = RequestScope(
            model=model,
            endpoint=endpoint,
            protocol=protocol,
            request_id=request_id or new_request_id(),
            started=started,
            deadline=started + dataplane.settings.request_timeout_s,
        )
        if dataplane.tracing is not None:
            scope.trace = dataplane.tracing.start_request(
                model, endpoint, protocol, scope.request_id, started, trace_carrier
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
        label = scope.model if scope.model in dataplane._served else UNKNOWN_MODEL
        finished = time.monotonic()
        metrics.observe_request(
            label,
            scope.spec.version if scope.spec is not None else NO_VERSION,
            scope.endpoint,
            scope.protocol,
            scope.status,
            finished - scope.started,
            reason,
        )
        if scope.trace is not None and dataplane.tracing is not None:
            dataplane.tracing.end_request(
                scope.trace, label, scope.protocol, scope.status, reason, finished
            )


class _Model:
    """Runtime state of one model version: spec, preprocessor, collator, batcher."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        backend: InferenceBackend,
        metrics: Metrics,
        drift: DriftMonitor | None = None,
        tracing: RequestTracing | None = None,
    ) -> None:
        self.spec = spec
        # Set when the version leaves the served set (or is about to): its unpinned requests
        # that fail are then answered by the version that replaces it.
        self.retiring = False
        self.preprocessor = preprocess.for_model(spec, max_image_pixels=settings.max_image_pixels)
        self.preprocessing_key = preprocessing_key(spec)  # shadow copies reuse equal tensors
        self.drift: DriftWindow | None = None
        if drift is not None:
            self.drift = drift.window_for(spec, getattr(self.preprocessor, "tokenizer", None))
        self.collator = Collator(spec, buckets=settings.length_buckets)
        max_batch = min(settings.max_batch_size or spec.max_batch_size, spec.max_batch_size)
        delay_s = (
            settings.max_batch_delay_ms / 1000.0
            if settings.max_batch_delay_ms is not None
            else spec.max_queue_delay_us / 1e6
        )

        detector = OodDetector.load(spec.path / spec.version) if settings.ood_enabled else None
        ood = None if detector is None else ModelOod(detector, metrics.ood, spec.name, spec.version)

        async def infer(inputs: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
            outputs = await backend.infer(spec, inputs)
            if ood is None:
                return outputs
            # Scored once per batch: the batcher hands each request its rows of every output,
            # these included (`take_ood` takes them out again).
            result = ood.score_batch(inputs, outputs[spec.output])
            if result is None:
                return outputs
            return {**outputs, OOD_SCORES: result.scores, OOD_FLAGS: result.flags}

        self.batcher = Batcher(
            f"{spec.name} v{spec.version}",
            infer,
            self.collator,
            max_batch_size=max_batch,
            max_delay_s=delay_s,
            max_queue_rows=settings.max_queue_size,
            concurrency=settings.batch_concurrency * backend.replicas,
            observer=metrics.observer(spec.name, spec.version),
            tracer=tracing.for_model(spec.name) if tracing is not None else None,
        )


@dataclass(frozen=True)
class ServedModel:
    """The served versions of one model (ascending); replaced whole, never changed in place."""

    versions: Mapping[str, _Model]
    newest: str  # the highest served version


def _served_model(models: Mapping[str, _Model]) -> ServedModel:
    ordered = dict(sorted(models.items(), key=lambda item: int(item[0])))
    return ServedModel(versions=ordered, newest=next(reversed(ordered)))


class DataPlane:
    """One instance per process; owns the backend and a batcher per served model version."""

    def __init__(
        self,
        settings: Settings,
        specs: Mapping[str, Mapping[str, ModelSpec]],
        backend: InferenceBackend,
        metrics: Metrics,
        tracing: RequestTracing | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics
        self.tracing = tracing  # None: tracing off, and every tracing hook is one `if`
        if settings.ood_enabled:
            one_blas_thread()  # before any detector scores (service/monitoring/ood.py)
        self.drift: DriftMonitor | None = None
        if settings.drift_monitoring:
            self.drift = DriftMonitor(
                metrics.registry,
                settings.drift_window_items,
                settings.drift_min_items,
                settings.drift_refresh_s,
            )
            metrics.before_render.append(self.drift.refresh)
        self._served: dict[str, ServedModel] = {
            name: _served_model({v: self._runtime(spec) for v, spec in versions.items()})
            for name, versions in specs.items()
        }
        # Canary weights and shadow versions from each model's routing.json (service/routing.py);
        # `routing` is read per unpinned request: one dict lookup, empty without routing files.
        self.traffic = Traffic(
            settings, self._served_versions(), metrics.registry, served=self._served_versions
        )
        self.routing = self.traffic.policies

    def _served_versions(self) -> dict[str, list[str]]:
        return {name: list(served.versions) for name, served in self._served.items()}

    def _runtime(self, spec: ModelSpec) -> _Model:
        return _Model(spec, self.settings, self.backend, self.metrics, self.drift, self.tracing)

    # -- changing the served set (service/lifecycle.py) ------------------------------------------

    def serve(self, name: str, specs: Mapping[str, ModelSpec]) -> list[_Model]:
        """Serve exactly `specs` for model `name` from now on (one atomic switch of the routing
        table); returns the runtimes that left it, for `drain`. A version whose spec object is
        unchanged keeps its runtime; a new or re-read one gets a fresh runtime and batcher."""
        old = self._served.get(name)
        current = old.versions if old is not None else {}
        runtimes: dict[str, _Model] = {}
        for version, spec in specs.items():
            runtime = current.get(version)
            if runtime is None or runtime.spec is not spec:
                runtime = self._runtime(spec)
                runtime.batcher.start()
            runtimes[version] = runtime
        served = dict(self._served)
        served[name] = _served_model(runtimes)
        self._served = served  # readers see the old table or the new one, never a mix
        return self._retire([m for m in current.values() if m not in runtimes.values()])

    def remove(self, name: str) -> list[_Model]:
        """Stop serving model `name`; returns its runtimes for `drain`."""
        served = dict(self._served)
        old = served.pop(name, None)
        self._served = served
        return self._retire(list(old.versions.values()) if old is not None else [])

    def mark_retiring(self, name: str, versions: Sequence[str]) -> None:
        """Announce that these versions are about to leave (their backend may drop them first)."""
        served = self._served.get(name)
        for version in versions:
            if served is not None and version in served.versions:
                served.versions[version].retiring = True

    @staticmethod
    def _retire(models: list[_Model]) -> list[_Model]:
        for model in models:
            model.retiring = True
        return models

    async def drain(self, models: Sequence[_Model]) -> None:
        """Let the retired runtimes answer what they queued, then stop their batchers."""
        await asyncio.gather(*(m.batcher.close(self.settings.shutdown_grace_s) for m in models))
        if self.drift is not None:
            for model in models:
                if model.drift is not None:
                    self.drift.forget(model.drift)

    async def _rerouted(
        self, model: _Model, pinned: str | None, error: ModelGateError, scope: RequestScope
    ) -> _Model:
        """The runtime that answers an unpinned request whose version was retired under it.

        Pinned requests, errors of the request itself and versions still serving keep `error`.
        """
        if pinned or not model.retiring or isinstance(error, BadInput):
            raise error
        name = model.spec.name
        while time.monotonic() < scope.deadline:
            try:
                current = self._get(name, None, scope.client_key)
            except ModelNotFound:
                break
            if current is not model and not current.retiring:
                log.info("request %s moves from retired %s v%s to v%s", scope.request_id,
                         name, model.spec.version, current.spec.version)  # fmt: skip
                return current
            await asyncio.sleep(REROUTE_POLL_S)
        raise error

    async def start(self) -> None:
        """Connect the backend and start the batchers."""
        await self.backend.start()
        for served in self._served.values():
            for model in served.versions.values():
                model.batcher.start()
        self.traffic.start()
        if self.drift is not None:
            self.drift.start()

    async def close(self) -> None:
        """Finish queued work (bounded by `shutdown_grace_s`), then release the backend.
        Shadow copies still running are cancelled first: they never hold a shutdown."""
        await self.traffic.close()
        grace_s = drain.grace_left(self.settings.shutdown_grace_s)
        await asyncio.gather(
            *(
                m.batcher.close(grace_s)
                for served in self._served.values()
                for m in served.versions.values()
            )
        )
        if self.drift is not None:
            await self.drift.close()
        await self.backend.close()

    # -- routing ------------------------------------------------------------------------------

    def route(self, model: str, pinned_version: str | None, client_key: str | None = None) -> str:
        """The version that answers a request for `model`: the pinned one when the client named
        one (it must be served), else the routing choice. Runs on every request: lookups only.

        Unpinned: the model's routing policy (routing.json weights; `client_key`, a stable id of
        the client when the transport has one, keeps a client on one version), else the newest
        served version.
        """
        served = self._served.get(model)
        if served is None:
            raise ModelNotFound(
                f"unknown model {model!r}; known models: {', '.join(sorted(self._served))}"
            )
        if pinned_version:
            if pinned_version not in served.versions:
                raise ModelNotFound(
                    f"model {model!r} has no served version {pinned_version!r} "
                    f"(serving {', '.join(served.versions)})"
                )
            return pinned_version
        policy = self.routing.get(model)
        if policy is not None:
            chosen = policy.pick(client_key)
            runtime = served.versions.get(chosen)
            if runtime is not None and not runtime.retiring:  # else leaving: the newest answers
                return chosen
        return served.newest

    def _get(self, name: str, version: str | None = None, client_key: str | None = None) -> _Model:
        chosen = self.route(name, version, client_key)  # raises ModelNotFound first
        return self._served[name].versions[chosen]

    # -- metadata -----------------------------------------------------------------------------

    def models(self) -> list[ModelSpec]:
        """Every model of the repository at its newest served version."""
        return [s.versions[s.newest].spec for s in self._served.values()]

    def served_specs(self) -> list[ModelSpec]:
        """Every served version of every model."""
        return [m.spec for s in self._served.values() for m in s.versions.values()]

    def served_versions(self, name: str) -> dict[str, ModelSpec]:
        """The served versions of one model, ascending (empty when the model is not served)."""
        served = self._served.get(name)
        return {} if served is None else {v: m.spec for v, m in served.versions.items()}

    def model(self, name: str, version: str | None = None) -> ModelSpec:
        """The model `name` at `version`, or at its newest served version (metadata: no
        routing); `ModelNotFound` otherwise."""
        served = self._served.get(name)
        if served is None or version:
            return self._get(name, version).spec
        return served.versions[served.newest].spec

    async def ready(self) -> Readiness:
        """Whether the backend can serve every model now (never while the process drains)."""
        if drain.draining():
            return Readiness(False, "shutting down: draining connections")
        return await self.backend.readiness(self.served_specs())

    async def model_ready(self, spec: ModelSpec) -> Readiness:
        """Whether the backend can serve this one model now."""
        return await self.backend.readiness([spec])

    # -- request accounting -------------------------------------------------------------------

    def track(
        self,
        model: str,
        endpoint: str,
        protocol: str,
        request_id: str | None = None,
        trace_carrier: Any = None,
    ) -> AbstractAsyncContextManager[RequestScope]:
        """Time one request of any transport and count it by status class and error reason.

        `trace_carrier` is where the client's `traceparent` may be (HTTP headers, or the gRPC
        servicer context); it is read only when tracing is on."""
        return _Tracked(self, model, endpoint, protocol, request_id, trace_carrier)

    def _stage(self, spec: ModelSpec, stage: str, started: float, trace: Any = None) -> float:
        now = time.monotonic()
        self.metrics.observe_stage(spec.name, spec.version, stage, now - started)
        if trace is not None and self.tracing is not None:
            self.tracing.stage(trace, stage, started, now)
        return now

    # -- inference ----------------------------------------------------------------------------

    def payloads_from_json(self, name: str, value: Any, version: str | None = None) -> list[Any]:
        """Split a JSON `inputs` value into payloads the model's preprocessor takes."""
        return self._get(name, version).preprocessor.from_json(value)

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
        k = top_k if top_k is not None else self.settings.default_top_k
        if k < 1:
            raise BadInput("top_k must be at least 1")
        model = self._get(name, version, scope.client_key)
        scope.spec = model.spec
        routed = not version
        try:
            logits = await self._infer_payloads(
                model, payloads, scope.deadline, routed, scope=scope
            )
        except ModelGateError as exc:
            model = await self._rerouted(model, version, exc, scope)
            scope.spec = model.spec
            logits = await self._infer_payloads(
                model, payloads, scope.deadline, routed, scope=scope
            )
        spec = model.spec
        t0 = time.monotonic()
        predictions = top_k_predictions(logits, spec.labels, k)
        ood: OodResult | None = scope.extra.get(OOD_KEY)
        if ood is not None:
            for row, prediction in enumerate(predictions):
                prediction.update(ood.fields(row))
        self._stage(spec, "postprocess", t0, scope.trace)
        return PredictResult(
            model=spec.name,
            version=spec.version,
            request_id=scope.request_id,
            predictions=predictions,
            logits=logits,
            ood=ood,
        )

    async def infer_payloads(
        self, name: str, version: str | None, payloads: Sequence[Any], scope: RequestScope
    ) -> np.ndarray:
        """Raw payloads in, the model's output rows out ([payloads, classes]); for protocols that
        return tensors and build their own answer from them (OIP)."""
        model = self._get(name, version, scope.client_key)
        scope.spec = model.spec
        routed = not version
        try:
            return await self._infer_payloads(model, payloads, scope.deadline, routed, scope=scope)
        except ModelGateError as exc:
            model = await self._rerouted(model, version, exc, scope)
            scope.spec = model.spec
            return await self._infer_payloads(model, payloads, scope.deadline, routed, scope=scope)

    async def _infer_payloads(
        self,
        model: _Model,
        payloads: Sequence[Any],
        deadline: float,
        routed: bool = False,
        observe: bool = True,
        scope: RequestScope | None = None,
    ) -> np.ndarray:
        """Decode, preprocess, batch; `routed` (unpinned) may start a shadow copy; `observe`
        False keeps a shadow copy's items out of the version's drift window (never answered)."""
        spec = model.spec
        if not payloads:
            raise BadInput("no inputs given")
        if len(payloads) > self.settings.max_items_per_request:
            raise BadInput(
                f"{len(payloads)} inputs in one request; the limit is "
                f"{self.settings.max_items_per_request}"
            )
        preprocessor = model.preprocessor
        trace = scope.trace if scope is not None else None
        drift = model.drift if observe else None
        observed: list[list[float] | None] = []
        items = []
        for payload in payloads:
            t0 = time.monotonic()
            if isinstance(payload, bytes | bytearray) and len(payload) >= THREAD_DECODE_BYTES:
                decoded = await asyncio.to_thread(preprocessor.decode, payload)
            else:
                decoded = preprocessor.decode(payload)
            t1 = self._stage(spec, "decode", t0, trace)
            tensors = preprocessor.preprocess(decoded)
            if drift is not None:
                observed.append(drift.features(decoded, tensors))
            self._stage(spec, "preprocess", t1, trace)
            items.append({k_: v[None, ...] for k_, v in tensors.items()})
        inputs = model.collator(items)
        outputs = await model.batcher.submit(inputs, len(items), deadline, trace)
        ood = take_ood(outputs)
        logits = outputs[spec.output].reshape(len(items), -1)
        if drift is not None:  # only answered items: a failed batch raised above
            drift.add(observed, logits)
        if scope is not None and ood is not None:  # the answered version's detector
            scope.extra[OOD_KEY] = ood
        if routed and self.routing:
            self._shadow(model, logits, inputs, len(items), payloads)
        return logits

    def _shadow(
        self,
        model: _Model,
        logits: np.ndarray,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        payloads: Sequence[Any] | None,
    ) -> None:
        """After the primary's answer: offer a copy to the policy's shadow version, if any.

        The copy reuses the primary's tensors when both versions preprocess alike, else it
        decodes the payloads again with the shadow version's own preprocessing."""
        spec = model.spec
        policy = self.routing.get(spec.name)
        shadow_version = policy.shadow_for(spec.version) if policy is not None else None
        if shadow_version is None:
            return
        target = self._served[spec.name].versions.get(shadow_version)
        if target is None:  # not served (yet or any more): nothing to compare with
            return
        deadline = time.monotonic() + self.settings.request_timeout_s

        async def run() -> np.ndarray:
            if payloads is not None and target.preprocessing_key != model.preprocessing_key:
                return await self._infer_payloads(target, payloads, deadline, observe=False)
            outputs = await target.batcher.submit(inputs, rows, deadline)
            return outputs[target.spec.output].reshape(rows, -1)

        limit = model.batcher.max_queue_rows
        load = max(model.batcher.queued_rows, target.batcher.queued_rows) / limit
        self.traffic.shadow.offer(
            spec.name, spec.version, shadow_version, logits, run, load,
            (spec.labels, target.spec.labels),
        )  # fmt: skip

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
                return await self._infer_tensors(name, version, inputs, own)
        return await self._infer_tensors(name, version, inputs, scope)

    async def _infer_tensors(
        self,
        name: str,
        version: str | None,
        inputs: Mapping[str, np.ndarray],
        scope: RequestScope,
    ) -> dict[str, np.ndarray]:
        model = self._get(name, version, scope.client_key)
        scope.spec = model.spec
        rows = self.validate_tensors(model.spec, inputs)
        try:
            outputs = await model.batcher.submit(dict(inputs), rows, scope.deadline, scope.trace)
        except ModelGateError as exc:
            model = await self._rerouted(model, version, exc, scope)
            scope.spec = model.spec
            outputs = await model.batcher.submit(dict(inputs), rows, scope.deadline, scope.trace)
        ood = take_ood(outputs)
        if ood is not None:
            scope.extra[OOD_KEY] = ood
        if not version and self.routing:
            logits = outputs[model.spec.output].reshape(rows, -1)
            self._shadow(model, logits, inputs, rows, None)
        return dict(outputs)
