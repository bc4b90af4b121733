"""The out-of-distribution score's pieces, on small arrays whose answers are known."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from service import preprocess
from service.model_contract import OOD_ARRAYS_FILE, OOD_FILE
from service.monitoring.ood import (
    SCHEMA_VERSION,
    ModelOod,
    OodDetector,
    OodMetrics,
    bigram_keys,
    image_stats,
    sequence_features,
    whitening,
)
from service.repository import load_repository
from service.tensors import Collator


def test_whitening_gives_the_mahalanobis_distance() -> None:
    delta = np.array([[1.0, 2.0], [0.0, -3.0]])
    precision = np.diag([4.0, 0.25])
    whitened = delta @ whitening(precision)
    np.testing.assert_allclose((whitened * whitened).sum(axis=1), [4.0 + 1.0, 2.25])


def test_sequence_features_ignore_padding() -> None:
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((5, 3))
    padded = np.zeros((1, 9, 3))
    padded[0, :5] = frames
    mask = np.zeros((1, 9))
    mask[0, :5] = 1
    got = sequence_features(padded, mask)[0]
    expected = np.concatenate(
        [
            frames.mean(axis=0),
            frames.std(axis=0),
            np.abs(np.diff(frames, axis=0)).mean(axis=0),
            [np.log(5)],
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # a one-frame sequence has no change and no spread, and an empty mask does not divide by 0
    one = sequence_features(padded[:, :1], mask[:, :1])[0]
    assert one[3:9].tolist() == [0.0] * 6
    assert np.isfinite(sequence_features(padded, np.zeros((1, 9)))).all()


def test_bigram_keys_start_with_the_start_token_and_clip_ids() -> None:
    ids = np.array([[5, 7, 0], [9, 99, 0]])
    keys, current = bigram_keys(ids, start_id=1, vocab=10)
    assert keys.tolist() == [[1 * 10 + 5, 5 * 10 + 7, 7 * 10 + 0], [19, 99, 90]]
    assert current.tolist() == [[5, 7, 0], [9, 9, 0]]


def test_image_stats_are_mean_spread_neighbour_changes_and_bright_share() -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 1, 6, 5)).astype(np.float32)
    got = image_stats(images)
    for row, image in zip(got, images[:, 0].astype(np.float64), strict=True):
        flat = image.ravel()
        expected = [
            flat.mean(),
            flat.std(),
            np.abs(np.diff(image, axis=1)).mean(),
            np.abs(np.diff(image, axis=0)).mean(),
            (flat > flat.mean() + flat.std()).mean(),
        ]
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    # a constant image has no spread, no change and nothing brighter than its mean
    assert image_stats(np.full((1, 1, 4, 4), 0.5, np.float32))[0].tolist() == [0.5, 0, 0, 0, 0]


def _text_detector(
    vocab: int,
    start: int,
    components: list[dict[str, Any]],
    seen: np.ndarray,
    pairs: np.ndarray,
    unigram: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A text detector's record and arrays: bigram tables at the sorted `seen` keys."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "text",
        "inputs": {"input_ids": "IDS", "attention_mask": "MASK"},
        "components": components,
        "threshold": 0.0,
        "expected_rate": 0.03,
        "vocab_size": vocab,
        "start_id": start,
    }
    arrays = {
        "bigram_keys": seen,
        "bigram_log_probability": pairs,
        "unigram_log_probability": unigram,
    }
    return record, arrays


def test_token_bigram_reads_seen_pairs_and_falls_back_to_the_unigram_term() -> None:
    vocab, start = 4, 3
    seen = np.array([3 * vocab + 1, 1 * vocab + 2], np.int64)  # (start, 1) and (1, 2)
    seen.sort()
    unigram = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]], np.float32))
    pairs = np.log(np.array([[0.9, 0.8], [0.05, 0.06]], np.float32))  # at the sorted keys
    components = [{"name": "token_bigram", "weight": 1.0, "mean": 0.0, "std": 1.0}]
    record, arrays = _text_detector(vocab, start, components, seen, pairs, unigram)
    detector = OodDetector(record, arrays)
    # row 0: (3,1) seen, (1,2) seen, (2,0) unseen; row 1: (3,2) unseen, then padding
    ids = np.array([[1, 2, 0], [2, 0, 0]])
    mask = np.array([[1, 1, 1], [1, 0, 0]])
    by_key = dict(zip(seen.tolist(), pairs.T, strict=True))
    first = [by_key[13], by_key[6], unigram[:, 0]]
    expected = [-np.max(np.mean(first, axis=0)), -np.max(unigram[:, 2])]
    got = detector.score({"IDS": ids, "MASK": mask}, np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_background_ratio_is_the_background_likelihood_over_the_best_language() -> None:
    """One gather serves token_bigram and background_ratio; the ratio is the background's mean
    log-likelihood minus the best training language's."""
    vocab, start = 3, 2
    seen = np.array([start * vocab + 0], np.int64)  # (start, 0) is the only seen pair
    unigram = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], np.float32))
    pairs = np.log(np.array([[0.9], [0.1]], np.float32))
    background_unigram = np.log(np.array([0.1, 0.1, 0.8], np.float32))
    background_pairs = np.log(np.array([0.05], np.float32))
    components = [
        {"name": "token_bigram", "weight": 1.0, "mean": 0.0, "std": 1.0},
        {"name": "background_ratio", "weight": 2.0, "mean": 1.0, "std": 4.0},
    ]
    record, arrays = _text_detector(vocab, start, components, seen, pairs, unigram)
    arrays["background_bigram_log_probability"] = background_pairs
    arrays["background_unigram_log_probability"] = background_unigram
    detector = OodDetector(record, arrays)
    # row 0: (start, 0) seen then (0, 2) unseen; row 1: (start, 2) unseen
    ids = np.array([[0, 2], [2, 0]])
    mask = np.array([[1, 1], [1, 0]])
    languages = np.stack(
        [[(pairs[0, 0] + unigram[0, 2]) / 2, unigram[0, 2]],
         [(pairs[1, 0] + unigram[1, 2]) / 2, unigram[1, 2]]]
    )  # fmt: skip
    background = np.array(
        [(background_pairs[0] + background_unigram[2]) / 2, background_unigram[2]]
    )
    tensors = {"IDS": ids, "MASK": mask}
    parts = detector.component_scores(tensors, np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(parts["token_bigram"], -languages.max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        parts["background_ratio"], background - languages.max(axis=0), rtol=1e-6
    )
    expected = parts["token_bigram"] + 2.0 * (parts["background_ratio"] - 1.0) / 4.0
    np.testing.assert_allclose(detector.score(tensors, np.zeros((2, 2))), expected, rtol=1e-6)
    # the whole-text forms are the per-token ones times each row's real tokens (2, then 1)
    totals = [
        {"name": "token_bigram_total", "weight": 1.0, "mean": 0.0, "std": 1.0},
        {"name": "background_ratio_total", "weight": 1.0, "mean": 0.0, "std": 1.0},
    ]
    whole = OodDetector({**record, "components": totals}, arrays)
    got = whole.component_scores(tensors, np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(got["token_bigram_total"], parts["token_bigram"] * [2, 1], rtol=1e-6)
    np.testing.assert_allclose(
        got["background_ratio_total"], parts["background_ratio"] * [2, 1], rtol=1e-6
    )
    # a detector that names the component must have the background arrays
    without = {k: v for k, v in arrays.items() if not k.startswith("background")}
    with pytest.raises(ValueError, match="background"):
        OodDetector(record, without)


def _sequence_detector(threshold: float = 3.0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    features = 3 * 2 + 1
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "sequence",
        "inputs": {"sequence": "SEQUENCE", "mask": "MASK"},
        "components": [{"name": "sequence_stats", "weight": 2.0, "mean": 1.0, "std": 4.0}],
        "threshold": threshold,
        "expected_rate": 0.03,
    }
    arrays = {
        "sequence_mean": np.zeros(features, np.float32),
        "sequence_precision": np.eye(features, dtype=np.float32),
    }
    return record, arrays


def test_score_is_the_weighted_standardised_sum_and_flags_above_the_threshold() -> None:
    record, arrays = _sequence_detector()
    detector = OodDetector(record, arrays)
    values = np.zeros((2, 4, 2), np.float32)
    values[1] = 3.0  # mean 3 per channel: squared distance 9 + 9, plus log(4)^2
    mask = np.ones((2, 4), np.float32)
    tensors = {"SEQUENCE": values, "MASK": mask}
    raw = np.array([np.log(4) ** 2, 18 + np.log(4) ** 2])
    scores = detector.score(tensors, np.zeros((2, 9)))
    np.testing.assert_allclose(scores, 2.0 * (raw - 1.0) / 4.0)
    assert detector.flags(scores).tolist() == [False, True]


def test_load_reads_the_version_directory(tmp_path: Path) -> None:
    assert OodDetector.load(tmp_path) is None  # a version without a detector is not scored
    record, arrays = _sequence_detector()
    (tmp_path / OOD_FILE).write_text(json.dumps(record))
    np.savez_compressed(tmp_path / OOD_ARRAYS_FILE, **arrays)
    detector = OodDetector.load(tmp_path)
    assert detector is not None and detector.threshold == 3.0 and detector.expected_rate == 0.03


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 99}, "schema_version"),
        ({"components": [{"name": "telepathy", "weight": 1, "mean": 0, "std": 1}]}, "telepathy"),
    ],
)
def test_a_broken_detector_file_is_refused(change: dict[str, Any], message: str) -> None:
    record, arrays = _sequence_detector()
    record.update(change)
    with pytest.raises(ValueError, match=message):
        OodDetector(record, arrays)


