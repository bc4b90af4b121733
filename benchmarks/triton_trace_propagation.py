"""How often Triton drops a W3C `traceparent` it was sent, over gRPC and over HTTP.

Starts a local Triton with OpenTelemetry tracing (`rate=1`, so it traces every request, with or
without a context) exporting to a local OTLP receiver, sends `--requests` sequential requests
per protocol, each with its own `traceparent`, and counts Triton's `InferRequest` spans that
are not under the trace they were sent: those requests lost their context inside Triton (with
the shipped `rate=0` they are not traced at all).

Cause (Triton 2.51 and its main branch): over gRPC, `GrpcServerCarrier::Get`
(src/grpc/infer_handler.h) returns the metadata value's `grpc::string_ref::data()` as a
NUL-terminated string, so the OpenTelemetry propagator reads past the 55-byte value into
whatever memory follows, and rejects it unless that happens to start with a NUL.

    PYTHONPATH=. python benchmarks/triton_trace_propagation.py --requests 300
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from service.local_triton import DEFAULT_REPOSITORY, LocalTriton
from service.repository import load_repository
from tests.otlp_receiver import OtlpReceiver


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per protocol")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    args = parser.parse_args()

    spec = load_repository(args.repository)[args.model]
    tensor = spec.inputs[0]
    if len(spec.inputs) != 1 or any(d < 0 for d in tensor.dims):
        parser.error(f"{args.model}: pick a model with one fixed-shape input (digits_cnn)")
    array = np.zeros((1, *tensor.dims), dtype=tensor.np_dtype)
    with (
        OtlpReceiver() as receiver,
        LocalTriton(
            args.repository,
            trace_otlp_url=receiver.http_endpoint,
            extra_args=[
                "--trace-config=rate=1",
                "--trace-config=opentelemetry,bsp_schedule_delay=50",
            ],
        ) as triton,
    ):
        sent: dict[str, set[str]] = {}
        for protocol, module, url in (
            ("grpc", grpcclient, triton.grpc_url),
            ("http", httpclient, triton.http_url),
        ):
            client: Any = module.InferenceServerClient(url)
            item = module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array)
            sent[protocol] = set()
            for _ in range(args.requests):
                trace_id = os.urandom(16).hex()
                parent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
                client.infer(args.model, [item], headers={"traceparent": parent})
                sent[protocol].add(trace_id)
            client.close()
        give_up = time.monotonic() + 30
        expected = 2 * args.requests
        while time.monotonic() < give_up:
            roots = [s for s in receiver.spans() if s.name == "InferRequest"]
            if len(roots) >= expected:
                break
            time.sleep(0.1)
    print(f"tritonserver from nvidia-pytriton, {args.requests} requests per protocol")
    for protocol, trace_ids in sent.items():
        under = sum(1 for r in roots if r.trace_id in trace_ids)
        lost = args.requests - under
        print(
            f"{protocol:5} traced {args.requests}  under the sent traceparent {under}  "
            f"context lost {lost} ({lost / args.requests:.1%})"
        )
    print(f"InferRequest spans received: {len(roots)} of {expected}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
