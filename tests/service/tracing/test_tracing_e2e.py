"""One trace per request through a real gateway and a real Triton, received by a real OTLP
receiver: the gateway's stage spans and Triton's own spans under the client's trace id.

Triton 2.51 (pip wheel and 24.10 image alike, and Triton's main branch) reads `traceparent`
from gRPC metadata as a NUL-terminated string although gRPC's metadata values are not
(`GrpcServerCarrier::Get` in src/grpc/infer_handler.h returns `string_ref::data()`): now and
then it reads past the value, rejects it and does not trace that request
(`benchmarks/triton_trace_propagation.py` measures how often). Its HTTP frontend has no such
flaw. So the gateway talks HTTP to Triton in these tests, except where gRPC is the subject:
there a request whose context Triton dropped is retried with a fresh trace, a few times.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient

from service.local_triton import LocalTriton
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.service.oip.conftest import model_tensors
from tests.service.rest.conftest import (
    GatewayFactory,
    OnnxReference,
    RunningGateway,
    gateway_factory,
)
from tests.service.rest.payloads import digit_pngs

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

MODEL = "digits_cnn"
SERVER = 2  # Span.SpanKind in opentelemetry-proto
CLIENT = 3
ERROR = 2  # Status.StatusCode
TRITON_SPANS = {"InferRequest", MODEL, "compute"}  # a minimal Triton trace (its trace.md)
SERVER_SPAN_NAMES = {
    "rest": "POST /v1/models/{model}/predict",
    "v2_http": "POST /v2/models/{model}/infer",
    "v2_grpc": "inference.GRPCInferenceService/ModelInfer",
}

# Attempts when the gateway talks gRPC to Triton (see the module docstring); measured loss
# is a few percent per request, so five attempts all losing would be a real failure.
GRPC_ATTEMPTS = 5


def new_ids() -> tuple[str, str]:
    """A fresh (trace id, span id) as a client would make them."""
    return os.urandom(16).hex(), os.urandom(8).hex()


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


@pytest.fixture
def start_gateway(
    traced_triton: LocalTriton,
    model_repository: Path,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[GatewayFactory]:
    """Gateways in front of the traced Triton (over HTTP unless told `triton_protocol="grpc"`),
    exporting to the receiver (OTLP/gRPC unless told otherwise)."""
    # The SDK's standard variable: export every 50 ms instead of every 5 s.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    defaults = {"model_repository": model_repository, "otlp_endpoint": receiver.grpc_endpoint}
    with gateway_factory(defaults) as start_traced:

        def start(**overrides: Any) -> RunningGateway:
            protocol = overrides.get("triton_protocol", "http")
            url = traced_triton.grpc_url if protocol == "grpc" else traced_triton.http_url
            return start_traced(**{"triton_url": url, "triton_protocol": protocol, **overrides})

        yield start


def send_image(gateway: RunningGateway, protocol: str, png: bytes, headers: dict[str, str]) -> str:
    """One digit through `protocol`, with the given headers/metadata; the predicted label."""
    if protocol == "rest":
        response = httpx.post(
            f"{gateway.url}/v1/models/{MODEL}/predict?top_k=1",
            files={"files": ("digit.png", png, "image/png")},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["predictions"][0]["label"])
    raw = np.array([[png]], dtype=object)
    if protocol == "v2_http":
        http_client = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
        item = httpclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
        item.set_data_from_numpy(raw)
        result = http_client.infer(MODEL, [item], headers=headers)
        http_client.close()
    else:
        grpc_client = grpcclient.InferenceServerClient(gateway.grpc_url)
        item = grpcclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
        item.set_data_from_numpy(raw)
        result = grpc_client.infer(MODEL, [item], headers=headers)
        grpc_client.close()
    return str(result.as_numpy("LABELS").ravel()[0].decode())


def by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    names: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        names.setdefault(span.name, []).append(span)
    return names


def has_triton_spans(spans: list[ReceivedSpan]) -> bool:
    return {s.name for s in spans if s.service == "triton"} >= TRITON_SPANS


def check_triton_under(spans: list[ReceivedSpan], call: ReceivedSpan) -> None:
    """Triton's three spans hang under the gateway's `triton` span, each under the next."""
    triton = by_name([s for s in spans if s.service == "triton"])
    (request,) = triton["InferRequest"]
    (model,) = triton[MODEL]
    (compute,) = triton["compute"]
    assert request.parent_span_id == call.span_id
    assert model.parent_span_id == request.span_id
    assert compute.parent_span_id == model.span_id
    assert {request.trace_id, model.trace_id, compute.trace_id} == {call.trace_id}


def gateway_and_triton_spans(spans: list[ReceivedSpan]) -> bool:
    """The request's trace is complete: the gateway's server span and Triton's spans are in."""
    return has_triton_spans(spans) and any(
        s.kind == SERVER and s.service == "modelgate" for s in spans
    )


