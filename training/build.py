"""`modelgate build`: train, export, check and write every model into the repository."""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from service import model_contract as contract
from training import data, evaluation_items, fingerprint, ood, repository, slices, tracking
from training.evaluate import evaluate_model_dir, evaluation_sets
from training.export import PARITY_ATOL, PARITY_RTOL, ParityCase, check_parity, export_onnx
from training.profile import write_profile
from training.recipes import MAX_BATCH_SIZE, RECIPES, Prepared, Recipe
from training.train import (
    OPTIMIZER,
    SCHEDULE,
    WARMUP_FRACTION,
    TrainConfig,
    fit,
    predict_logits,
    seed_everything,
)

# Intra-op threads for training and export (recorded with every run).
THREADS = 2
# Recipes create their networks, and so draw the initial weights, in prepare(): seeding
# first makes a second build in the same process start from the same weights as the first.
INIT_SEED = 0

log = logging.getLogger(__name__)


def build_model(
    name: str,
    repo: Path,
    new_version: bool = False,
    tracking_uri: str | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Train and export one model; returns its evaluation record (also written to evaluation.json).

    Without `new_version`, the model directory is rewritten as version 1. With it,
    the export is added as the next version beside the existing ones, with its own
    preprocessing.json, labels and tokenizer in its version directory, and the
    config's version policy (default latest 1) decides which versions are served. Every build is one
    MLflow run (training/tracking.py) in `tracking_uri` (default: the local
    store beside `repo`); `epochs` overrides the recipe's for a quick experiment.
    Nothing is written to `repo` when the model's worst group is below its
    recipe's floor (`GroupFloorError`).
    """
    recipe = RECIPES[name]
    model_dir = repo / name
    torch.set_num_threads(THREADS)
    tracking_uri = tracking_uri or tracking.default_tracking_uri(repo)
    project = tracking.project_dir(repo)
    with (
        tracking.build_run(name, tracking_uri, project) as run,
        fingerprint.collect() as datasets,
    ):
        started = time.monotonic()
        seed_everything(INIT_SEED)
        prepared = recipe.prepare()
        config = prepared.train_config
        if epochs is not None:
            config = replace(config, epochs=epochs)
        prepare_seconds = time.monotonic() - started
        log.info(
            "%s: data ready (%d train, %d held out); MLflow run %s",
            name,
            len(prepared.train_labels),
            len(prepared.test_labels),
            run.reference.run_id,
        )
        run.log_params(_run_params(recipe, prepared, config))
        run.log_text(str(prepared.model), "architecture.txt")
        run.log_text(tracking.environment_listing(), "environment.txt")

        def held_out_epoch(epoch: int, loss: float) -> None:
            logits = torch.from_numpy(predict_logits(prepared.model, prepared.test_inputs))
            truth = torch.from_numpy(prepared.test_labels)
            held_out_loss = float(torch.nn.functional.cross_entropy(logits, truth))
            accuracy = float((logits.argmax(1) == truth).float().mean())
            run.log_epoch(
                epoch,
                {
                    "train_loss": loss,
                    "held_out_loss": held_out_loss,
                    "held_out_accuracy_torch": accuracy,
                },
            )

        started = time.monotonic()
        history = fit(
            prepared.model,
            prepared.train_inputs,
            prepared.train_labels,
            config,
            name,
            on_epoch=held_out_epoch,
        )
        train_seconds = time.monotonic() - started

        torch_accuracy = float(
            (
                predict_logits(prepared.model, prepared.test_inputs).argmax(1)
                == prepared.test_labels
            ).mean()
        )
        started = time.monotonic()
        sample = prepared.parity_inputs(2, max(1, prepared.parity_lengths[-1] // 2))
        onnx_model = export_onnx(prepared.model, prepared.inputs, prepared.outputs, sample)
        parity = check_parity(
            prepared.model,
            onnx_model,
            prepared.inputs,
            prepared.parity_inputs,
            prepared.parity_lengths,
        )
        export_seconds = time.monotonic() - started
        log.info(
            "%s: ONNX parity ok, max |diff| %.2g over %d cases",
            name,
            max(c.max_abs_diff for c in parity),
            len(parity),
        )

        version = repository.next_version(model_dir) if new_version else 1

        def write(target: Path) -> None:
            repository.write_model(
                target,
                version,
                onnx_model,
                prepared.inputs,
                prepared.outputs,
                prepared.preprocessing,
                prepared.labels,
                prepared.extra_files,
                # a version beside existing ones carries its own preprocessing and labels
                beside_others=target == model_dir and version > 1,
            )

        # Evaluate a staged copy first: a model refused by its group floor leaves `repo` untouched.
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as staging:
            staged = Path(staging) / name
            write(staged)
            evaluation = evaluate_model_dir(staged, version)
            groups = slices.group_report(evaluation_sets(staged, version), recipe.group_floor)
            items = evaluation_items.evaluate_items(staged, version)
        evaluate_seconds = time.monotonic() - started

        record: dict[str, Any] = {
            "model": name,
            "version": version,
            "held_out": evaluation.to_json(),
            "torch_held_out_accuracy": round(torch_accuracy, 6),
            "groups": groups.to_json(),
            "data": [fp.to_json() for fp in datasets.values()],
            "parity": {
                "atol": PARITY_ATOL,
                "rtol": PARITY_RTOL,
                "cases": [c.__dict__ for c in parity],
            },
            "training": {
                **config.__dict__,
                "optimizer": OPTIMIZER,
                "schedule": SCHEDULE,
                "epoch_losses": [round(v, 5) for v in history],
                "seconds": round(train_seconds, 1),
                "torch": torch.__version__,
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            },
            "run": run.reference.to_json(),
        }
        if items:
            record["evaluation_sets"] = items
        run.log_datasets(datasets)
        run.log_metrics(
            {
                "held_out_accuracy": evaluation.accuracy,
                "torch_held_out_accuracy": torch_accuracy,
                "parity_max_abs_diff": max(c.max_abs_diff for c in parity),
                "worst_group_accuracy": groups.worst.accuracy,
                **{tracking.group_metric(g.dimension, g.name): g.accuracy for g in groups.groups},
                "prepare_seconds": prepare_seconds,
                "train_seconds": train_seconds,
                "export_seconds": export_seconds,
                "evaluate_seconds": evaluate_seconds,
            }
        )
        run.log_dict(
            {"atol": PARITY_ATOL, "rtol": PARITY_RTOL, "cases": [c.__dict__ for c in parity]},
            "parity.json",
        )
        try:
            groups.check(name)
        except slices.GroupFloorError as refused:
            run.set_tag("refused", str(refused))
            run.log_dict(record, "evaluation.json")
            raise

        if not new_version and model_dir.exists():
            shutil.rmtree(model_dir)
        write(model_dir)
        version_dir = model_dir / str(version)
        tracking.write_run_file(version_dir, run.reference)
        # The drift monitor's reference: feature and output distributions on held-out data.
        profile_path = write_profile(model_dir, version)
        extra_card = ""
        if prepared.extra_evaluation is not None:
            record["evaluation_sets"], extra_card = prepared.extra_evaluation(model_dir, version)
        # The out-of-distribution detector: fitted on the training split, calibrated on held-out.
        record["ood"] = ood.fit_and_write(model_dir, version)
        (model_dir / contract.EVALUATION_FILE).write_text(
            evaluation_items.dumps(record), encoding="utf-8"
        )
        card = model_card(name, recipe.kind, prepared, record, parity, groups, extra_card)
        (model_dir / contract.CARD_FILE).write_text(
            ood.with_card_section(card, record["ood"]), encoding="utf-8"
        )
        for artifact in (
            version_dir / contract.MODEL_FILE,
            version_dir / contract.OOD_FILE,
            model_dir / contract.CARD_FILE,
            model_dir / contract.EVALUATION_FILE,
            model_dir / contract.CONFIG_FILE,
            contract.artifact_path(model_dir, version, contract.PREPROCESSING_FILE),
            contract.artifact_path(model_dir, version, contract.LABELS_FILE),
            profile_path,
        ):
            run.log_artifact(artifact, "model")
        for extra in prepared.extra_files:
            run.log_artifact(contract.artifact_path(model_dir, version, extra), "model")
    log.info("%s: version %d written, held-out accuracy %.4f", name, version, evaluation.accuracy)
    return record


def _run_params(recipe: Recipe, prepared: Prepared, config: TrainConfig) -> dict[str, Any]:
    """What a run is: architecture, optimisation settings, seeds, threads, data sizes, packages."""
    return {
        "model": recipe.name,
        "kind": recipe.kind,
        "architecture": type(prepared.model).__name__,
        "parameters": sum(p.numel() for p in prepared.model.parameters()),
        "optimizer": OPTIMIZER,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "schedule": SCHEDULE,
        "schedule_warmup_fraction": WARMUP_FRACTION,
        "clip_norm": config.clip_norm,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "seed": config.seed,
        "init_seed": INIT_SEED,
        "data_seed": data.SEED,
        "threads": torch.get_num_threads(),
        "train_examples": len(prepared.train_labels),
        "held_out_examples": len(prepared.test_labels),
        "group_floor": recipe.group_floor,
        **{f"version.{k}": v for k, v in tracking.package_versions().items()},
    }


def build(
    repo: Path,
    names: list[str] | None = None,
    new_version: bool = False,
    tracking_uri: str | None = None,
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    repo.mkdir(parents=True, exist_ok=True)
    return [
        build_model(name, repo, new_version, tracking_uri, epochs)
        for name in (names or list(RECIPES))
    ]


def _tensor_rows(prepared: Prepared) -> str:
    rows = []
    for direction, specs in (("input", prepared.inputs), ("output", prepared.outputs)):
        for spec in specs:
            dims = ", ".join(str(d) for d in (-1, *spec.dims))
            rows.append(f"| {direction} | `{spec.name}` | {spec.np_dtype} | [{dims}] |")
    return "\n".join(rows)


def _data_rows(record: dict[str, Any]) -> str:
    return "\n".join(
        f"| {d['name']} | {d['package']} {d['package_version']} | {d['split']} | {d['size']} "
        f"| `{d['sha256'][:16]}` |"
        for d in record["data"]
    )


def model_card(
    name: str,
    kind: str,
    prepared: Prepared,
    record: dict[str, Any],
    parity: list[ParityCase],
    groups: slices.GroupReport,
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

Fingerprints of the exact examples (SHA-256 over examples and labels, in order; the full
hashes are in `evaluation.json`):

| dataset | source | split | examples | SHA-256 |
|---|---|---|---|---|
{_data_rows(record)}

## Held-out evaluation
Accuracy **{held_out["accuracy"]:.4f}** on {held_out["size"]} held-out examples, computed with
ONNX Runtime on the exported `{record["version"]}/model.onnx` after the repository's own
preprocessing (PyTorch before export: {record["torch_held_out_accuracy"]:.4f}).

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}
{evaluation_items.card_section(record.get("evaluation_sets", {}))}
## Groups
Held-out accuracy per group, computed with ONNX Runtime like the figures above.

{slices.markdown_table(groups)}
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
{training_line} MLflow run `{record["run"]["run_id"]}` (experiment
`{record["run"]["experiment"]}`) holds its parameters, per-epoch curves and artifacts.

## Export
{export_line}
"""
