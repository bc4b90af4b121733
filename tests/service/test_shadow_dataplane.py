"""Shadow copies inside the data plane (in-process ONNX Runtime): a shadow version with its own
preprocessing decodes the payload again with it; one that preprocesses alike reuses the
primary's tensors; a full queue drops the copy and the primary still answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry

from service import preprocess
from service.backends.embedded import EmbeddedBackend
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.model_contract import PREPROCESSING_FILE, ROUTING_FILE
from service.repository import load_model_versions, load_repository_versions
from service.settings import Settings
from tests.service.rest.payloads import digit_pngs
from tests.service.versioned_repository import MODEL, add_version, copy_model, set_version_policy

PAIR = {"model": MODEL, "primary": "1", "shadow": "2"}


def two_versions(root: Path, own_preprocessing: bool) -> Path:
    model_dir = copy_model(Path("model_repository"), root)
    add_version(model_dir, 2, seed=2, labels=tuple(str(i) for i in range(10)))
    set_version_policy(model_dir, "latest { num_versions: 2 }")
    if own_preprocessing:  # version 2 normalises differently: its tensors are not version 1's
        pre = json.loads((model_dir / PREPROCESSING_FILE).read_text())
        pre["image"]["mean"] = [0.5]
        pre["image"]["std"] = [0.5]
        (model_dir / "2" / PREPROCESSING_FILE).write_text(json.dumps(pre))
    (model_dir / ROUTING_FILE).write_text(json.dumps({"weights": {"1": 100}, "shadow": "2"}))
    return root


def offline(root: Path, images: list[bytes]) -> dict[str, np.ndarray]:
    """Each version's probabilities: its own preprocessing, its own ONNX file, one at a time."""
    probabilities = {}
    for version, spec in load_model_versions(root / MODEL).items():
        pre = preprocess.for_model(spec, max_image_pixels=10**8)
        session = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
        rows = [
            session.run(
                [spec.output], {k: v[None] for k, v in pre.preprocess(pre.decode(i)).items()}
            )[0]
            for i in images
        ]
        logits = np.concatenate(rows).astype(np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities[version] = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def dataplane(root: Path, **settings: object) -> tuple[DataPlane, CollectorRegistry]:
    config = Settings(model_repository=root, backend="embedded", **settings)  # type: ignore[arg-type]
    specs = load_repository_versions(root)
    metrics = Metrics(specs)
    backend = EmbeddedBackend([s for v in specs.values() for s in v.values()], threads=1)
    return DataPlane(config, specs, backend, metrics), metrics.registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("own_preprocessing", [False, True], ids=["shared", "own"])
def test_shadow_agreement_uses_each_versions_own_preprocessing(
    tmp_path: Path, own_preprocessing: bool
) -> None:
    root = two_versions(tmp_path / "repository", own_preprocessing)
    images = digit_pngs(count=24)[0]
    reference = offline(root, images)
    plane, registry = dataplane(root)

    async def scenario() -> list[str]:
        await plane.start()
        try:
            versions = []
            for image in images:
                result = await plane.predict(MODEL, [image], top_k=1)
                versions.append(result.version)
            for _ in range(200):  # the copies finish after the answers
                if value(registry, "modelgate_shadow_compared_total", **PAIR) >= len(images):
                    break
                await asyncio.sleep(0.01)
            return versions
        finally:
            await plane.close()

    assert asyncio.run(scenario()) == ["1"] * len(images)
    p, q = reference["1"], reference["2"]
    assert value(registry, "modelgate_shadow_compared_total", **PAIR) == len(images)
    agree = int(np.count_nonzero(p.argmax(axis=1) == q.argmax(axis=1)))
    assert value(registry, "modelgate_shadow_top1_agree_total", **PAIR) == agree
    assert value(registry, "modelgate_shadow_abs_diff_sum", **PAIR) == pytest.approx(
        float(np.abs(p - q).mean(axis=1).sum()), abs=1e-4
    )


def test_a_full_queue_drops_the_copy_not_the_request(tmp_path: Path) -> None:
    """64 requests at once, one row per batch: while more than a quarter of the queue waits, a
    copy is dropped and counted; once it drains, copies run. Every request is answered."""
    root = two_versions(tmp_path / "repository", own_preprocessing=False)
    images = digit_pngs(count=8)[0]
    plane, registry = dataplane(
        root,
        max_batch_size=1,
        max_queue_size=64,
        shadow_queue_fraction=0.25,
        shadow_max_inflight=1000,
    )

    async def scenario() -> list[str]:
        await plane.start()
        try:
            answers = await asyncio.gather(
                *(plane.predict(MODEL, [images[i % len(images)]], top_k=1) for i in range(64))
            )
            await asyncio.sleep(0.2)
            return [a.version for a in answers]
        finally:
            await plane.close()

    assert asyncio.run(scenario()) == ["1"] * 64
    dropped = value(registry, "modelgate_shadow_dropped_total", model=MODEL, reason="queue")
    compared = value(registry, "modelgate_shadow_compared_total", **PAIR)
    assert dropped > 0 and compared > 0, (dropped, compared)
    assert dropped + compared == 64
