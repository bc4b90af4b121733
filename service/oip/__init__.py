"""The Open Inference Protocol (KServe v2 / Triton) over HTTP and gRPC, on top of the data plane.

`core` is what both transports share (metadata, the two ways to infer, outputs);
`tensors` turns wire bytes and lists into numpy arrays and back;
`http_api` is the FastAPI router, `grpc_api` the `grpc.aio` GRPCInferenceService.
"""
