"""OIP over gRPC: `inference.GRPCInferenceService` (the stubs shipped in tritonclient) on grpc.aio.

Runs in the gateway's process and event loop, next to the HTTP app, and calls the same data plane.
Errors become gRPC status codes from the gateway's error table; RPCs this server does not offer
(streaming, shared memory, ...) answer UNIMPLEMENTED. Repository control (RepositoryIndex,
RepositoryModelLoad, RepositoryModelUnload) is service/lifecycle.py behind `check_admin`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service import __version__, checks
from service.dataplane import DataPlane
from service.errors import AdminDisabled, BadInput, ModelGateError, ModelNotFound
from service.lifecycle import ModelManager
from service.oip import core, tensors
from service.routing import CLIENT_HEADER
from service.settings import Settings

log = logging.getLogger(__name__)

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
_T = TypeVar("_T")

# Typed `contents` field holding each datatype (FP16/BF16 have none: raw contents only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameter(value: service_pb2.InferParameter) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def _count(value: Any, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"{what} must be a non-negative integer")
    return value


def decode_inputs(request: service_pb2.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's tensors, from `raw_input_contents` or the typed `contents`."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadInput(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: "
            "give raw contents for every input or for none"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise BadInput(f"input {name} is given twice")
        if "shared_memory_region" in tensor.parameters:
            raise BadInput(f"input {name}: shared memory is not supported by this server")
        shape = tensors.check_shape(name, list(tensor.shape))
        if raw:
            inputs[name] = tensors.from_bytes(name, tensor.datatype, shape, raw[index])
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            tensors.numpy_dtype(name, tensor.datatype)  # unknown datatype: a clear error
            raise BadInput(f"input {name}: {tensor.datatype} needs raw_input_contents")
        values = getattr(tensor.contents, field)
        dtype = tensors.numpy_dtype(name, tensor.datatype)
        if len(values) != int(np.prod(shape)):
            raise BadInput(
                f"input {name}: {len(values)} values in contents.{field} for shape {shape}"
            )
        if dtype == np.object_:
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
        else:
            array = np.array(values, dtype=dtype)
        inputs[name] = array.reshape(shape)
    return inputs


def requested_outputs(request: service_pb2.ModelInferRequest) -> list[core.RequestedOutput] | None:
    """The request's `outputs` (None: all), with Triton's classification parameter."""
    if not request.outputs:
        return None
    outputs = []
    for output in request.outputs:
        if "shared_memory_region" in output.parameters:
            raise BadInput(f"output {output.name}: shared memory is not supported by this server")
        count = 0
        if "classification" in output.parameters:
            value = _parameter(output.parameters["classification"])
            count = _count(value, f"output {output.name} classification")
        outputs.append(core.RequestedOutput(output.name, count))
    return outputs


def top_k(request: service_pb2.ModelInferRequest) -> int | None:
    """The `top_k` request parameter, if given."""
    if core.TOP_K_PARAMETER not in request.parameters:
        return None
    value = _parameter(request.parameters[core.TOP_K_PARAMETER])
    return _count(value, core.TOP_K_PARAMETER)


def encode_response(
    model: str, version: str, request_id: str, outputs: dict[str, np.ndarray]
) -> service_pb2.ModelInferResponse:
    """A response with every output in `raw_output_contents`, as Triton answers."""
    response = service_pb2.ModelInferResponse(
        model_name=model, model_version=version, id=request_id
    )
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=tensors.datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(tensors.to_bytes(array))
    return response


def _tensor_metadata(spec: Any) -> service_pb2.ModelMetadataResponse.TensorMetadata:
    return service_pb2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=[-1, *spec.dims]
    )


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The OIP gRPC service over the data plane."""

    def __init__(self, dataplane: DataPlane, manager: ModelManager | None = None) -> None:
        self.dataplane = dataplane
        self.manager = manager
        self.settings: Settings = dataplane.settings

    @staticmethod
    def _authorization(context: grpc.aio.ServicerContext) -> str | None:
        header = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
        return header

    def _check_api_key(self, context: grpc.aio.ServicerContext) -> None:
        if self.settings.api_key is None:  # open: skip reading the metadata
            return
        checks.check_api_key(self.settings, self._authorization(context))

    def _admin(self, context: grpc.aio.ServicerContext) -> ModelManager:
        checks.check_admin(self.settings, self._authorization(context))
        if self.manager is None:
            raise AdminDisabled("repository control is not available on this server")
        return self.manager

    async def RepositoryIndex(
        self, request: service_pb2.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryIndexResponse:
        async def call() -> service_pb2.RepositoryIndexResponse:
            rows = self._admin(context).index()
            return service_pb2.RepositoryIndexResponse(
                models=[
                    service_pb2.RepositoryIndexResponse.ModelIndex(
                        name=r.name, version=r.version, state=r.state, reason=r.reason
                    )
                    for r in rows
                    if not request.ready or r.state == "READY"
                ]
            )

        return await self._answer(context, call)

    async def RepositoryModelLoad(
        self, request: service_pb2.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryModelLoadResponse:
        async def call() -> service_pb2.RepositoryModelLoadResponse:
            manager = self._admin(context)
            overrides = sorted(
                k for k in request.parameters if k == "config" or k.startswith("file:")
            )
            if overrides:
                raise BadInput(
                    f"load overrides {overrides} are not supported: write the files into the "
                    "repository and load again"
                )
            await manager.load(request.model_name)
            return service_pb2.RepositoryModelLoadResponse()

        return await self._answer(context, call)

    async def RepositoryModelUnload(
        self, request: service_pb2.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryModelUnloadResponse:
        async def call() -> service_pb2.RepositoryModelUnloadResponse:
            await self._admin(context).unload(request.model_name)
            return service_pb2.RepositoryModelUnloadResponse()

        return await self._answer(context, call)

    @staticmethod
    async def _answer(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run `call`; a gateway error aborts the RPC with its gRPC code (outside any tracking)."""
        try:
            return await call()
        except Exception as exc:
            await InferenceService._abort(context, exc)
        raise AssertionError("unreachable: abort raises")

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
        """End the RPC for `exc`: a gateway error with its gRPC code, anything else INTERNAL."""
        if isinstance(exc, ModelGateError):
            if "Retry-After" in exc.headers:
                context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
            await context.abort(exc.grpc_code, exc.message)
        log.error("gRPC call failed", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")

    async def ServerLive(
        self, request: service_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: service_pb2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerReadyResponse:
        readiness = await self.dataplane.ready()
        return service_pb2.ServerReadyResponse(ready=readiness.ready)

    async def ModelReady(
        self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelReadyResponse:
        try:
            spec = self.dataplane.model(request.name, request.version)
        except ModelNotFound:  # as Triton: an unknown model is simply not ready
            return service_pb2.ModelReadyResponse(ready=False)
        readiness = await self.dataplane.model_ready(spec)
        return service_pb2.ModelReadyResponse(ready=readiness.ready)

    async def ServerMetadata(
        self, request: service_pb2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(
            name=core.SERVER_NAME, version=__version__, extensions=core.SERVER_EXTENSIONS
        )

    async def ModelMetadata(
        self, request: service_pb2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelMetadataResponse:
        async def call() -> service_pb2.ModelMetadataResponse:
            self._check_api_key(context)
            metadata = core.model_metadata(self.dataplane.model(request.name, request.version))
            return service_pb2.ModelMetadataResponse(
                name=metadata.name,
                versions=metadata.versions,
                platform=metadata.platform,
                inputs=[_tensor_metadata(t) for t in metadata.inputs],
                outputs=[_tensor_metadata(t) for t in metadata.outputs],
            )

        return await self._answer(context, call)

    async def ModelConfig(
        self, request: service_pb2.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelConfigResponse:
        async def call() -> service_pb2.ModelConfigResponse:
            self._check_api_key(context)
            spec = self.dataplane.model(request.name, request.version)
            return service_pb2.ModelConfigResponse(config=spec.config)

        return await self._answer(context, call)

    async def ModelInfer(
        self, request: service_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        # The hot path: written out instead of going through `_answer` (one closure and one
        # coroutine less per request); errors end the same way.
        dataplane = self.dataplane
        try:
            # The servicer context carries the client's `traceparent` metadata (read only when
            # tracing is on).
            async with dataplane.track(
                request.model_name, "infer", "v2_grpc", None, context
            ) as scope:
                self._check_api_key(context)
                version = request.model_version or None
                spec = dataplane.model(request.model_name, version)
                if spec.name in dataplane.routing:  # only a routing policy can use it
                    scope.client_key = _metadata_value(context, CLIENT_HEADER)
                outputs = await core.infer(
                    dataplane,
                    spec.name,
                    version,
                    decode_inputs(request),
                    requested_outputs(request),
                    top_k(request),
                    scope,
                )
                answered = scope.spec or spec
                return encode_response(spec.name, answered.version, request.id, outputs)
        except Exception as exc:
            await self._abort(context, exc)
        raise AssertionError("unreachable: abort raises")


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """One invocation metadata value (keys arrive lower-case), or None."""
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def _unimplemented(method: str) -> Callable[..., Awaitable[None]]:
    async def handler(
        self: InferenceService, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported by this server"
        )

    handler.__name__ = method
    return handler


# Every RPC of the service that the class above does not answer gets a clean UNIMPLEMENTED
# (the generated base class would raise NotImplementedError inside the event loop).
for _method in SERVICE.methods:
    if _method.name not in InferenceService.__dict__:
        setattr(InferenceService, _method.name, _unimplemented(_method.name))


class _Unparsable:
    """Stands for a request message that could not be parsed."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _lenient(message: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError:
            return _Unparsable(message.DESCRIPTOR.full_name)

    return parse


def _guarded(behaviour: Callable[[Any, Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Unparsable):
            await context.abort(
                grpc.StatusCode.INTERNAL, f"cannot parse the request as {request.type_name}"
            )
        return await behaviour(request, context)

    return handle


def method_handlers(service: InferenceService) -> dict[str, grpc.RpcMethodHandler]:
    """The service's handlers, registered like the generated `add_..._to_server` does, except
    that a request that is not valid protobuf ends with INTERNAL (the gRPC spec's code for an
    unparsable request) and a message, not UNKNOWN and a logged traceback."""
    handlers = {}
    for method in SERVICE.methods:
        request = getattr(service_pb2, method.input_type.name)
        response = getattr(service_pb2, method.output_type.name)
        behaviour = getattr(service, method.name)
        if method.client_streaming or method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                behaviour,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _guarded(behaviour),
                request_deserializer=_lenient(request),
                response_serializer=response.SerializeToString,
            )
    return handlers


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_server(
    dataplane: DataPlane, manager: ModelManager | None = None
) -> grpc.aio.Server:
    """Start the gRPC server on `settings.host:settings.grpc_port` in the running event loop."""
    settings = dataplane.settings
    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        # Several uvicorn workers share the port; a single one must fail loudly if it is taken
        # (for example by a Triton on the same host) instead of silently splitting traffic.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    if settings.grpc_max_connection_age_s is not None:
        # A graceful GOAWAY per connection of that age: the client reconnects without failing
        # a call, through the load balancer, so connections spread over replicas and leave a
        # draining gateway within its drain window.
        options += [
            ("grpc.max_connection_age_ms", round(settings.grpc_max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.shutdown_grace_s * 1000)),
        ]
    server = grpc.aio.server(options=options)
    handlers = method_handlers(InferenceService(dataplane, manager))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
    address = _address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {exc}") from exc
    await server.start()
    log.info("OIP gRPC server listening on %s", address)
    return server
