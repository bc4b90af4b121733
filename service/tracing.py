"""Request traces: OpenTelemetry spans for each request's stages, exported over OTLP.

Imported only when `MODELGATE_OTLP_ENDPOINT` is set (`service.app`); without it the gateway has
no tracer provider, creates no span objects and reads no trace headers: the request path pays a
`None` check per hook.

One traced request gives this tree (names as the stages of `modelgate_stage_duration_seconds`):

    POST /v1/models/{model}/predict      SERVER  (OIP: POST /v2/models/{model}/infer,
    |                                             inference.GRPCInferenceService/ModelInfer)
    +- decode, preprocess                one pair per payload (raw payloads only)
    +- queue_wait                        enqueued -> its batch was sent
    +- triton                            CLIENT  the batch's backend call
    |  +- InferRequest > <model> > compute   Triton's own spans (W3C `traceparent` sent along)
    +- postprocess                       softmax, top-k, labels (REST)

Stage spans are written after the fact from the very timestamps the Prometheus histograms are
observed with (a monotonic clock, shifted once to wall-clock time), so tracing adds no clocks of
its own. A batch serves several requests but is one call to Triton: every traced request of the
batch gets its `triton` span, the first one's context travels to Triton, and the others link
to it (`modelgate.batch.carrier` says which one carried it).

The client's `traceparent` (HTTP header or gRPC metadata) continues the client's trace; a
sampled-out client trace is not traced here either (parent-based sampling).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from service.settings import Settings

# The server span's name per (protocol, endpoint): the route template, or the gRPC method.
SERVER_SPAN_NAMES = {
    ("rest", "predict"): "POST /v1/models/{model}/predict",
    ("v2_http", "infer"): "POST /v2/models/{model}/infer",
    ("v2_grpc", "infer"): "inference.GRPCInferenceService/ModelInfer",
}
_PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent/tracestate only


class _GrpcMetadataGetter(Getter[Any]):
    """Reads `traceparent` from a grpc.aio servicer context's invocation metadata."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = [
            value if isinstance(value, str) else value.decode("latin-1")
            for name, value in carrier.invocation_metadata() or ()
            if name == key
        ]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return [name for name, _ in carrier.invocation_metadata() or ()]


