"""Servers that do nothing, to show the floor a Python front door cannot go below on this machine.

- `http`: a raw ASGI app under uvicorn (the gateway's server, same options) that reads the body
  and answers a fixed REST predict answer: no routing, no parsing, no model.
- `http-proxy`: the same app, which also makes one `grpc.aio` ModelInfer call to Triton
  (`--upstream host:port`) per predict request (`/v1/models/<name>/predict`), with a prebuilt
  one-row request holding that model's tensors of the benchmarks' sample payload (what the
  gateway sends for it), before its fixed answer: no decoding, preprocessing, batching or
  metrics. The floor of a Python REST front door that calls Triton once per request.
- `grpc`: a `grpc.aio` server (the gateway's gRPC stack) whose ModelInfer reads nothing and
  answers a fixed 1x10 FP32 `LOGITS` tensor.
- `grpc-proxy`: a `grpc.aio` server whose ModelInfer forwards the request's bytes unparsed to
  Triton (`--upstream host:port`, one `grpc.aio` call per request, the gateway's channel options)
  and returns Triton's answer bytes unparsed: no validation, no batching, no metrics. The floor of
  any Python gRPC proxy in front of Triton: the front door above plus one client call.

    PYTHONPATH=. python benchmarks/bare_servers.py http --port 9100
    PYTHONPATH=. python benchmarks/bare_servers.py http-proxy --port 9103 --upstream 127.0.0.1:8001
    PYTHONPATH=. python benchmarks/bare_servers.py grpc --port 9101
    PYTHONPATH=. python benchmarks/bare_servers.py grpc-proxy --port 9102 --upstream 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import uvicorn
from common import model_tensors, sample_payload  # first: puts the project root on sys.path
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.backends.triton import CHANNEL_OPTIONS
from service.repository import load_repository

# The OIP gRPC service, as the generated stubs name it.
SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

ANSWER = orjson.dumps(
    {
        "model": "digits_cnn",
        "version": "1",
        "request_id": "0" * 32,
        "predictions": [
            {"label": "7", "probability": 0.9, "top_k": [{"label": "7", "probability": 0.9}]}
        ],
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def _lifespan(receive: Any, send: Any) -> None:
    """Accept the server's start and stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body_and_answer(receive: Any, send: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


async def bare_http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await _lifespan(receive, send)
        return
    await _read_body_and_answer(receive, send)


def one_row_requests(repository: Path) -> dict[str, service_pb2.ModelInferRequest]:
    """Per model, a ModelInferRequest of one row: the sample payload's tensors."""
    requests = {}
    for spec in load_repository(repository).values():
        tensors = model_tensors(spec, sample_payload(spec)[0])
        request = service_pb2.ModelInferRequest(
            model_name=spec.name, model_version=spec.version, outputs=[{"name": spec.output}]
        )
        for tensor in spec.inputs:
            array = np.ascontiguousarray(tensors[tensor.name][None, ...])
            request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=array.shape)
            request.raw_input_contents.append(array.tobytes())
        requests[spec.name] = request
    return requests


def http_proxy_app(upstream: str, repository: Path) -> Any:
    requests = one_row_requests(repository)
    stubs: list[service_pb2_grpc.GRPCInferenceServiceStub] = []  # made in the server's loop

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await _lifespan(receive, send)
            return
        parts = scope["path"].split("/")  # "", "v1", "models", name, "predict"
        request = requests.get(parts[3]) if len(parts) == 5 and parts[4] == "predict" else None
        if request is not None:
            if not stubs:
                channel = grpc.aio.insecure_channel(upstream, options=CHANNEL_OPTIONS)
                stubs.append(service_pb2_grpc.GRPCInferenceServiceStub(channel))
            await stubs[0].ModelInfer(request, timeout=10)
        await _read_body_and_answer(receive, send)

    return app


class BareInference(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        logits = np.zeros((1, 10), dtype=np.float32).tobytes()
        self.answer = service_pb2.ModelInferResponse(model_name="digits_cnn", model_version="1")
        self.answer.outputs.add(name="LOGITS", datatype="FP32", shape=[1, 10])
        self.answer.raw_output_contents.append(logits)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return self.answer

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)


async def serve_grpc(port: int) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(BareInference(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve_grpc_proxy(port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream, options=CHANNEL_OPTIONS)
    # No serializers on either side: the bytes pass through as they came.
    calls = {
        name: channel.unary_unary(f"/{SERVICE}/{name}") for name in ("ModelInfer", "ServerLive")
    }

    def forward(name: str) -> grpc.RpcMethodHandler:
        async def handle(request: bytes, context: Any) -> bytes:
            answer: bytes = await calls[name](request)
            return answer

        return grpc.unary_unary_rpc_method_handler(handle)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {name: forward(name) for name in calls}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["http", "http-proxy", "grpc", "grpc-proxy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="the proxies: Triton's gRPC host:port")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args = parser.parse_args()
    if args.kind.endswith("proxy") and not args.upstream:
        parser.error(f"{args.kind} needs --upstream")
    if args.kind == "http":
        uvicorn.run(bare_http, port=args.port, log_level="warning", access_log=False)
    elif args.kind == "http-proxy":
        app = http_proxy_app(args.upstream, args.repository)
        uvicorn.run(app, port=args.port, log_level="warning", access_log=False)
    elif args.kind == "grpc":
        asyncio.run(serve_grpc(args.port))
    else:
        asyncio.run(serve_grpc_proxy(args.port, args.upstream))