@pytest.mark.parametrize(
    ("protocol", "exporter", "triton_protocol"),
    [
        ("rest", "grpc", "http"),
        ("rest", "http/protobuf", "grpc"),
        ("v2_http", "grpc", "grpc"),
        ("v2_grpc", "grpc", "http"),
        ("v2_grpc", "http/protobuf", "grpc"),
    ],
)
def test_one_request_is_one_trace_from_client_to_triton(
    start_gateway: GatewayFactory,
    receiver: OtlpReceiver,
    protocol: str,
    exporter: str,
    triton_protocol: str,
) -> None:
    endpoint = receiver.grpc_endpoint if exporter == "grpc" else receiver.http_endpoint
    gateway = start_gateway(
        otlp_endpoint=endpoint, otlp_protocol=exporter, triton_protocol=triton_protocol
    )
    pngs, truth = digit_pngs()
    attempts = GRPC_ATTEMPTS if triton_protocol == "grpc" else 1
    for _attempt in range(attempts):
        trace_id, client_span = new_ids()
        headers = {"traceparent": traceparent(trace_id, client_span)}
        assert send_image(gateway, protocol, pngs[0], headers) == truth[0]
        spans = receiver.wait_for(gateway_and_triton_spans, trace_id, timeout_s=5)
        if gateway_and_triton_spans(spans):
            break
    else:
        pytest.fail(f"no trace with Triton's spans in {attempts} attempts: {spans}")

    gateway.stop()  # shutdown exports whatever is still queued
    spans = receiver.spans(trace_id)
    assert {s.trace_id for s in spans} == {trace_id}
    gateway_spans = by_name([s for s in spans if s.service == "modelgate"])
    (server,) = gateway_spans[SERVER_SPAN_NAMES[protocol]]
    assert server.parent_span_id == client_span and server.kind == SERVER
    assert server.attributes["modelgate.model"] == MODEL
    assert server.attributes["modelgate.protocol"] == protocol
    stages = {"decode", "preprocess", "queue_wait", "triton"}
    if protocol == "rest":  # OIP answers logits and probabilities: no postprocess stage
        stages.add("postprocess")
    assert set(gateway_spans) == {server.name, *stages}
    for name in stages:
        (stage,) = gateway_spans[name]
        assert stage.parent_span_id == server.span_id, name
        assert server.start_ns <= stage.start_ns <= stage.end_ns <= server.end_ns, name
    (queue_wait,) = gateway_spans["queue_wait"]
    (call,) = gateway_spans["triton"]
    # both from the batcher's one clock reading when the batch left
    assert queue_wait.end_ns == call.start_ns
    assert call.kind == CLIENT and call.attributes["modelgate.batch.carrier"] is True
    assert call.attributes["modelgate.batch.rows"] == 1
    check_triton_under(spans, call)
    if exporter == "http/protobuf":
        assert "application/x-protobuf" in receiver.content_types
    assert "application/json" in receiver.content_types  # Triton's exporter posts OTLP/JSON


def test_passthrough_tensors_are_traced_too(
    start_gateway: GatewayFactory, receiver: OtlpReceiver, onnx_reference: OnnxReference
) -> None:
    gateway = start_gateway()
    trace_id, client_span = new_ids()
    arrays = model_tensors(onnx_reference, MODEL, count=2)
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    inputs = []
    for name, array in arrays.items():
        item = grpcclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array)
        inputs.append(item)
    client.infer(MODEL, inputs, headers={"traceparent": traceparent(trace_id, client_span)})
    client.close()
    gateway.stop()

    spans = receiver.wait_for(gateway_and_triton_spans, trace_id)
    gateway_spans = by_name([s for s in spans if s.service == "modelgate"])
    # tensors in, tensors out: nothing to decode, preprocess or postprocess
    assert set(gateway_spans) == {SERVER_SPAN_NAMES["v2_grpc"], "queue_wait", "triton"}
    (call,) = gateway_spans["triton"]
    assert call.attributes["modelgate.batch.rows"] == 2
    check_triton_under(spans, call)


@pytest.mark.parametrize(
    "header",
    [None, "not-a-traceparent", f"00-{'0' * 32}-{'1' * 16}-01"],
    ids=["absent", "malformed", "zero-trace-id"],
)
def test_a_request_without_a_usable_traceparent_starts_its_own_trace(
    start_gateway: GatewayFactory, receiver: OtlpReceiver, header: str | None
) -> None:
    gateway = start_gateway()
    pngs, truth = digit_pngs()
    request_id = f"no-parent-{os.urandom(4).hex()}"
    headers = {"X-Request-ID": request_id} | ({"traceparent": header} if header else {})

    assert send_image(gateway, "rest", pngs[1], headers) == truth[1]
    gateway.stop()

    (server,) = [
        s
        for s in receiver.wait_for(
            lambda spans: any(s.attributes.get("modelgate.request_id") == request_id for s in spans)
        )
        if s.attributes.get("modelgate.request_id") == request_id
    ]
    assert server.parent_span_id == ""  # a root: the header was ignored, not trusted
    assert server.trace_id != "0" * 32
    spans = receiver.wait_for(has_triton_spans, server.trace_id)
    (call,) = by_name(spans)["triton"]
    check_triton_under(spans, call)


