"""Triton backend: tritonclient asyncio clients (gRPC by default, HTTP selectable).

Several Triton endpoints may be given; batches go to them round-robin, and a batch that finds
its endpoint unreachable is retried once on each other endpoint (inference is idempotent).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

from service.backends.base import InferenceBackend, Readiness
from service.errors import UpstreamUnavailable, from_upstream
from service.repository import ModelSpec

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0


class TritonBackend(InferenceBackend):
    """Sends batches to one or more Triton servers."""

    def __init__(
        self,
        urls: list[str],
        protocol: Literal["grpc", "http"] = "grpc",
        timeout_s: float = 10.0,
        up_gauge: Any | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one Triton URL is needed")
        self.urls = list(urls)
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.replicas = len(self.urls)
        self._up_gauge = up_gauge  # prometheus Gauge with an `endpoint` label, or None
        self._clients: list[Any] = []
        self._next = itertools.cycle(range(len(self.urls)))
        self._outputs: dict[str, list[Any]] = {}

    async def start(self) -> None:
        if self.protocol == "grpc":
            self._clients = [grpcaio.InferenceServerClient(url) for url in self.urls]
        else:
            self._clients = [
                httpaio.InferenceServerClient(url, conn_timeout=self.timeout_s) for url in self.urls
            ]

    async def close(self) -> None:
        for client in self._clients:
            try:
                await client.close()
            except Exception:  # closing a dead connection must not block shutdown
                log.debug("closing Triton client failed", exc_info=True)
        self._clients = []

    def _request(
        self, inputs: Mapping[str, np.ndarray], spec: ModelSpec
    ) -> tuple[list[Any], list[Any]]:
        module: Any = grpcclient if self.protocol == "grpc" else httpclient
        infer_inputs = []
        for tensor in spec.inputs:
            array = inputs[tensor.name]
            item = module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array)
            infer_inputs.append(item)
        outputs = self._outputs.get(spec.name)
        if outputs is None:  # the same for every batch of the model: built once
            if self.protocol == "grpc":
                outputs = [grpcclient.InferRequestedOutput(o.name) for o in spec.outputs]
            else:
                outputs = [
                    httpclient.InferRequestedOutput(o.name, binary_data=True) for o in spec.outputs
                ]
            self._outputs[spec.name] = outputs
        return infer_inputs, outputs

    async def _call(
        self, client: Any, spec: ModelSpec, inputs: list[Any], outputs: list[Any]
    ) -> Any:
        if self.protocol == "grpc":
            return await client.infer(
                spec.name,
                inputs,
                model_version=spec.version,
                outputs=outputs,
                client_timeout=self.timeout_s,
            )
        return await asyncio.wait_for(
            client.infer(spec.name, inputs, model_version=spec.version, outputs=outputs),
            self.timeout_s,
        )

    async def infer(
        self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        if not self._clients:
            raise UpstreamUnavailable("Triton client is not started")
        infer_inputs, outputs = self._request(inputs, spec)
        first = next(self._next)
        error: Exception | None = None
        for attempt in range(len(self._clients)):
            index = (first + attempt) % len(self._clients)
            try:
                result = await self._call(self._clients[index], spec, infer_inputs, outputs)
            except Exception as exc:
                error = from_upstream(exc)
                if isinstance(error, UpstreamUnavailable):
                    self._set_up(index, False)
                if isinstance(error, UpstreamUnavailable) and attempt + 1 < len(self._clients):
                    log.warning("Triton %s unavailable, trying the next endpoint", self.urls[index])
                    continue
                raise error from exc
            self._set_up(index, True)
            return {o.name: result.as_numpy(o.name) for o in spec.outputs}
        assert error is not None
        raise error

    def _set_up(self, index: int, up: bool) -> None:
        if self._up_gauge is not None:
            self._up_gauge.labels(endpoint=self.urls[index]).set(1 if up else 0)

    async def _check(self, index: int, specs: list[ModelSpec]) -> str:
        client = self._clients[index]
        kwargs = {"client_timeout": HEALTH_TIMEOUT_S} if self.protocol == "grpc" else {}
        try:
            live = await asyncio.wait_for(client.is_server_live(**kwargs), HEALTH_TIMEOUT_S)
            if not live:
                return "server not live"
            missing = []
            for spec in specs:
                ready = await asyncio.wait_for(
                    client.is_model_ready(spec.name, spec.version, **kwargs), HEALTH_TIMEOUT_S
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
