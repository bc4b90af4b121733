"""Read the Triton model repository: config.pbtxt, preprocessing.json, labels and tokenizer.

The repository is the single source of model-specific facts; adding a model there needs no
code change here. Problems are reported at startup as `RepositoryError` with the file at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from service.model_contract import (
    CONFIG_FILE,
    LABELS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    TensorSpec,
    is_model_dir,
    parse_config,
    version_dirs,
)

PayloadKind = Literal["image", "text", "sequence"]


class RepositoryError(Exception):
    """The model repository is missing something or is inconsistent."""


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes the model's input tensor (see docs/architecture.md)."""

    input: str
    height: int
    width: int
    channels: int
    color_mode: str
    resample: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    invert: bool = False


@dataclass(frozen=True)
class TextSpec:
    """How a string becomes token ids and an attention mask."""

    input_ids: str
    attention_mask: str
    tokenizer_file: str
    max_length: int
    pad_id: int = 0
    lowercase: bool = False


@dataclass(frozen=True)
class SequenceSpec:
    """How a list of timesteps becomes a normalised, masked sequence tensor."""

    input: str
    mask: str
    channels: int
    min_length: int
    max_length: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class ModelSpec:
    """Everything the gateway knows about one model."""

    name: str
    version: str
    versions: tuple[str, ...]
    path: Path
    kind: PayloadKind
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output: str  # the logits output the friendly API post-processes
    labels: tuple[str, ...]
    max_batch_size: int
    max_queue_delay_us: int
    image: ImageSpec | None = None
    text: TextSpec | None = None
    sequence: SequenceSpec | None = None
    config: model_config_pb2.ModelConfig = field(default_factory=model_config_pb2.ModelConfig)

    @property
    def onnx_path(self) -> Path:
        """The served version's ONNX file."""
        return self.path / self.version / self.config.default_model_filename

    def contract(self) -> dict[str, Any]:
        """The input contract clients see in `GET /v1/models`."""
        payload: dict[str, Any] = {"kind": self.kind}
        if self.image is not None:
            payload.update(
                formats="any Pillow-readable image (PNG, JPEG, ...), multipart `files` or base64",
                resized_to=[self.image.height, self.image.width],
                color_mode=self.image.color_mode,
            )
        if self.text is not None:
            payload.update(format="UTF-8 string", max_tokens=self.text.max_length)
        if self.sequence is not None:
            payload.update(
                format="list of timesteps, each a list of floats",
                channels=self.sequence.channels,
                min_length=self.sequence.min_length,
                max_length=self.sequence.max_length,
            )
        return {
            "name": self.name,
            "version": self.version,
            "versions": list(self.versions),
            "payload": payload,
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "labels": list(self.labels),
            "max_batch_size": self.max_batch_size,
        }


def _tensors(items: Any) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_config(t) for t in items)


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a config.pbtxt with Triton's own protobuf schema."""
    try:
        return parse_config(path)
    except (OSError, text_format.ParseError) as exc:
        raise RepositoryError(f"{path}: {exc}") from exc


def _block(path: Path, data: dict[str, Any], key: str, cls: type[Any]) -> Any:
    block = data.get(key)
    if not isinstance(block, dict):
        raise RepositoryError(f"{path}: kind is {key!r} but the {key!r} block is missing")
    try:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}
        return cls(**values)
    except TypeError as exc:
        raise RepositoryError(f"{path}: {key} block: {exc}") from exc


def load_model(model_dir: Path) -> ModelSpec:
    """Read one model directory."""
    config = read_config(model_dir / CONFIG_FILE)
    name = config.name or model_dir.name
    if name != model_dir.name:
        raise RepositoryError(f"{model_dir}: config name {name!r} differs from the directory name")
    versions = [str(v) for v in version_dirs(model_dir)]
    if not versions:
        raise RepositoryError(f"{model_dir}: no numeric version directory")
    if not config.default_model_filename:
        config.default_model_filename = MODEL_FILE

    pre_path = model_dir / PREPROCESSING_FILE
    try:
        pre = json.loads(pre_path.read_text())
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{pre_path}: {exc}") from exc
    kind = pre.get("kind")
    if kind not in ("image", "text", "sequence"):
        raise RepositoryError(f"{pre_path}: kind must be image, text or sequence, not {kind!r}")

    labels_path = model_dir / pre.get("labels_file", LABELS_FILE)
    try:
        labels = tuple(
            line.strip() for line in labels_path.read_text().splitlines() if line.strip()
        )
    except OSError as exc:
        raise RepositoryError(f"{labels_path}: {exc}") from exc

    outputs = _tensors(config.output)
    output = str(pre.get("output", "LOGITS"))
    if output not in {o.name for o in outputs}:
        raise RepositoryError(f"{pre_path}: output {output!r} is not an output of {name}")
    delay = 0
    if config.HasField("dynamic_batching"):
        delay = int(config.dynamic_batching.max_queue_delay_microseconds)

    spec = ModelSpec(
        name=name,
        version=versions[-1],
        versions=tuple(versions),
        path=model_dir,
        kind=kind,
        inputs=_tensors(config.input),
        outputs=outputs,
        output=output,
        labels=labels,
        max_batch_size=int(config.max_batch_size),
        max_queue_delay_us=delay,
        config=config,
    )
    if kind == "image":
        spec.image = _block(pre_path, pre, "image", ImageSpec)
        wanted = [spec.image.input]
    elif kind == "text":
        spec.text = _block(pre_path, pre, "text", TextSpec)
        wanted = [spec.text.input_ids, spec.text.attention_mask]
        if not (model_dir / spec.text.tokenizer_file).is_file():
            raise RepositoryError(
                f"{model_dir}: tokenizer file {spec.text.tokenizer_file} is missing"
            )
    else:
        spec.sequence = _block(pre_path, pre, "sequence", SequenceSpec)
        wanted = [spec.sequence.input, spec.sequence.mask]
    names = {t.name for t in spec.inputs}
    if set(wanted) != names:
        raise RepositoryError(
            f"{pre_path}: inputs {sorted(wanted)} do not match config {sorted(names)}"
        )
    if spec.max_batch_size < 1:
        raise RepositoryError(f"{model_dir}: the gateway batches, so max_batch_size must be >= 1")
    n_classes = outputs[[o.name for o in outputs].index(output)].dims[-1]
    if n_classes > 0 and n_classes != len(labels):
        raise RepositoryError(f"{labels_path}: {len(labels)} labels for {n_classes} outputs")
    return spec


def load_repository(root: Path) -> dict[str, ModelSpec]:
    """Read every model under `root` (directories with a config.pbtxt)."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a directory")
    models = {d.name: load_model(d) for d in sorted(root.iterdir()) if is_model_dir(d)}
    if not models:
        raise RepositoryError(f"model repository {root} holds no model (no */config.pbtxt)")
    return models
