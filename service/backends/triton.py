"""Triton backend: gRPC by default (HTTP selectable, through tritonclient's asyncio client).

Over gRPC the backend speaks the protocol itself on a `grpc.aio` channel: each model has a
prebuilt `ModelInferRequest` (names, datatypes, requested outputs) that a batch copies and fills
with shapes and `raw_input_contents`, and outputs are read straight from `raw_output_contents`.
That is the same wire message tritonclient sends, without its per-call `InferInput` objects,
request assembly and result wrapper, which cost the gateway noticeable CPU per batch.

Several Triton endpoints may be given; batches go to them round-robin, and a batch that finds
its endpoint unreachable is retried once on each other endpoint (inference is idempotent).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import grpc
import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from service.backends.base import InferenceBackend, Readiness
from service.errors import ModelLoadFailed, UpstreamError, UpstreamUnavailable, from_upstream
from service.model_contract import parse_config
from service.repository import ModelSpec

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0
# Loading a model in Triton starts its instances (a Python backend process each here).
LOAD_TIMEOUT_S = 120.0
# As tritonclient's gRPC client: no message size cap on the gateway side, keep-alive pings.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.keepalive_permit_without_calls", False),
    ("grpc.http2.max_pings_without_data", 2),
]


def _raw_contents(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        serialized = serialize_byte_tensor(array)
        return serialized.tobytes() if serialized.size else b""
    return np.ascontiguousarray(array).tobytes()


def _from_raw(raw: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    return np.frombuffer(raw, dtype=triton_to_np_dtype(datatype)).reshape(shape)


class TritonBackend(InferenceBackend):
    """Sends batches to one or more Triton servers."""

    def __init__(
        self,
        urls: list[str],
        protocol: Literal["grpc", "http"] = "grpc",
        timeout_s: float = 10.0,
        up_gauge: Any | None = None,
        trace_metadata: Callable[[], list[tuple[str, str]]] | None = None,
        config_name: str | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one Triton URL is needed")
        self.urls = list(urls)
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.replicas = len(self.urls)
        self._up_gauge = up_gauge  # prometheus Gauge with an `endpoint` label, or None
        # With tracing on: the current batch's `traceparent`, sent along so Triton's spans join
        # the request's trace (gRPC metadata / HTTP headers). None: tracing off.
        self._trace_metadata = trace_metadata
        self.config_name = config_name  # Triton's --model-config-name, if it has one
        self._clients: list[Any] = []  # gRPC: stubs; HTTP: tritonclient clients
        self._channels: list[grpc.aio.Channel] = []
        self._next = itertools.cycle(range(len(self.urls)))
        self._outputs: dict[str, list[Any]] = {}
        # One request template per (model, version): a batch never mixes versions.
        self._templates: dict[tuple[str, str], service_pb2.ModelInferRequest] = {}

    async def start(self) -> None:
        if self.protocol == "grpc":
            self._channels = [
                grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS) for url in self.urls
            ]
            self._clients = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in self._channels]
        else:
            self._clients = [
                httpaio.InferenceServerClient(url, conn_timeout=self.timeout_s) for url in self.urls
            ]

    async def close(self) -> None:
        for closable in (*self._channels, *([] if self._channels else self._clients)):
            try:
                await closable.close()
            except Exception:  # closing a dead connection must not block shutdown
                log.debug("closing a Triton connection failed", exc_info=True)
        self._clients = []
        self._channels = []

    def _grpc_request(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> service_pb2.ModelInferRequest:
        key = (spec.name, spec.version)
        template = self._templates.get(key)
        if template is None:  # the same for every batch of the version: built once
            template = service_pb2.ModelInferRequest(
                model_name=spec.name,
                model_version=spec.version,
                inputs=[{"name": t.name, "datatype": t.datatype} for t in spec.inputs],
                outputs=[{"name": o.name} for o in spec.outputs],
            )
            self._templates[key] = template
        request = service_pb2.ModelInferRequest()
        request.CopyFrom(template)
        for tensor, message in zip(spec.inputs, request.inputs, strict=True):
            array = inputs[tensor.name]
            message.shape.extend(array.shape)
            request.raw_input_contents.append(_raw_contents(array, tensor.datatype))
        return request

    def _http_request(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> tuple[list[Any], list[Any]]:
        infer_inputs = []
        for tensor in spec.inputs:
            array = inputs[tensor.name]
            item = httpclient.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        outputs = self._outputs.get(spec.name)
        if outputs is None:
            outputs = [
                httpclient.InferRequestedOutput(o.name, binary_data=True) for o in spec.outputs
            ]
            self._outputs[spec.name] = outputs
        return infer_inputs, outputs

    async def _call(self, client: Any, spec: ModelSpec, request: Any) -> dict[str, np.ndarray]:
        trace = self._trace_metadata() if self._trace_metadata is not None else None
        if self.protocol == "grpc":
            response = await client.ModelInfer(request, timeout=self.timeout_s, metadata=trace)
            raw = response.raw_output_contents
            return {
                o.name: _from_raw(raw[i], o.datatype, list(o.shape))
                for i, o in enumerate(response.outputs)
            }
        infer_inputs, outputs = request
        result = await asyncio.wait_for(
            client.infer(
                spec.name,
                infer_inputs,
                model_version=spec.version,
                outputs=outputs,
                headers=dict(trace) if trace else None,
            ),
            self.timeout_s,
        )
        return {o.name: result.as_numpy(o.name) for o in spec.outputs}

    async def infer(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        if not self._clients:
            raise UpstreamUnavailable("Triton client is not started")
        request = (
            self._grpc_request(spec, inputs)
            if self.protocol == "grpc"
            else self._http_request(spec, inputs)
        )
        first = next(self._next)
        error: Exception | None = None
        for attempt in range(len(self._clients)):
            index = (first + attempt) % len(self._clients)
            try:
                outputs = await self._call(self._clients[index], spec, request)
            except Exception as exc:
                error = from_upstream(exc)
                if isinstance(error, UpstreamUnavailable):
                    self._set_up(index, False)
                if isinstance(error, UpstreamUnavailable) and attempt + 1 < len(self._clients):
                    log.warning("Triton %s unavailable, trying the next endpoint", self.urls[index])
                    continue
                raise error from exc
            self._set_up(index, True)
            missing = [o.name for o in spec.outputs if o.name not in outputs]
            if missing:
                raise UpstreamError(f"inference server answered without outputs {missing}")
            return outputs
        assert error is not None
        raise error

    # -- repository control (Triton in explicit model-control mode) -------------------------------

    async def load(self, name: str, specs: Sequence[ModelSpec], keep: Sequence[str]) -> None:
        """Triton's load with the model's config and a `specific` version policy naming exactly
        the versions to serve: Triton loads new ones beside the loaded ones, which keep
        answering, and unloads the rest once the new ones are ready. The config travels with the
        call, so Triton serves the versions the gateway validated, not what the disk holds by
        the time it looks."""
        if not specs:
            raise ValueError("load needs the spec of at least one version")
        config = self._config_of(specs[0])
        versions = sorted({int(s.version) for s in specs} | {int(v) for v in keep})
        config.version_policy.Clear()
        config.version_policy.specific.versions.extend(versions)
        document = json_format.MessageToJson(config, preserving_proto_field_name=True)
        for key in [k for k in self._templates if k[0] == name]:
            del self._templates[key]  # the inputs may have changed
        await self._control(
            name, lambda client: self._load_call(client, name, document), "load", versions
        )

    def _config_of(self, spec: ModelSpec) -> model_config_pb2.ModelConfig:
        """The config Triton itself would read: `configs/<config_name>.pbtxt` where it exists."""
        config = model_config_pb2.ModelConfig()
        named = spec.path / "configs" / f"{self.config_name}.pbtxt" if self.config_name else None
        if named is not None and named.is_file():
            try:
                config.CopyFrom(parse_config(named))
            except (OSError, text_format.ParseError) as exc:
                raise ModelLoadFailed(f"{named}: {exc}") from exc
        else:
            config.CopyFrom(spec.config)
        return config

    async def unload(self, name: str) -> None:
        await self._control(name, lambda client: self._unload_call(client, name), "unload", [])

    async def _load_call(self, client: Any, name: str, config: str) -> None:
        if self.protocol == "grpc":
            request = service_pb2.RepositoryModelLoadRequest(model_name=name)
            request.parameters["config"].string_param = config
            await client.RepositoryModelLoad(request, timeout=LOAD_TIMEOUT_S)
        else:
            await asyncio.wait_for(client.load_model(name, config=config), LOAD_TIMEOUT_S)

    async def _unload_call(self, client: Any, name: str) -> None:
        if self.protocol == "grpc":
            request = service_pb2.RepositoryModelUnloadRequest(model_name=name)
            await client.RepositoryModelUnload(request, timeout=LOAD_TIMEOUT_S)
        else:
            await asyncio.wait_for(client.unload_model(name), LOAD_TIMEOUT_S)

    async def _control(self, name: str, call: Any, what: str, versions: list[int]) -> None:
        if not self._clients:
            raise UpstreamUnavailable("Triton client is not started")
        for url, client in zip(self.urls, self._clients, strict=True):
            try:
                await call(client)
            except Exception as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                raise ModelLoadFailed(
                    f"Triton {url} could not {what} {name}"
                    f"{f' versions {versions}' if versions else ''}: {detail}"
                ) from exc
            log.info("Triton %s: %s %s %s", url, what, name, versions or "")

    def _set_up(self, index: int, up: bool) -> None:
        if self._up_gauge is not None:
            self._up_gauge.labels(endpoint=self.urls[index]).set(1 if up else 0)

    async def _check(self, index: int, specs: list[ModelSpec]) -> str:
        client = self._clients[index]
        try:
            if self.protocol == "grpc":
                live_answer = await client.ServerLive(
                    service_pb2.ServerLiveRequest(), timeout=HEALTH_TIMEOUT_S
                )
                live = live_answer.live
            else:
                live = await asyncio.wait_for(client.is_server_live(), HEALTH_TIMEOUT_S)
            if not live:
                return "server not live"
            missing = []
            for spec in specs:
                if self.protocol == "grpc":
                    answer = await client.ModelReady(
                        service_pb2.ModelReadyRequest(name=spec.name, version=spec.version),
                        timeout=HEALTH_TIMEOUT_S,
                    )
                    ready = answer.ready
                else:
                    ready = await asyncio.wait_for(
                        client.is_model_ready(spec.name, spec.version), HEALTH_TIMEOUT_S
                    )
                if not ready:
                    missing.append(f"{spec.name} v{spec.version}")
            return f"models not ready: {', '.join(missing)}" if missing else ""
        except Exception as exc:
            return f"unreachable ({from_upstream(exc).message})"

    async def readiness(self, specs: list[ModelSpec]) -> Readiness:
        if not self._clients:
            return Readiness(False, "Triton client is not started")
        problems = await asyncio.gather(*(self._check(i, specs) for i in range(len(self._clients))))
        endpoints = {url: not problem for url, problem in zip(self.urls, problems, strict=True)}
        for index, up in enumerate(endpoints.values()):
            self._set_up(index, up)
        if any(endpoints.values()):
            return Readiness(True, "", endpoints)
        reason = "; ".join(f"Triton {url}: {p}" for url, p in zip(self.urls, problems, strict=True))
        return Readiness(False, reason, endpoints)
