"""Per-item results of a model's named evaluation sets, each on data it never trained on.

A model's held-out split says how it does on data like its training data; the sets here say how
it does on what users send. Each set has a name, a description, its items (an id saying what
each item is, the true label, the predicted label) and its metrics, recorded in evaluation.json
under "evaluation_sets" and re-computed from the committed ONNX file by the test suite. Items are
kept so results can be sliced further (by font family, size, polarity, ...) from the file alone.

Like training/evaluate.py this needs no torch: raw items go through the model's own
preprocessing (training/features.py, i.e. the gateway's code) and ONNX Runtime.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import model_contract as contract
from training import data, digit_fonts, features
from training.evaluate import classification_metrics, read_labels, read_preprocessing, run_onnx


@dataclass(frozen=True)
class ItemSet:
    """Model inputs of one named set, their true labels and an id per item."""

    name: str
    description: str
    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]


def digit_sets(model_dir: Path, version: int | None = None) -> list[ItemSet]:
    """scikit-learn held-out (both polarities) and held-out font families (both polarities)."""
    spec = read_preprocessing(model_dir, version)["image"]
    name = spec["input"]
    _, test = data.load_digits_split()
    scan_ids = [f"scikit-learn/{i}" for i in range(len(test.labels))]
    families = ", ".join(digit_fonts.HELD_OUT_FAMILIES)
    sizes = ", ".join(str(s) for s in digit_fonts.EVAL_SIZES)
    offsets = ", ".join(digit_fonts.EVAL_OFFSETS)
    sets = [
        ItemSet(
            "held_out",
            "scikit-learn digits held out of training (8x8 scans, light ink on dark)",
            {name: features.image_tensor(test.images, spec)},
            test.labels,
            scan_ids,
        ),
        ItemSet(
            "held_out_inverted",
            "the same held-out digits inverted: dark ink on light, like a pen on paper",
            {name: features.image_tensor(255 - test.images, spec)},
            test.labels,
            scan_ids,
        ),
    ]
    for polarity, words in (
        ("dark_on_light", "black on white"),
        ("light_on_dark", "white on black"),
    ):
        rendered = digit_fonts.held_out_font_digits(polarity)
        sets.append(
            ItemSet(
                f"held_out_fonts_{polarity}",
                f"typed digits, {words}, in font families never trained on ({families}); "
                f"every style, font sizes {sizes} px, placed at {offsets}",
                {name: features.image_tensor(rendered.images, spec)},
                rendered.labels,
                rendered.ids,
            )
        )
    return sets


# Which models have evaluation sets beyond the held-out split (by model directory name).
PROVIDERS: dict[str, Callable[[Path, int], list[ItemSet]]] = {"digits_cnn": digit_sets}


def evaluate_items(model_dir: Path, version: int) -> dict[str, dict[str, Any]]:
    """Metrics and per-item results of every evaluation set of the model (empty if none)."""
    provider = PROVIDERS.get(model_dir.name)
    if provider is None:
        return {}
    labels = read_labels(model_dir, read_preprocessing(model_dir, version), version)
    onnx_path = model_dir / str(version) / contract.MODEL_FILE
    results: dict[str, dict[str, Any]] = {}
    for item_set in provider(model_dir, version):
        predicted = run_onnx(onnx_path, item_set.inputs).argmax(axis=1)
        metrics = classification_metrics(labels, item_set.labels, predicted)
        results[item_set.name] = {
            "description": item_set.description,
            **metrics.to_json(),
            "items": [
                {"id": item, "label": labels[int(truth)], "predicted": labels[int(guess)]}
                for item, truth, guess in zip(item_set.ids, item_set.labels, predicted, strict=True)
            ],
        }
    return results


def _group_accuracy(items: list[dict[str, str]]) -> dict[str, tuple[int, int]]:
    """(correct, total) per first component of the item id (the font family, for fonts)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item in items:
        group = counts[item["id"].split("/")[0]]
        group[0] += item["label"] == item["predicted"]
        group[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def card_section(sets: dict[str, dict[str, Any]]) -> str:
    """The model card's table of per-item evaluation sets (empty when the model has none).

    Sets recorded in another layout (langid's per-detector sets, which carry their own card
    section) have no `items` and are left out.
    """
    sets = {name: result for name, result in sets.items() if "items" in result}
    if not sets:
        return ""
    rows = []
    for name, result in sets.items():
        rows.append(
            f"| `{name}` | {result['description']} | {result['size']} | "
            f"**{result['accuracy']:.4f}** |"
        )
        groups = _group_accuracy(result["items"])
        if len(groups) > 1:
            for group, (correct, total) in groups.items():
                rows.append(f"| | of which {group} | {total} | {correct / total:.4f} |")
    table = "\n".join(rows)
    return f"""
## Evaluation sets
Each on data the model never trained on, computed with ONNX Runtime on the exported file after
the repository's own preprocessing; per-item results are in `evaluation.json`
(`evaluation_sets`).

| set | what | items | accuracy |
|---|---|---|---|
{table}
"""


def dumps(record: dict[str, Any]) -> str:
    """evaluation.json text: indented, but each per-item result on one line."""

    def encode(value: Any, indent: str) -> str:
        inner = indent + "  "
        if isinstance(value, dict) and value:
            if "id" in value and all(not isinstance(v, dict | list) for v in value.values()):
                return json.dumps(value, ensure_ascii=False)
            body = ",\n".join(
                f"{inner}{json.dumps(k, ensure_ascii=False)}: {encode(v, inner)}"
                for k, v in value.items()
            )
            return "{\n" + body + "\n" + indent + "}"
        if isinstance(value, list) and value:
            body = ",\n".join(f"{inner}{encode(v, inner)}" for v in value)
            return "[\n" + body + "\n" + indent + "]"
        return json.dumps(value, ensure_ascii=False)

    return encode(record, "") + "\n"
