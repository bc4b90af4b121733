"""Servers that do nothing, to show the floor a Python front door cannot go below on this machine.

- `http`: a raw ASGI app under uvicorn (the gateway's server, same options) that reads the body
  and answers a fixed REST predict answer: no routing, no parsing, no model.
- `grpc`: a `grpc.aio` server (the gateway's gRPC stack) whose ModelInfer reads nothing and
  answers a fixed 1x10 FP32 `LOGITS` tensor.

    PYTHONPATH=. python benchmarks/bare_servers.py http --port 9100
    PYTHONPATH=. python benchmarks/bare_servers.py grpc --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import numpy as np
import orjson
import uvicorn
from tritonclient.grpc import service_pb2, service_pb2_grpc

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


async def bare_http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: accept start and stop
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["http", "grpc"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "http":
        uvicorn.run(bare_http, port=args.port, log_level="warning", access_log=False)
    else:
        asyncio.run(serve_grpc(args.port))
