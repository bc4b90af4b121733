"""Read the Triton model repository: config.pbtxt, preprocessing.json, labels and tokenizer.

The repository is the single source of model-specific facts; adding a model there needs no
code change here. Problems are reported at startup as `RepositoryError` with the file at fault.

Versions: the config's `version_policy` decides which numeric version directories are served,
with Triton's semantics (`latest { num_versions: n }`, `all`, `specific { versions: [...] }`;
no policy means latest 1), so the gateway serves exactly the set Triton loads. Each served version
is one `ModelSpec`. A version directory may carry its own preprocessing.json, labels and
tokenizer (`<model>/<version>/preprocessing.json`, ...); a file it does not carry is read from
the model directory, which is the layout of repositories written before versions had their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from service.model_contract import (
    CONFIG_FILE,
    LABELS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    TensorSpec,
    artifact_path,
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
    # "resize": stretch the whole image to height x width. "digit": MNIST-style normalisation
    # (service/preprocess/digit.py): bright ink on dark ground, cropped to the ink, scaled into a
    # digit_box square keeping aspect, centred by centre of mass; `invert` is then ignored.
    layout: str = "resize"
    digit_box: int = 20
    # Ink is what stands above the background by more than noise_sigmas robust standard
    # deviations of the border (at most max_noise grey levels each: a busy photo's border is
    # not paper noise); less than min_contrast grey levels of ink means "no ink".
    noise_sigmas: float = 4.0
    max_noise: float = 16.0
    min_contrast: float = 24.0
    # Pixels brighter than this fraction of the brightest ink define the ink's bounding box.
    ink_threshold: float = 0.15


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
    """Everything the gateway knows about one served version of a model."""

    name: str
    version: str
    versions: tuple[str, ...]  # every served version of the model, ascending
    path: Path  # the model directory (`<repository>/<name>`)
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
    def version_dir(self) -> Path:
        """This version's directory (`<model>/<version>`)."""
        return self.path / self.version

    @property
    def onnx_path(self) -> Path:
        """This version's ONNX file."""
        return self.version_dir / self.config.default_model_filename

    def artifact(self, filename: str) -> Path:
        """A preprocessing/labels/tokenizer file of this version (see `artifact_path`)."""
        return artifact_path(self.path, self.version, filename)

    def contract(self) -> dict[str, Any]:
        """The input contract clients see in `GET /v1/models`."""
        payload: dict[str, Any] = {"kind": self.kind}
        if self.image is not None:
            payload.update(
                formats="any Pillow-readable image (PNG, JPEG, ...), multipart `files` or base64",
                resized_to=[self.image.height, self.image.width],
                color_mode=self.image.color_mode,
                layout=self.image.layout,
            )
            if self.image.layout == "digit":
                payload["note"] = (
                    "one digit, dark on light or light on dark, any size and position "
                    "(centred MNIST-style); an image with no ink is refused"
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


PayloadSpec = TypeVar("PayloadSpec", ImageSpec, TextSpec, SequenceSpec)


def spec_from_block(cls: type[PayloadSpec], block: dict[str, Any]) -> PayloadSpec:
    """A payload spec from its preprocessing.json block (JSON lists become tuples)."""
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}
    return cls(**values)


def _block(path: Path, data: dict[str, Any], key: str, cls: type[Any]) -> Any:
    block = data.get(key)
    if not isinstance(block, dict):
        raise RepositoryError(f"{path}: kind is {key!r} but the {key!r} block is missing")
    try:
        return spec_from_block(cls, block)
    except TypeError as exc:
        raise RepositoryError(f"{path}: {key} block: {exc}") from exc


def served_versions(config: model_config_pb2.ModelConfig, on_disk: list[int]) -> list[int]:
    """The versions Triton serves under the config's `version_policy`, ascending.

    Same rules as Triton: `latest` keeps the `num_versions` highest, `all` keeps every one,
    `specific` keeps the listed versions that exist; no policy is `latest { num_versions: 1 }`.
    """
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else None
    if kind == "all":
        return list(on_disk)
    if kind == "specific":
        wanted = {int(v) for v in policy.specific.versions}
        return [v for v in on_disk if v in wanted]
    count = int(policy.latest.num_versions) if kind == "latest" else 1
    if count < 1:
        raise RepositoryError(f"version_policy latest num_versions must be >= 1, not {count}")
    return list(on_disk[-count:])


def load_model_versions(model_dir: Path) -> dict[str, ModelSpec]:
    """Every served version of one model directory, ascending (the newest last)."""
    config = read_config(model_dir / CONFIG_FILE)
    name = config.name or model_dir.name
    if name != model_dir.name:
        raise RepositoryError(f"{model_dir}: config name {name!r} differs from the directory name")
    on_disk = version_dirs(model_dir)
    if not on_disk:
        raise RepositoryError(f"{model_dir}: no numeric version directory")
    served = served_versions(config, on_disk)
    if not served:
        raise RepositoryError(
            f"{model_dir}: the version_policy keeps none of the versions on disk "
            f"({', '.join(map(str, on_disk))})"
        )
    if not config.default_model_filename:
        config.default_model_filename = MODEL_FILE
    versions = tuple(str(v) for v in served)
    return {v: _load_version(model_dir, config, v, versions) for v in versions}


def load_model(model_dir: Path) -> ModelSpec:
    """Read one model directory: its newest served version."""
    return list(load_model_versions(model_dir).values())[-1]


def _load_version(
    model_dir: Path,
    config: model_config_pb2.ModelConfig,
    version: str,
    versions: tuple[str, ...],
) -> ModelSpec:
    name = model_dir.name
    pre_path = artifact_path(model_dir, version, PREPROCESSING_FILE)
    try:
        pre = json.loads(pre_path.read_text())
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{pre_path}: {exc}") from exc
    kind = pre.get("kind")
    if kind not in ("image", "text", "sequence"):
        raise RepositoryError(f"{pre_path}: kind must be image, text or sequence, not {kind!r}")

    labels_path = artifact_path(model_dir, version, pre.get("labels_file", LABELS_FILE))
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
        version=version,
        versions=versions,
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
        if not spec.artifact(spec.text.tokenizer_file).is_file():
            raise RepositoryError(
                f"{model_dir}: tokenizer file {spec.text.tokenizer_file} is missing "
                f"(looked in {model_dir / version} and {model_dir})"
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


def model_dirs(root: Path) -> list[Path]:
    """The model directories under `root` (those with a config.pbtxt), by name."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a directory")
    return [d for d in sorted(root.iterdir()) if is_model_dir(d)]


def load_repository_versions(root: Path) -> dict[str, dict[str, ModelSpec]]:
    """Every served version of every model under `root`: model -> version -> spec."""
    models = {d.name: load_model_versions(d) for d in model_dirs(root)}
    if not models:
        raise RepositoryError(f"model repository {root} holds no model (no */config.pbtxt)")
    return models


def load_repository(root: Path) -> dict[str, ModelSpec]:
    """Every model under `root` at its newest served version."""
    return {name: list(v.values())[-1] for name, v in load_repository_versions(root).items()}
