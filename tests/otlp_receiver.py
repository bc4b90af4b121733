"""A real OTLP trace receiver: what an OpenTelemetry collector does on its receiving side.

It serves the OTLP `TraceService` over gRPC (the gateway's default exporter) and
`POST /v1/traces` over HTTP with protobuf or JSON bodies (the gateway's `http/protobuf`
exporter; Triton's OpenTelemetry exporter posts JSON), parses every `ExportTraceServiceRequest`
with the protobuf classes of `opentelemetry-proto`, and keeps the spans for inspection.

Tests use `OtlpReceiver` directly; benchmarks run it as a process:

    python -m tests.otlp_receiver --grpc-port 4317 --http-port 4318
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from service.local_triton import free_port

# OTLP/JSON writes these ids as hex strings where protobuf's JSON mapping expects base64.
_HEX_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One received span, ids as lowercase hex ("" for a root's parent)."""

    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 1 internal, 2 server, 3 client
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each link
    status_code: int  # 0 unset, 1 ok, 2 error
    events: tuple[str, ...]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Flatten an export request into spans, each with its resource's `service.name`."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        links=tuple((k.trace_id.hex(), k.span_id.hex()) for k in span.links),
                        status_code=span.status.code,
                        events=tuple(e.name for e in span.events),
                    )
                )
    return spans


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                base64.b64encode(bytes.fromhex(value)).decode()
                if key in _HEX_ID_KEYS and isinstance(value, str)
                else _hex_ids_to_base64(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def parse_json_export(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """An OTLP/JSON body (hex ids, as the OTLP specification writes them) as protobuf."""
    document = _hex_ids_to_base64(json.loads(body))
    return json_format.ParseDict(
        document, trace_service_pb2.ExportTraceServiceRequest(), ignore_unknown_fields=True
    )


class OtlpReceiver:
    """OTLP/gRPC and OTLP/HTTP trace receivers on free local ports, sharing one span store."""

    def __init__(self, host: str = "127.0.0.1", keep_spans: bool = True) -> None:
        self.host = host
        self.keep_spans = keep_spans
        self.grpc_port = free_port(host)
        self.http_port = free_port(host)
        self.exports = 0  # export requests received
        self.span_count = 0
        self.content_types: list[str] = []  # of the HTTP exports, in order
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    @property
    def grpc_endpoint(self) -> str:
        """For an OTLP/gRPC exporter."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """For an OTLP/HTTP exporter (the full traces URL)."""
        return f"http://{self.host}:{self.http_port}/v1/traces"

    def _store(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = spans_of(request)
        with self._lock:
            self.exports += 1
            self.span_count += len(received)
            if self.keep_spans:
                self._spans.extend(received)

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """Spans received so far (of one trace)."""
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(
        self,
        done: Callable[[list[ReceivedSpan]], bool],
        trace_id: str | None = None,
        timeout_s: float = 20.0,
    ) -> list[ReceivedSpan]:
        """The spans (of one trace) once `done(spans)` holds; the last seen when time runs out."""
        give_up = time.monotonic() + timeout_s
        while True:
            spans = self.spans(trace_id)
            if done(spans) or time.monotonic() > give_up:
                return spans
            time.sleep(0.05)

    def start(self) -> OtlpReceiver:
        receiver = self

        class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(
                self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                receiver._store(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), self._grpc)
        self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        self._grpc.start()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as collectors answer (clients reuse it)

            def do_POST(self) -> None:
                if self.path != "/v1/traces":
                    self._answer(404, b"unknown path", "text/plain")
                    return
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                content_type = self.headers.get("content-type", "").split(";")[0].strip()
                try:
                    if content_type == "application/json":
                        request = parse_json_export(body)
                        answer = b"{}"
                    elif content_type == "application/x-protobuf":
                        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                    else:
                        self._answer(415, b"unsupported content type", "text/plain")
                        return
                except (DecodeError, ValueError, json_format.ParseError) as exc:
                    self._answer(400, str(exc).encode(), "text/plain")
                    return
                with receiver._lock:
                    receiver.content_types.append(content_type)
                receiver._store(request)
                self._answer(200, answer, content_type)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read the store, not a log

        self._http = ThreadingHTTPServer((self.host, self.http_port), Handler)
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=1).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Receive OTLP traces and count them.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=4317)
    parser.add_argument("--http-port", type=int, default=4318)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.host, keep_spans=False)
    receiver.grpc_port, receiver.http_port = args.grpc_port, args.http_port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with receiver:
        print(f"OTLP receiver: gRPC {receiver.grpc_endpoint}  HTTP {receiver.http_endpoint}")
        stop.wait()
    print(f"received {receiver.span_count} spans in {receiver.exports} exports")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