def _sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name, {"model": "m", "version": "2"})


def test_model_ood_counts_rows_and_never_fails_a_request() -> None:
    registry = CollectorRegistry()
    record, arrays = _sequence_detector()
    scorer = ModelOod(OodDetector(record, arrays), OodMetrics(registry), "m", "2")
    assert _sample(registry, "modelgate_ood_expected_flag_rate") == 0.03
    assert _sample(registry, "modelgate_ood_threshold") == 3.0
    values = np.zeros((3, 4, 2), np.float32)
    values[2] = 3.0
    result = scorer.score_batch(
        {"SEQUENCE": values, "MASK": np.ones((3, 4), np.float32)}, np.zeros((3, 9))
    )
    assert result is not None and result.flags.tolist() == [False, False, True]
    assert result.fields(2) == {"ood_score": pytest.approx(result.scores[2], abs=1e-4), "ood": True}
    assert _sample(registry, "modelgate_ood_scored_total") == 3
    assert _sample(registry, "modelgate_ood_flagged_total") == 1
    # tensors that do not fit the detector: no score, no count, no exception
    assert scorer.score_batch({"OTHER": values}, np.zeros((3, 9))) is None
    assert _sample(registry, "modelgate_ood_scored_total") == 3


def _payloads(spec: Any) -> list[Any]:
    """Three inputs of different sizes for the model's payload kind (text and sequences of
    different lengths, so a batch pads the shorter rows)."""
    rng = np.random.default_rng(1)
    if spec.kind == "image":
        images = []
        for side in (12, 28, 40):
            canvas = np.zeros((side, side), np.uint8)
            canvas[side // 4 : 3 * side // 4, side // 3 : side // 2] = 255
            buffer = io.BytesIO()
            Image.fromarray(canvas, "L").save(buffer, format="PNG")
            images.append(buffer.getvalue())
        return images
    if spec.kind == "text":
        return ["hallo", "où est la gare", "the quick brown fox jumps over the lazy dog " * 3]
    channels = spec.sequence.channels
    return [rng.standard_normal((length, channels)).tolist() for length in (7, 15, 26)]


@pytest.mark.parametrize("name", ["digits_cnn", "langid_transformer", "vowels_gru"])
def test_a_row_scores_the_same_alone_and_padded_into_a_batch(
    model_repository: Path, name: str
) -> None:
    """The gateway scores whole batches; a row's score must not depend on its neighbours."""
    spec = load_repository(model_repository)[name]
    detector = OodDetector.load(spec.path / spec.version)
    assert detector is not None
    preprocessor = preprocess.for_model(spec, max_image_pixels=10_000_000)
    collate = Collator(spec)
    rows = [
        {k: v[None, ...] for k, v in preprocessor.preprocess(preprocessor.decode(p)).items()}
        for p in _payloads(spec)
    ]
    batch = collate(rows)
    logits = np.random.default_rng(2).standard_normal((len(rows), len(spec.labels)))
    together = detector.score(batch, logits.astype(np.float32))
    alone = [
        detector.score(collate([row]), logits[i : i + 1].astype(np.float32))[0]
        for i, row in enumerate(rows)
    ]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
