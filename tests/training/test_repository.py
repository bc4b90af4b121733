"""The committed model repository is complete and consistent with the code that wrote it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from service import model_contract as contract
from training import digit_fonts, fingerprint
from training.evaluate import evaluate_model_dir, evaluation_sets, read_labels, read_preprocessing
from training.evaluation_items import evaluate_items
from training.recipes import MAX_BATCH_SIZE, RECIPES
from training.slices import group_report, markdown_table

REPO = Path(__file__).resolve().parents[2] / "model_repository"
MODELS = sorted(RECIPES)
ONNX_TYPES = {mc.TYPE_FP32: onnx.TensorProto.FLOAT, mc.TYPE_INT64: onnx.TensorProto.INT64}


def test_repository_holds_exactly_the_recipes() -> None:
    served = sorted(p.name for p in REPO.iterdir() if (p / contract.CONFIG_FILE).is_file())
    assert served == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_directory_is_complete(name: str) -> None:
    model_dir = REPO / name
    for file in (
        contract.CONFIG_FILE,
        contract.LABELS_FILE,
        contract.PREPROCESSING_FILE,
        contract.EVALUATION_FILE,
        contract.CARD_FILE,
        f"1/{contract.MODEL_FILE}",
    ):
        assert (model_dir / file).is_file(), f"{name}: missing {file}"
    pre = read_preprocessing(model_dir)
    assert pre["schema_version"] == 1
    assert pre["kind"] == RECIPES[name].kind
    if pre["kind"] == "text":
        assert (model_dir / pre["text"]["tokenizer_file"]).is_file()


@pytest.mark.parametrize("name", MODELS)
def test_config_parses_with_tritons_schema(name: str) -> None:
    config = contract.parse_config(REPO / name / contract.CONFIG_FILE)
    assert config.name == name
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == MAX_BATCH_SIZE
    assert config.default_model_filename == contract.MODEL_FILE
    assert config.HasField("dynamic_batching")
    # Any queue policy stalls Triton 2.51 for ~0.5 s about once a second
    # (docs/local-triton.md); the gateway's own bounded queue sheds load instead.
    assert not config.dynamic_batching.HasField("default_queue_policy")
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert config.version_policy.HasField("latest")
    assert len(config.model_warmup) >= 1
    warm_inputs = config.model_warmup[0].inputs
    assert set(warm_inputs) == {i.name for i in config.input}
    for key, value in warm_inputs.items():
        if value.input_data_file:
            data = (REPO / name / contract.WARMUP_DIR / value.input_data_file).read_bytes()
            itemsize = 4 if value.data_type == mc.TYPE_FP32 else 8
            assert len(data) == itemsize * int(np.prod(value.dims)), key
    labels = read_labels(REPO / name, read_preprocessing(REPO / name))
    assert len(labels) == config.output[0].dims[0]
    assert config.output[0].label_filename == contract.LABELS_FILE


@pytest.mark.parametrize("name", MODELS)
def test_gpu_config_differs_only_in_the_instance_kind(name: str) -> None:
    config = contract.parse_config(REPO / name / contract.CONFIG_FILE)
    gpu = contract.parse_config(REPO / name / contract.GPU_CONFIG_FILE)
    assert [g.kind for g in gpu.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    del gpu.instance_group[:], config.instance_group[:]
    assert gpu == config


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    """ONNX dims with symbolic (dynamic) axes as -1."""
    return [
        d.dim_value if d.HasField("dim_value") else -1
        for d in value_info.type.tensor_type.shape.dim
    ]


@pytest.mark.parametrize("name", MODELS)
def test_onnx_signature_matches_config(name: str) -> None:
    config = contract.parse_config(REPO / name / contract.CONFIG_FILE)
    graph = onnx.load(str(REPO / name / "1" / contract.MODEL_FILE)).graph
    for declared, actual in (
        (config.input, graph.input),
        (config.output, graph.output),
    ):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, info in zip(declared, actual, strict=True):
            assert ONNX_TYPES[tensor.data_type] == info.type.tensor_type.elem_type, tensor.name
            # The batch axis is dynamic, then the config's dims exactly (-1 where variable).
            assert _dims(info) == [-1, *tensor.dims], tensor.name
    # The preprocessing file names real tensors.
    pre = read_preprocessing(REPO / name)
    names = {t.name for t in config.input}
    referenced = {
        v
        for k, v in pre[pre["kind"]].items()
        if k in {"input", "mask", "input_ids", "attention_mask"}
    }
    assert referenced == names
    assert pre["output"] == config.output[0].name


@pytest.mark.parametrize("name", MODELS)
def test_held_out_accuracy_in_card_is_reproduced(name: str) -> None:
    model_dir = REPO / name
    record = json.loads((model_dir / contract.EVALUATION_FILE).read_text())
    evaluation = evaluate_model_dir(model_dir, record["version"])
    assert evaluation.size == record["held_out"]["size"]
    assert evaluation.accuracy == pytest.approx(record["held_out"]["accuracy"], abs=1e-6)
    assert evaluation.per_class == record["held_out"]["per_class"]
    card = (model_dir / contract.CARD_FILE).read_text()
    assert f"Accuracy **{evaluation.accuracy:.4f}**" in card
    for section in (
        "## Data",
        "## Held-out evaluation",
        "## Input contract",
        "## Intended use",
        "## Known limitations",
    ):
        assert section in card
    # Better than chance by a wide margin: the models are really trained.
    assert evaluation.accuracy > 3.0 / len(evaluation.per_class)


# What the digits model must reach on data it never trained on (recomputed, not read back).
DIGIT_TARGETS = {
    "held_out": 0.97,
    "held_out_inverted": 0.95,
    "held_out_fonts_dark_on_light": 0.90,
    "held_out_fonts_light_on_dark": 0.90,
}


def _committed_sets() -> list[tuple[str, str]]:
    pairs = []
    for name in MODELS:
        record = json.loads((REPO / name / contract.EVALUATION_FILE).read_text())
        # Per-item sets (training/evaluation_items.py); langid's sets hold per-detector figures
        # beside the reference detectors and are re-computed in tests/training/test_langid.py.
        sets = record.get("evaluation_sets", {})
        pairs += [(name, set_name) for set_name, entry in sets.items() if "items" in entry]
    return pairs


@functools.cache
def _recomputed_sets(name: str) -> dict[str, dict[str, Any]]:
    record = json.loads((REPO / name / contract.EVALUATION_FILE).read_text())
    return evaluate_items(REPO / name, record["version"])


@pytest.mark.parametrize(("name", "set_name"), _committed_sets())
def test_evaluation_set_in_card_is_reproduced(name: str, set_name: str) -> None:
    model_dir = REPO / name
    committed = json.loads((model_dir / contract.EVALUATION_FILE).read_text())
    recorded = committed["evaluation_sets"][set_name]
    fresh = _recomputed_sets(name)[set_name]
    assert fresh["size"] == recorded["size"] == len(recorded["items"])
    assert fresh["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
    assert fresh["per_class"] == recorded["per_class"]
    assert fresh["items"] == recorded["items"]  # every single prediction, by item id
    card = (model_dir / contract.CARD_FILE).read_text()
    assert f"| `{set_name}` | {recorded['description']} | {fresh['size']} | " in card
    assert f"**{fresh['accuracy']:.4f}**" in card


@pytest.mark.parametrize(("set_name", "floor"), DIGIT_TARGETS.items())
def test_digits_reach_their_targets_on_unseen_data(set_name: str, floor: float) -> None:
    assert _recomputed_sets("digits_cnn")[set_name]["accuracy"] >= floor


def test_held_out_font_families_were_never_trained_on() -> None:
    trained = {f.family for f in digit_fonts.training_fonts()}
    held_out = {f.family for f in digit_fonts.held_out_fonts()}
    assert held_out == set(digit_fonts.HELD_OUT_FAMILIES)
    assert not trained & held_out
    items = json.loads((REPO / "digits_cnn" / contract.EVALUATION_FILE).read_text())[
        "evaluation_sets"
    ]["held_out_fonts_dark_on_light"]["items"]
    assert {item["id"].split("/")[0] for item in items} == held_out


@pytest.mark.parametrize("name", MODELS)
def test_groups_and_data_fingerprints_are_reproduced(name: str) -> None:
    model_dir = REPO / name
    record = json.loads((model_dir / contract.EVALUATION_FILE).read_text())
    with fingerprint.collect() as seen:
        report = group_report(
            evaluation_sets(model_dir, record["version"]), RECIPES[name].group_floor
        )
    assert record["groups"] == report.to_json()
    assert report.worst.accuracy >= RECIPES[name].group_floor
    card = (model_dir / contract.CARD_FILE).read_text()
    assert "## Groups" in card
    assert markdown_table(report) in card
    # Today's packages still hold the very examples the model was trained and evaluated on.
    recorded = {d["name"]: d for d in record["data"]}
    assert any(n.endswith(" train") for n in recorded)
    assert {n: fp.to_json() for n, fp in seen.items()} == {n: recorded[n] for n in seen}


@pytest.mark.parametrize("name", MODELS)
def test_version_directory_names_its_training_run(name: str) -> None:
    record = json.loads((REPO / name / contract.EVALUATION_FILE).read_text())
    expected = record["run"]
    reference = json.loads((REPO / name / str(record["version"]) / contract.RUN_FILE).read_text())
    assert reference == expected
    assert len(reference["run_id"]) == 32
    int(reference["run_id"], 16)  # MLflow run ids are hexadecimal
    assert "@" not in reference["tracking_uri"]  # never credentials