class _MappingGetter(Getter[Mapping[str, str]]):
    """Reads headers from a mapping (Starlette's `Headers` is case-insensitive)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys())


_GRPC_GETTER = _GrpcMetadataGetter()
_MAPPING_GETTER = _MappingGetter()


def create_exporter(settings: Settings) -> SpanExporter:
    """The OTLP exporter the settings name (the official OpenTelemetry exporters)."""
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        # An http:// endpoint means a plaintext channel, https:// TLS (the exporter's own rule).
        return GrpcExporter(endpoint=settings.otlp_endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=settings.otlp_endpoint)


class RequestTracing:
    """The gateway's tracer: starts request spans, records stages, carries context to Triton."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: settings.trace_service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        )
        # Spans are queued and exported by a background thread (OTEL_BSP_* variables tune it).
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter if exporter is not None else create_exporter(settings))
        )
        self.tracer = self.provider.get_tracer("modelgate")
        # Stage times come from time.monotonic(); spans need wall-clock nanoseconds.
        self._epoch_offset_ns = time.time_ns() - time.monotonic_ns()

    def _ns(self, monotonic_s: float) -> int:
        return int(monotonic_s * 1e9) + self._epoch_offset_ns

    # -- the request --------------------------------------------------------------------------

    def start_request(
        self,
        model: str,
        endpoint: str,
        protocol: str,
        request_id: str,
        started: float,
        carrier: Any = None,
    ) -> Span | None:
        """The request's server span, a child of the client's `traceparent` if it sent one;
        None when the request is not sampled. `carrier`: HTTP headers (a mapping) or a gRPC
        servicer context."""
        parent = None
        if carrier is not None:
            getter = _MAPPING_GETTER if isinstance(carrier, Mapping) else _GRPC_GETTER
            parent = _PROPAGATOR.extract(carrier, getter=getter)
        attributes: dict[str, Any] = {
            "modelgate.model": model,
            "modelgate.protocol": protocol,
            "modelgate.request_id": request_id,
        }
        if protocol == "v2_grpc":
            attributes["rpc.system"] = "grpc"
            attributes["rpc.service"] = "inference.GRPCInferenceService"
            attributes["rpc.method"] = "ModelInfer"
        else:
            attributes["http.request.method"] = "POST"
        span = self.tracer.start_span(
            SERVER_SPAN_NAMES.get((protocol, endpoint), f"{protocol} {endpoint}"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=self._ns(started),
        )
        if not span.is_recording():
            return None
        return span

    def end_request(
        self,
        span: Span,
        model: str,
        protocol: str,
        status: int,
        reason: str | None,
        finished: float,
    ) -> None:
        """End the server span with the request's outcome (`status`: the HTTP status the
        gateway's error table gives it, also for gRPC; 499: the client went away)."""
        span.set_attribute("modelgate.model", model)  # a transport may have named it late
        span.set_attribute("modelgate.status", status)
        if protocol != "v2_grpc" and status != 499:
            span.set_attribute("http.response.status_code", status)
        if reason is not None:
            span.set_attribute("error.type", reason)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, reason or str(status)))
        span.end(end_time=self._ns(finished))

    def stage(self, parent: Span, name: str, started: float, finished: float) -> None:
        """One finished stage (decode, preprocess, postprocess) of a request."""
        self.tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            start_time=self._ns(started),
        ).end(end_time=self._ns(finished))

    # -- the batch ----------------------------------------------------------------------------

    def batch_sent(
        self, model: str, waits: Sequence[tuple[Span, float]], rows: int, sent_at: float
    ) -> BatchSpans:
        """A batch leaves for the backend: a `queue_wait` span per traced request (from when it
        was queued), a `triton` span each, and the first one's context made current so the
        backend sends it to Triton. `waits`: (request span, enqueued) of each traced request."""
        start = self._ns(sent_at)
        calls: list[Span] = []
        carrier: Link | None = None
        for request_span, enqueued in waits:
            parent = trace.set_span_in_context(request_span)
            self.tracer.start_span("queue_wait", context=parent, start_time=self._ns(enqueued)).end(
                end_time=start
            )
            call = self.tracer.start_span(
                "triton",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes={
                    "modelgate.model": model,
                    "modelgate.batch.rows": rows,
                    "modelgate.batch.traced_requests": len(waits),
                    "modelgate.batch.carrier": carrier is None,
                },
                links=() if carrier is None else (carrier,),
                start_time=start,
            )
            if carrier is None:
                carrier = Link(call.get_span_context())
            calls.append(call)
        token = otel_context.attach(trace.set_span_in_context(calls[0]))
        return BatchSpans(calls, token)

    def batch_done(
        self, batch: BatchSpans, finished: float, error: BaseException | None = None
    ) -> None:
        """The backend answered (or failed): end the batch's `triton` spans."""
        otel_context.detach(batch.token)
        end = self._ns(finished)
        for call in batch.calls:
            if error is not None:
                call.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            call.end(end_time=end)

    def outgoing_metadata(self) -> list[tuple[str, str]]:
        """`traceparent` (and `tracestate`) of the current batch, for the call to Triton."""
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers)
        return list(headers.items())

    def for_model(self, model: str) -> ModelTracing:
        """The batcher's hooks for one model."""
        return ModelTracing(self, model)

    # -- lifecycle ----------------------------------------------------------------------------

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export every finished span now."""
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter thread (the gateway's shutdown)."""
        self.provider.shutdown()


class BatchSpans:
    """The `triton` spans of one batch in flight and the context token to restore after it."""

    __slots__ = ("calls", "token")

    def __init__(self, calls: list[Span], token: Token[Context]) -> None:
        self.calls = calls
        self.token = token


class ModelTracing:
    """`service.batcher.BatchTracer` for one model."""

    __slots__ = ("_model", "_tracing")

    def __init__(self, tracing: RequestTracing, model: str) -> None:
        self._tracing = tracing
        self._model = model

    def batch_sent(self, waits: Sequence[tuple[Any, float]], rows: int, sent_at: float) -> Any:
        return self._tracing.batch_sent(self._model, waits, rows, sent_at)

    def batch_done(self, handle: Any, finished: float, error: BaseException | None) -> None:
        self._tracing.batch_done(handle, finished, error)
