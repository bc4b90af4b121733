"""The reference profile of a model version, from its training and held-out data.

`modelgate build` calls `write_profile` after writing a version; `modelgate profile` runs the
same step on versions already in the repository, without retraining (their ONNX files, cards
and evaluation figures stay as they are). The raw data are the recipes' own (training.data,
training.digit_fonts); each item goes through the gateway's preprocessor and the gateway's
feature functions (service/monitoring/features.py), so the profile measures exactly what the
drift monitor measures.

The reference distribution is the held-out split, not the training data: training sets are
augmented on purpose (digits typed in 60 fonts at every size, random polarity) and do not look
like traffic, and a model's outputs on its own training data are more confident than on
anything else. The training data's input distribution is recorded beside it, on the same bins,
with its PSI against the reference (how far augmentation took training from the held-out data).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service import preprocess
from service.model_contract import REFERENCE_PROFILE_FILE
from service.monitoring import features
from service.monitoring.profile import (
    FeatureProfile,
    ReferenceProfile,
    bin_counts,
    category_edges,
    psi,
    quantile_edges,
)
from service.repository import ModelSpec, load_model
from training import data
from training.evaluate import held_out_inputs, run_onnx

log = logging.getLogger(__name__)

# Window size the noise figure is computed for (the gateway's default drift_window_items).
NOISE_WINDOW_ITEMS = 500
NOISE_DRAWS = 200
NOISE_SEED = 11


def reference_payloads(name: str) -> tuple[list[Any], list[Any]]:
    """(training, held-out) raw payloads of a model, decoded the way the gateway decodes them:
    8-bit grey images, strings, (T, C) float32 sequences. The training side is the recipe's
    (digits: scans, jittered scans and font renders)."""
    if name == "digits_cnn":
        from training import digit_fonts
        from training.recipes import DIGIT_RENDERS_PER_GLYPH, DIGIT_SCAN_COPIES

        train, test = data.load_digits_split()
        fonts = digit_fonts.training_font_digits(DIGIT_RENDERS_PER_GLYPH, data.SEED)
        scans = digit_fonts.augmented_scans(train.images, DIGIT_SCAN_COPIES, data.SEED + 1)

        def image(pixels: np.ndarray) -> Image.Image:
            return Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L")

        return (
            [image(p) for p in [*train.images, *scans, *fonts.images]],
            [image(p) for p in test.images],
        )
    if name == "vowels_gru":
        seq_train, seq_test = data.load_vowels_split()
        return list(seq_train.sequences), list(seq_test.sequences)
    if name == "langid_transformer":
        text_train, text_test = data.load_langid_split()
        return list(text_train.texts), list(text_test.texts)
    raise ValueError(f"no reference data known for model {name!r}")


def _input_features(spec: ModelSpec, payloads: list[Any]) -> np.ndarray:
    """(items, input features) of raw payloads, through the gateway's preprocessor."""
    preprocessor = preprocess.for_model(spec, max_image_pixels=1 << 40)
    extract = features.extractor(spec, getattr(preprocessor, "tokenizer", None))
    rows = []
    for payload in payloads:
        rows.append(extract(payload, preprocessor.preprocess(payload)))
    return np.asarray(rows, dtype=np.float64)


def _noise_p99(values: np.ndarray, feature_profiles: list[FeatureProfile]) -> dict[str, float]:
    """99th percentile of each feature's PSI between a window of NOISE_WINDOW_ITEMS items drawn
    from the reference data itself and the reference: what in-distribution traffic reads."""
    rng = np.random.default_rng(NOISE_SEED)
    draws = np.empty((NOISE_DRAWS, len(feature_profiles)))
    for d in range(NOISE_DRAWS):
        window = values[rng.integers(0, len(values), NOISE_WINDOW_ITEMS)]
        for i, feature in enumerate(feature_profiles):
            draws[d, i] = psi(bin_counts(window[:, i], feature.edges), feature.counts)
    p99 = np.quantile(draws, 0.99, axis=0)
    return {f.name: round(float(v), 4) for f, v in zip(feature_profiles, p99, strict=True)}


def build_profile(model_dir: Path, version: int | str) -> ReferenceProfile:
    """The reference profile of one version of the model in `model_dir`."""
    spec = replace(load_model(model_dir), version=str(version))
    training, held_out = reference_payloads(spec.name)
    reference_inputs = _input_features(spec, held_out)
    training_inputs = _input_features(spec, training)
    inputs, _truth = held_out_inputs(model_dir, int(version))
    outputs = features.output_features(run_onnx(model_dir / str(version) / "model.onnx", inputs))

    profiles: list[FeatureProfile] = []
    training_psi: dict[str, float] = {}
    for i, name in enumerate(features.input_feature_names(spec)):
        edges = quantile_edges(reference_inputs[:, i])
        counts = bin_counts(reference_inputs[:, i], edges)
        trained = bin_counts(training_inputs[:, i], edges)
        profiles.append(FeatureProfile(name, "input", edges, counts, trained))
        training_psi[name] = round(psi(trained, counts), 4)
    class_edges = category_edges(len(spec.labels))
    profiles.append(
        FeatureProfile(
            features.PREDICTED_CLASS,
            "output",
            class_edges,
            bin_counts(outputs[:, 0], class_edges),
            labels=spec.labels,
        )
    )
    confidence_edges = quantile_edges(outputs[:, 1])
    profiles.append(
        FeatureProfile(
            features.CONFIDENCE,
            "output",
            confidence_edges,
            bin_counts(outputs[:, 1], confidence_edges),
        )
    )
    reference_values = np.concatenate([reference_inputs, outputs], axis=1)
    return ReferenceProfile(
        model=spec.name,
        version=str(version),
        kind=spec.kind,
        reference="held_out",
        features=tuple(profiles),
        noise_window_items=NOISE_WINDOW_ITEMS,
        noise_psi_p99=_noise_p99(reference_values, profiles),
        training_psi=training_psi,
    )


def write_profile(model_dir: Path, version: int | str) -> Path:
    """Build and write `<model_dir>/<version>/reference_profile.json`; returns its path."""
    profile = build_profile(model_dir, version)
    path = model_dir / str(version) / REFERENCE_PROFILE_FILE
    path.write_text(profile.dumps(), encoding="utf-8")
    log.info(
        "%s: reference profile of version %s written (%d features, noise PSI p99 at most %.3f)",
        model_dir.name,
        version,
        len(profile.features),
        max(profile.noise_psi_p99.values()),
    )
    return path