def test_a_sampled_out_client_trace_is_not_traced_anywhere(
    start_gateway: GatewayFactory, receiver: OtlpReceiver
) -> None:
    gateway = start_gateway()
    pngs, truth = digit_pngs()
    quiet_trace, quiet_span = new_ids()
    loud_trace, loud_span = new_ids()

    quiet = {"traceparent": traceparent(quiet_trace, quiet_span, sampled=False)}
    assert send_image(gateway, "v2_grpc", pngs[2], quiet) == truth[2]
    loud = {"traceparent": traceparent(loud_trace, loud_span)}
    assert send_image(gateway, "v2_grpc", pngs[3], loud) == truth[3]
    gateway.stop()

    # Once the later request's spans (gateway and Triton) are in, the earlier one's would be.
    assert has_triton_spans(receiver.wait_for(has_triton_spans, loud_trace))
    assert receiver.spans(quiet_trace) == []


def test_a_failed_request_ends_its_span_with_the_error(
    start_gateway: GatewayFactory, receiver: OtlpReceiver
) -> None:
    gateway = start_gateway()
    trace_id, client_span = new_ids()
    response = httpx.post(
        f"{gateway.url}/v1/models/{MODEL}/predict",
        json={"inputs": ["bm90IGFuIGltYWdl"]},  # base64 of "not an image"
        headers={"traceparent": traceparent(trace_id, client_span)},
        timeout=30,
    )
    gateway.stop()

    assert response.status_code == 415, response.text  # bytes that are no image format
    (server,) = receiver.wait_for(bool, trace_id)
    assert server.parent_span_id == client_span
    assert server.attributes["http.response.status_code"] == 415
    assert server.attributes["error.type"] == "unsupported_media"
    assert server.status_code != ERROR  # a client's mistake is not a server error


def test_every_request_of_a_batch_reaches_triton_or_links_to_the_one_that_did(
    start_gateway: GatewayFactory, receiver: OtlpReceiver, onnx_reference: OnnxReference
) -> None:
    """A batch is one call to Triton for several traced requests: the first request's `triton`
    span carries the context to Triton, the others link to it."""
    # Batches of exactly 4: each leaves when full (the long delay is never reached, 12 = 3 x 4).
    gateway = start_gateway(max_batch_size=4, max_batch_delay_ms=20_000, request_timeout_s=60)
    arrays = model_tensors(onnx_reference, MODEL, count=1)
    ids = [new_ids() for _ in range(12)]

    async def send_all() -> None:
        client = grpcaio.InferenceServerClient(gateway.grpc_url)

        async def one(trace_id: str, span_id: str) -> None:
            inputs = []
            for name, array in arrays.items():
                item = grpcaio.InferInput(name, list(array.shape), "FP32")
                item.set_data_from_numpy(array)
                inputs.append(item)
            headers = {"traceparent": traceparent(trace_id, span_id)}
            await client.infer(MODEL, inputs, headers=headers)

        await asyncio.gather(*(one(t, s) for t, s in ids))
        await client.close()

    asyncio.run(send_all())
    gateway.stop()

    calls: dict[str, ReceivedSpan] = {}
    for trace_id, _ in ids:
        spans = receiver.wait_for(lambda s: any(x.name == "triton" for x in s), trace_id)
        (calls[trace_id],) = by_name(spans)["triton"]
    carriers = {c.span_id: c for c in calls.values() if c.attributes["modelgate.batch.carrier"]}
    assert len(carriers) == 3
    for trace_id, call in calls.items():
        assert call.attributes["modelgate.batch.rows"] == 4
        assert call.attributes["modelgate.batch.traced_requests"] == 4
        if call.span_id in carriers:
            assert call.links == ()
            check_triton_under(receiver.wait_for(has_triton_spans, trace_id), call)
        else:
            ((linked_trace, linked_span),) = call.links
            carrier = carriers[linked_span]
            assert carrier.trace_id == linked_trace != trace_id
            assert carrier.start_ns == call.start_ns  # sent together
            # Triton traced the batch once, under the carrier; nothing under this request
            assert not any(s.service == "triton" for s in receiver.spans(trace_id))


def test_with_tracing_off_nothing_is_traced_or_forwarded(
    start_gateway: GatewayFactory, receiver: OtlpReceiver
) -> None:
    untraced = start_gateway(otlp_endpoint=None)
    traced = start_gateway()
    pngs, truth = digit_pngs()
    off_trace, off_span = new_ids()
    on_trace, on_span = new_ids()

    off = {"traceparent": traceparent(off_trace, off_span)}
    assert send_image(untraced, "rest", pngs[4], off) == truth[4]
    assert untraced.app.state.dataplane.tracing is None
    on = {"traceparent": traceparent(on_trace, on_span)}
    assert send_image(traced, "rest", pngs[5], on) == truth[5]
    untraced.stop()
    traced.stop()

    # Triton traces every request that carries a traceparent: had the untraced gateway passed
    # the client's on, Triton's spans would be under that trace by the time the later ones are.
    assert has_triton_spans(receiver.wait_for(has_triton_spans, on_trace))
    assert receiver.spans(off_trace) == []
