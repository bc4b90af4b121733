"""Model repositories with several versions of a real model, made cheaply for the tests.

A second version is the committed digits_cnn export with every float weight perturbed by seeded
noise (onnx's own reader and writer, the graph unchanged): a real, valid ONNX model whose answers
differ from version 1's. It carries its own labels, as `modelgate build --new-version` writes
them, so a test can tell which version answered from the labels alone too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service import preprocess
from service.model_contract import CONFIG_FILE, LABELS_FILE, MODEL_FILE, parse_config
from service.repository import ModelSpec, load_model_versions
from training.repository import render_config

MODEL = "digits_cnn"
# Version 2's labels: the digit names, so an answer names the version that produced it.
V2_LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def perturbed_onnx(source: Path, seed: int, scale: float = 0.8) -> bytes:
    """`source` with each float weight tensor plus N(0, scale * its std) noise."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(seed)
    for tensor in model.graph.initializer:
        weights = numpy_helper.to_array(tensor)
        if weights.dtype != np.float32 or weights.size < 2:
            continue  # shapes, scalars
        noise = rng.normal(0.0, scale * float(weights.std()) + 1e-6, weights.shape)
        tensor.CopyFrom(numpy_helper.from_array((weights + noise).astype(np.float32), tensor.name))
    return model.SerializeToString()


def copy_model(source_repository: Path, target_repository: Path, model: str = MODEL) -> Path:
    """Copy one model directory (config, version 1, model-level files) into a new repository."""
    target = target_repository / model
    shutil.copytree(source_repository / model, target)
    return target


def add_version(model_dir: Path, version: int, seed: int, labels: tuple[str, ...]) -> Path:
    """Write version `version`: perturbed version-1 weights and its own labels.txt.

    The ONNX file is written to a temporary name and renamed, as a careful deployment would, so a
    watcher never sees half a file.
    """
    version_dir = model_dir / str(version)
    staging = model_dir.parent / f".staging-{model_dir.name}-{version}"
    staging.mkdir()
    (staging / MODEL_FILE).write_bytes(perturbed_onnx(model_dir / "1" / MODEL_FILE, seed))
    (staging / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels))
    staging.rename(version_dir)
    return version_dir


def set_version_policy(model_dir: Path, policy: str) -> None:
    """Rewrite config.pbtxt with `policy` (text format, e.g. `latest { num_versions: 2 }`)."""
    from google.protobuf import text_format

    config = parse_config(model_dir / CONFIG_FILE)
    config.ClearField("version_policy")
    text_format.Parse(policy, config.version_policy)
    (model_dir / CONFIG_FILE).write_text(render_config(config), encoding="utf-8")


class VersionReference:
    """Each version's own ONNX file run by ONNX Runtime after that version's preprocessing."""

    def __init__(self, model_dir: Path) -> None:
        self.specs: dict[str, ModelSpec] = load_model_versions(model_dir)
        self._sessions = {
            v: ort.InferenceSession(str(s.onnx_path), providers=["CPUExecutionProvider"])
            for v, s in self.specs.items()
        }

    def probabilities(self, version: str, payload: bytes) -> dict[str, float]:
        """Label -> softmax probability for one payload, unbatched."""
        spec = self.specs[version]
        pre = preprocess.for_model(spec, max_image_pixels=10**8)
        feed = {k: v[None, ...] for k, v in pre.preprocess(pre.decode(payload)).items()}
        (logits,) = self._sessions[version].run([spec.output], feed)
        shifted = np.exp(logits[0] - logits[0].max())
        return dict(zip(spec.labels, (shifted / shifted.sum()).tolist(), strict=True))
