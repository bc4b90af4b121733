"""`modelgate build`: train, export, check and write every model into the repository."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from training import repository
from training.evaluate import evaluate_model_dir
from training.export import PARITY_ATOL, PARITY_RTOL, ParityCase, check_parity, export_onnx
from training.recipes import MAX_BATCH_SIZE, RECIPES, Prepared
from training.train import fit, predict_logits

log = logging.getLogger(__name__)


def build_model(name: str, repo: Path, new_version: bool = False) -> dict[str, Any]:
    """Train and export one model; returns its evaluation record (also written to evaluation.json).

    Without `new_version`, the model directory is rewritten as version 1. With it,
    the export is added as the next version beside the existing ones, and
    Triton's version policy (latest 1) serves the new one.
    """
    recipe = RECIPES[name]
    model_dir = repo / name
    torch.set_num_threads(2)
    started = time.monotonic()
    prepared = recipe.prepare()
    log.info(
        "%s: data ready (%d train, %d held out)",
        name,
        len(prepared.train_labels),
        len(prepared.test_labels),
    )
    history = fit(
        prepared.model, prepared.train_inputs, prepared.train_labels, prepared.train_config, name
    )
    train_seconds = time.monotonic() - started

    torch_accuracy = float(
        (
            predict_logits(prepared.model, prepared.test_inputs).argmax(1) == prepared.test_labels
        ).mean()
    )
    sample = prepared.parity_inputs(2, max(1, prepared.parity_lengths[-1] // 2))
    onnx_model = export_onnx(prepared.model, prepared.inputs, prepared.outputs, sample)
    parity = check_parity(
        prepared.model, onnx_model, prepared.inputs, prepared.parity_inputs, prepared.parity_lengths
    )
    log.info(
        "%s: ONNX parity ok, max |diff| %.2g over %d cases",
        name,
        max(c.max_abs_diff for c in parity),
        len(parity),
    )

    if new_version:
        version = repository.next_version(model_dir)
    else:
        version = 1
        if model_dir.exists():
            shutil.rmtree(model_dir)
    repository.write_model(
        model_dir,
        version,
        onnx_model,
        prepared.inputs,
        prepared.outputs,
        prepared.preprocessing,
        prepared.labels,
        prepared.extra_files,
    )
    evaluation = evaluate_model_dir(model_dir, version)
    record = {
        "model": name,
        "version": version,
        "held_out": evaluation.to_json(),
        "torch_held_out_accuracy": round(torch_accuracy, 6),
        "parity": {
            "atol": PARITY_ATOL,
            "rtol": PARITY_RTOL,
            "cases": [c.__dict__ for c in parity],
        },
        "training": {
            **prepared.train_config.__dict__,
            "optimizer": "AdamW",
            "schedule": "OneCycleLR",
            "epoch_losses": [round(v, 5) for v in history],
            "seconds": round(train_seconds, 1),
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        },
    }
    extra_card = ""
    if prepared.extra_evaluation is not None:
        record["evaluation_sets"], extra_card = prepared.extra_evaluation(model_dir, version)
    (model_dir / repository.EVALUATION_FILE).write_text(
        json.dumps(record, indent=2) + "\n", encoding="utf-8"
    )
    (model_dir / repository.CARD_FILE).write_text(
        model_card(name, recipe.kind, prepared, record, parity, extra_card), encoding="utf-8"
    )
    log.info("%s: version %d written, held-out accuracy %.4f", name, version, evaluation.accuracy)
    return record


def build(
    repo: Path, names: list[str] | None = None, new_version: bool = False
) -> list[dict[str, Any]]:
    repo.mkdir(parents=True, exist_ok=True)
    return [build_model(name, repo, new_version) for name in (names or list(RECIPES))]


def _tensor_rows(prepared: Prepared) -> str:
    rows = []
    for direction, specs in (("input", prepared.inputs), ("output", prepared.outputs)):
        for spec in specs:
            dims = ", ".join(str(d) for d in (-1, *spec.dims))
            rows.append(f"| {direction} | `{spec.name}` | {spec.dtype} | [{dims}] |")
    return "\n".join(rows)


def model_card(
    name: str,
    kind: str,
    prepared: Prepared,
    record: dict[str, Any],
    parity: list[ParityCase],
    extra_evaluation: str = "",
) -> str:
    held_out = record["held_out"]
    per_class = "\n".join(
        f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for label, m in held_out["per_class"].items()
    )
    worst = max(parity, key=lambda c: c.max_abs_diff)
    train = record["training"]
    training_line = (
        f"AdamW (weight decay {train['weight_decay']}), one-cycle learning rate "
        f"(max {train['learning_rate']}), gradient clipping at norm {train['clip_norm']}, "
        f"batch size {train['batch_size']}, {train['epochs']} epochs, seed {train['seed']}; "
        f"{train['seconds']} s on {train['machine']} (torch {train['torch']})."
    )
    variable = any(-1 in s.dims for s in prepared.inputs)
    lengths = ", ".join(str(n) for n in prepared.parity_lengths) if variable else "fixed"
    export_line = (
        f"ONNX (opset 18, dynamo exporter) with dynamic batch"
        f"{' and sequence' if variable else ''} axes. Parity against PyTorch over "
        f"{len(parity)} cases (batch sizes 1, 3, {MAX_BATCH_SIZE} x lengths {lengths}): "
        f"largest |difference| {worst.max_abs_diff:.2g} (batch {worst.batch}, "
        f"length {worst.length}); tolerance atol {PARITY_ATOL}, rtol {PARITY_RTOL}."
    )
    return f"""# Model card: {name} (version {record["version"]})

Kind: **{kind}**. Written by `modelgate build`; figures below are computed by the build
and re-checked by the test suite on the committed ONNX file.

## Data
{prepared.card["data"]}

## Held-out evaluation
Accuracy **{held_out["accuracy"]:.4f}** on {held_out["size"]} held-out examples, computed with
ONNX Runtime on the exported `{record["version"]}/model.onnx` after the repository's own
preprocessing (PyTorch before export: {record["torch_held_out_accuracy"]:.4f}).

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}
{extra_evaluation}
## Input contract
{prepared.card["input"]}

Triton tensors (first axis is the batch, `max_batch_size` {MAX_BATCH_SIZE}; -1 = variable):

| | name | dtype | shape |
|---|---|---|---|
{_tensor_rows(prepared)}

The output is raw logits; the gateway applies softmax and maps indices to `labels.txt`.
Preprocessing parameters: `preprocessing.json`.

## Intended use
{prepared.card["use"]}

## Known limitations
{prepared.card["limitations"]}

## Training
{training_line}

## Export
{export_line}
"""
