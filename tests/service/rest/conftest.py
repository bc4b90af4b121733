"""A real gateway (uvicorn on a free port, in a thread) in front of the real local Triton."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import uvicorn

from service import preprocess
from service.app import create_app
from service.local_triton import LocalTriton, free_port
from service.repository import ModelSpec, load_repository
from service.settings import Settings


class RunningGateway:
    """The gateway app served by uvicorn on a real port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.grpc_url = f"127.0.0.1:{settings.grpc_port}"

    @classmethod
    def on_free_ports(cls, **settings: Any) -> RunningGateway:
        """A gateway with `settings` (field names) on free HTTP and gRPC ports, not started yet."""
        return cls(Settings(**{"port": free_port(), "grpc_port": free_port(), **settings}))

    def start(self) -> RunningGateway:
        self.thread.start()
        give_up = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > give_up:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


GatewayFactory = Callable[..., RunningGateway]


@contextlib.contextmanager
def gateway_factory(defaults: Mapping[str, Any]) -> Iterator[GatewayFactory]:
    """Starts gateways with `defaults` updated by each call's settings; stops them all on exit."""
    started: list[RunningGateway] = []

    def start(**overrides: Any) -> RunningGateway:
        gateway = RunningGateway.on_free_ports(**{**defaults, **overrides}).start()
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def start_gateway(triton_server: LocalTriton, model_repository: Path) -> Iterator[GatewayFactory]:
    """Start gateways with setting overrides (in front of the session's Triton by default)."""
    defaults = {"model_repository": model_repository, "triton_url": triton_server.grpc_url}
    with gateway_factory(defaults) as start:
        yield start


@pytest.fixture(scope="module")
def gateway(triton_server: LocalTriton, model_repository: Path) -> Iterator[RunningGateway]:
    """One gateway with default settings, shared by a test module."""
    running = RunningGateway.on_free_ports(
        model_repository=model_repository, triton_url=triton_server.grpc_url
    ).start()
    yield running
    running.stop()


class OnnxReference:
    """The repository's ONNX files run directly by ONNX Runtime on preprocessed payloads."""

    def __init__(self, repository: Path) -> None:
        self.specs = load_repository(repository)
        self._sessions: dict[str, ort.InferenceSession] = {}

    def spec(self, model: str) -> ModelSpec:
        return self.specs[model]

    def tensors(self, model: str, payload: Any) -> dict[str, np.ndarray]:
        pre = preprocess.for_model(self.specs[model], max_image_pixels=10**8)
        return pre.preprocess(pre.decode(payload))

    def probabilities(self, model: str, payload: Any) -> np.ndarray:
        """Softmax of the model's logits for one payload, run unbatched and unpadded."""
        spec = self.specs[model]
        if model not in self._sessions:
            self._sessions[model] = ort.InferenceSession(
                str(spec.onnx_path), providers=["CPUExecutionProvider"]
            )
        feed = {k: v[None, ...] for k, v in self.tensors(model, payload).items()}
        (logits,) = self._sessions[model].run([spec.output], feed)
        shifted = np.exp(logits[0] - logits[0].max())
        return shifted / shifted.sum()

    def label_probabilities(self, model: str, payload: Any) -> dict[str, float]:
        probs = self.probabilities(model, payload)
        return dict(zip(self.specs[model].labels, probs.tolist(), strict=True))


@pytest.fixture(scope="session")
def onnx_reference(model_repository: Path) -> OnnxReference:
    return OnnxReference(model_repository)
