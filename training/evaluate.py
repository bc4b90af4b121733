"""Held-out evaluation of an exported model, straight from the repository's files.

It rebuilds the held-out split from the installed packages, preprocesses it
with the parameters in the model's preprocessing.json (and tokenizer.json),
and runs the ONNX file with ONNX Runtime. No torch: this is what the
repository's consistency test runs on the committed artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service import model_contract as contract
from training import data, features, fingerprint
from training.langid_eval import length_group
from training.slices import EvaluationSet


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    size: int
    per_class: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "size": self.size, "per_class": self.per_class}


def read_preprocessing(model_dir: Path, version: int | None = None) -> dict[str, Any]:
    """The version's preprocessing.json (its own, else the model's)."""
    path = contract.artifact_path(model_dir, version, contract.PREPROCESSING_FILE)
    return json.loads(path.read_text(encoding="utf-8"))


def read_labels(
    model_dir: Path, preprocessing: dict[str, Any], version: int | None = None
) -> list[str]:
    """The version's labels (its own file, else the model's)."""
    path = contract.artifact_path(model_dir, version, preprocessing["labels_file"])
    text = path.read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


def held_out_inputs(
    model_dir: Path, version: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The held-out split as named model inputs, preprocessed per the version's own files."""
    pre = read_preprocessing(model_dir, version)
    kind = pre["kind"]
    spec = pre[kind]
    if kind == "image":
        _, test = data.load_digits_split()
        return {spec["input"]: features.image_tensor(test.images, spec)}, test.labels
    if kind == "sequence":
        _, seq_test = data.load_vowels_split()
        values, mask = features.sequence_tensors(seq_test.sequences, spec)
        return {spec["input"]: values, spec["mask"]: mask}, seq_test.labels
    if kind == "text":
        from tokenizers import Tokenizer

        _, text_test = data.load_langid_split()
        tokenizer_path = contract.artifact_path(model_dir, version, spec["tokenizer_file"])
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        ids, attention = features.text_tensors(text_test.texts, tokenizer, spec)
        return {spec["input_ids"]: ids, spec["attention_mask"]: attention}, text_test.labels
    raise ValueError(f"{model_dir}: unknown preprocessing kind {kind!r}")


def run_onnx(onnx_path: Path, inputs: dict[str, np.ndarray], batch_size: int = 64) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    n = len(next(iter(inputs.values())))
    chunks = []
    for start in range(0, n, batch_size):
        feed = {k: v[start : start + batch_size] for k, v in inputs.items()}
        chunks.append(session.run(None, feed)[0])
    return np.concatenate(chunks)


def classification_metrics(
    labels: list[str], truth: np.ndarray, predicted: np.ndarray
) -> Evaluation:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(range(len(labels))), zero_division=0
    )
    per_class = {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    accuracy = float(np.mean(predicted == truth))
    return Evaluation(accuracy=round(accuracy, 6), size=len(truth), per_class=per_class)


def _newest_version(model_dir: Path) -> int:
    return max(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def evaluation_sets(model_dir: Path, version: int | None = None) -> list[EvaluationSet]:
    """Every labelled set the model is judged on, each item with its groups (training/slices.py).

    A new evaluation set only needs its per-item correctness and group labels here;
    set names become the `family` groups when there are several.
    """
    version = _newest_version(model_dir) if version is None else version
    onnx_path = model_dir / str(version) / contract.MODEL_FILE
    pre = read_preprocessing(model_dir, version)
    labels = read_labels(model_dir, pre, version)
    inputs, truth = held_out_inputs(model_dir, version)
    correct = run_onnx(onnx_path, inputs).argmax(axis=1) == truth
    classes = [labels[t] for t in truth]
    kind = pre["kind"]
    if kind == "sequence":  # JapaneseVowels: the classes are the speakers
        return [EvaluationSet("held-out", correct, {"speaker": classes})]
    if kind == "text":
        _, phrases = data.load_langid_split()
        # The length buckets of the language-id card (1, 2, 3, 4, 5+ words): a few held-out
        # texts run to 12 words, too few per exact length for a group of their own.
        buckets = [length_group(text) for text in phrases.texts]
        length = [f"{b} word{'' if b == '1' else 's'}" for b in buckets]
        return [EvaluationSet("held-out", correct, {"language": classes, "phrase length": length})]
    if kind == "image":
        # The same held-out digits, dark ink on a light background: what a scan looks like.
        _, test = data.load_digits_split()
        inverted = 255 - test.images
        fingerprint.record(
            "digits held-out inverted", "scikit-learn", "the held-out part, 255 - pixel", inverted
        )
        spec = pre["image"]
        inverted_correct = (
            run_onnx(onnx_path, {spec["input"]: features.image_tensor(inverted, spec)}).argmax(1)
            == test.labels
        )
        sets = [
            EvaluationSet("held-out", correct),
            EvaluationSet("held-out inverted", inverted_correct),
        ]
        # Typed digits in font families never trained on, in both polarities, grouped by family.
        from training import digit_fonts

        for polarity in digit_fonts.POLARITIES:
            rendered = digit_fonts.held_out_font_digits(polarity)
            hits = (
                run_onnx(
                    onnx_path, {spec["input"]: features.image_tensor(rendered.images, spec)}
                ).argmax(1)
                == rendered.labels
            )
            families = [item.split("/")[0] for item in rendered.ids]
            name = f"held-out fonts {polarity.replace('_', ' ')}"
            sets.append(EvaluationSet(name, hits, {"font family": families}))
        return sets
    raise ValueError(f"{model_dir}: unknown preprocessing kind {kind!r}")


def evaluate_model_dir(model_dir: Path, version: int | None = None) -> Evaluation:
    """Held-out metrics of `<model_dir>/<version>/model.onnx` (newest version by default)."""
    if version is None:
        version = contract.version_dirs(model_dir)[-1]
    pre = read_preprocessing(model_dir, version)
    inputs, truth = held_out_inputs(model_dir, version)
    logits = run_onnx(model_dir / str(version) / contract.MODEL_FILE, inputs)
    labels = read_labels(model_dir, pre, version)
    return classification_metrics(labels, truth, logits.argmax(axis=1))
