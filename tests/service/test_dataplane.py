"""The transport-neutral core against the real Triton: tensor passthrough and raw payloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from service.backends.triton import TritonBackend
from service.dataplane import DataPlane
from service.errors import BadInput, ModelNotFound
from service.local_triton import LocalTriton
from service.metrics import Metrics
from service.repository import load_repository_versions
from service.settings import Settings

pytestmark = [pytest.mark.triton]


def direct_logits(url: str, inputs: dict[str, np.ndarray], model: str) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    items = []
    for name, array in inputs.items():
        datatype = "INT64" if array.dtype == np.int64 else "FP32"
        item = grpcclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        items.append(item)
    logits = client.infer(model, items).as_numpy("LOGITS")
    client.close()
    assert logits is not None
    return logits


def test_tensor_passthrough_and_validation(
    triton_server: LocalTriton, model_repository: Path
) -> None:
    ids = np.array([[5, 17, 230, 41, 0, 0], [9, 8, 7, 6, 5, 4]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    expected = direct_logits(
        triton_server.grpc_url, {"INPUT_IDS": ids, "ATTENTION_MASK": mask}, "langid_transformer"
    )

    async def scenario() -> None:
        settings = Settings(model_repository=model_repository, triton_url=triton_server.grpc_url)
        specs = load_repository_versions(model_repository)
        metrics = Metrics(specs)
        backend = TritonBackend(settings.triton_urls, "grpc", settings.triton_timeout_s)
        dataplane = DataPlane(settings, specs, backend, metrics)
        await dataplane.start()
        try:
            out = await dataplane.infer_tensors(
                "langid_transformer", "1", {"INPUT_IDS": ids, "ATTENTION_MASK": mask}, "v2_grpc"
            )
            np.testing.assert_allclose(out["LOGITS"], expected, atol=1e-4)

            good = {"INPUT_IDS": ids, "ATTENTION_MASK": mask}
            bad_cases = [
                ({"INPUT_IDS": ids}, "missing"),
                ({**good, "EXTRA": ids}, "unexpected"),
                ({**good, "INPUT_IDS": ids.astype(np.int32)}, "must be INT64"),
                ({**good, "INPUT_IDS": ids[0]}, "shape"),
                ({**good, "ATTENTION_MASK": mask[:1]}, "same batch size"),
                ({"INPUT_IDS": np.zeros((65, 4), np.int64),
                  "ATTENTION_MASK": np.ones((65, 4), np.int64)}, "rows"),
            ]  # fmt: skip
            for inputs, message in bad_cases:
                with pytest.raises(BadInput, match=message):
                    await dataplane.infer_tensors("langid_transformer", None, inputs, "v2_http")
            image = np.zeros((1, 1, 27, 28), np.float32)
            with pytest.raises(BadInput, match="dim 2 must be 28"):
                await dataplane.infer_tensors("digits_cnn", None, {"IMAGE": image})
            with pytest.raises(ModelNotFound):
                await dataplane.infer_tensors("langid_transformer", "7", good)
            result = await dataplane.predict("langid_transformer", ["god morgon"], 2, "v2_grpc")
            assert len(result.predictions) == 1 and len(result.predictions[0]["top_k"]) == 2
        finally:
            await dataplane.close()

        def count(
            endpoint: str, protocol: str, status_class: str, version: str = "1"
        ) -> float | None:
            return metrics.registry.get_sample_value(
                "modelgate_requests_total",
                {"model": "langid_transformer", "version": version, "endpoint": endpoint,
                 "protocol": protocol, "status_class": status_class},
            )  # fmt: skip

        assert count("infer", "v2_grpc", "2xx") == 1
        assert count("infer", "v2_http", "4xx") == 6  # six invalid tensors of version 1
        assert count("infer", "v2_http", "4xx", version="none") == 1  # unknown version 7
        assert count("predict", "v2_grpc", "2xx") == 1

    asyncio.run(scenario())
