"""Drift building blocks on the committed models' files: features, bins, PSI, windows, profiles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from tokenizers import Tokenizer

from service.model_contract import REFERENCE_PROFILE_FILE
from service.monitoring import features
from service.monitoring.drift import DriftMonitor, DriftWindow
from service.monitoring.profile import (
    ProfileError,
    bin_counts,
    category_edges,
    load_profile,
    psi,
    quantile_edges,
)
from service.repository import load_model
from training.data import load_vowels_split


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    reference = np.array([10, 20, 40, 20, 10])
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference * 3, reference) < 1e-3  # same shares; only the smoothing differs
    small = psi(np.array([12, 22, 38, 18, 10]), reference)
    large = psi(np.array([40, 30, 20, 8, 2]), reference)
    assert 0 < small < 0.02 < 0.25 < large
    # an empty bin on either side stays finite (smoothing)
    assert math.isfinite(psi(np.array([0, 0, 0, 0, 100]), reference))


def test_constant_reference_feature_still_separates_below_equal_above() -> None:
    edges = quantile_edges(np.full(50, 8.0))
    assert bin_counts(np.array([7.0, 8.0, 8.0, 9.0]), edges).tolist() == [1, 2, 1]


def test_quantile_edges_split_the_reference_into_deciles_with_empty_tails() -> None:
    values = np.arange(1000, dtype=np.float64)
    counts = bin_counts(values, quantile_edges(values))
    assert counts[0] == 0 and counts[-1] == 0
    assert counts[1:-1].sum() == 1000 and counts[1:-1].min() >= 99


def test_categories_fall_in_their_own_bin() -> None:
    assert bin_counts(np.array([0, 2, 2, 1]), category_edges(3)).tolist() == [1, 1, 2]


def test_image_features_see_polarity_intensity_ink_and_size() -> None:
    pixels = np.zeros((8, 12), dtype=np.uint8)
    pixels[2:6, 4:8] = 255
    light = features.image_features(Image.fromarray(pixels))
    dark = features.image_features(Image.fromarray(255 - pixels))
    named = dict(zip(features.IMAGE_FEATURES, light, strict=True))
    assert named["dark_on_light"] == 0.0
    assert named["ink_fraction"] == pytest.approx(16 / 96)
    assert named["intensity_mean"] == pytest.approx(255 * 16 / 96)
    assert named["size"] == pytest.approx(math.sqrt(96)) and named["aspect"] == 1.5
    assert dict(zip(features.IMAGE_FEATURES, dark, strict=True))["dark_on_light"] == 1.0


def test_colour_and_narrow_images_are_measured_like_grey_ones() -> None:
    pixels = np.zeros((8, 12), dtype=np.uint8)
    pixels[2:6, 4:8] = 200
    grey = features.image_features(Image.fromarray(pixels))
    colour = features.image_features(Image.fromarray(np.stack([pixels] * 3, axis=2)))
    assert colour == pytest.approx(grey)  # averaged to grey, measured by the float path
    # two pixels wide: every pixel is the border (median 255 of 0, 255, 255, 255)
    narrow = features.image_features(Image.fromarray(np.array([[0, 255], [255, 255]], np.uint8)))
    named = dict(zip(features.IMAGE_FEATURES, narrow, strict=True))
    assert named["dark_on_light"] == 1.0 and named["ink_fraction"] == pytest.approx(0.25)


def test_large_images_are_measured_on_a_bounded_sample() -> None:
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (3000, 2000), np.uint8))
    named = dict(zip(features.IMAGE_FEATURES, features.image_features(photo), strict=True))
    assert named["size"] == pytest.approx(math.sqrt(3000 * 2000))
    assert named["intensity_mean"] == pytest.approx(127.5, abs=3)


def test_text_features_on_the_langid_tokenizer(model_repository: Path) -> None:
    tokenizer = Tokenizer.from_file(str(model_repository / "langid_transformer" / "tokenizer.json"))
    rare = features.rare_token_table(tokenizer)
    assert not rare[tokenizer.token_to_id("[EOS]")]

    def measure(text: str) -> dict[str, float]:
        ids = np.asarray(tokenizer.encode(text.lower()).ids)
        return dict(
            zip(features.TEXT_FEATURES, features.text_features(text, ids, rare), strict=True)
        )

    english, russian = measure("where is the station"), measure("где находится вокзал")
    assert english["non_latin_share"] == 0.0 and russian["non_latin_share"] == 1.0
    assert russian["rare_token_share"] > 0.5 > english["rare_token_share"]
    assert russian["tokens"] > english["tokens"]


def test_sequence_features_are_length_channel_means_and_spreads() -> None:
    values = np.random.default_rng(1).normal(3.0, 2.0, (20, 12)).astype(np.float32)
    measured = features.sequence_features(values)
    assert measured[0] == 20
    np.testing.assert_allclose(measured[1:13], values.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(measured[13:], values.std(axis=0), rtol=1e-4)


def test_output_features_are_argmax_and_softmax_top1() -> None:
    logits = np.array([[1.0, 3.0, 0.0], [5.0, 5.0, 5.0]])
    out = features.output_features(logits)
    assert out[:, 0].tolist() == [1.0, 0.0]
    assert out[0, 1] == pytest.approx(np.exp(3) / (np.exp(1) + np.exp(3) + 1))
    assert out[1, 1] == pytest.approx(1 / 3)


def vowels_window(model_repository: Path, capacity: int) -> DriftWindow:
    spec = load_model(model_repository / "vowels_gru")
    profile = load_profile(spec.path / spec.version / REFERENCE_PROFILE_FILE)
    return DriftWindow(spec, profile, capacity, features.extractor(spec))


def test_window_keeps_the_newest_items_across_wrap_around(model_repository: Path) -> None:
    window = vowels_window(model_repository, capacity=7)
    rows = [[float(i)] * 25 for i in range(12)]
    logits = np.eye(9, dtype=np.float32)[np.arange(12) % 9] * 10
    window.add(rows[:5], logits[:5])
    window.add(rows[5:9], logits[5:9])  # wraps
    window.add(rows[9:], logits[9:])
    assert window.items == 7
    kept = sorted(window.values()[:, 0].tolist())
    assert kept == [float(i) for i in range(5, 12)]
    assert sorted(window.values()[:, 25].tolist()) == sorted(float(i % 9) for i in range(5, 12))


def test_held_out_window_reads_low_and_a_scaled_one_high(model_repository: Path) -> None:
    _train, test = load_vowels_split()
    quiet = vowels_window(model_repository, capacity=500)
    moved = vowels_window(model_repository, capacity=500)
    logits = np.zeros((1, 9), dtype=np.float32)
    for sequence in test.sequences:
        quiet.add([quiet.extract(sequence, {})], logits)
        moved.add([moved.extract(sequence * 1.5, {})], logits)
    quiet_inputs = {k: v for k, v in quiet.distances().items() if not k.startswith("prediction")}
    moved_inputs = {k: v for k, v in moved.distances().items() if not k.startswith("prediction")}
    assert max(quiet_inputs.values()) < 0.01  # the reference sample itself
    assert np.median(list(moved_inputs.values())) > 0.25
    assert moved_inputs["length"] < 0.01  # scaling does not change lengths


def test_monitor_publishes_nan_until_the_window_holds_min_items(model_repository: Path) -> None:
    registry = CollectorRegistry()
    monitor = DriftMonitor(registry, window_items=50, min_items=10, refresh_s=1.0)
    window = monitor.window_for(load_model(model_repository / "vowels_gru"))
    assert window is not None
    labels = {"model": "vowels_gru", "version": "1", "feature": "mean_0"}
    _train, test = load_vowels_split()
    for count, sequence in enumerate(test.sequences[:10], start=1):
        window.add([window.extract(sequence, {})], np.zeros((1, 9), np.float32))
        monitor.refresh()
        value = registry.get_sample_value("modelgate_drift_psi", labels)
        assert value is not None
        assert math.isnan(value) == (count < 10)
    fill = registry.get_sample_value(
        "modelgate_drift_window_items", {"model": "vowels_gru", "version": "1"}
    )
    assert fill == 10


def test_a_version_without_a_profile_is_not_monitored(
    model_repository: Path, tmp_path: Path
) -> None:
    spec = load_model(model_repository / "vowels_gru")
    spec.path = tmp_path  # a version directory without reference_profile.json
    monitor = DriftMonitor(CollectorRegistry(), window_items=50, min_items=10, refresh_s=1.0)
    assert monitor.window_for(spec) is None
    assert monitor.windows == {}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=7), "schema_version 7 is not 1"),
        (lambda d: d["features"][0].update(counts=[1, 2]), "edges and counts do not match"),
        (lambda d: d.pop("features"), "KeyError"),
    ],
)
def test_broken_profile_names_the_file(
    model_repository: Path, tmp_path: Path, edit: object, message: str
) -> None:
    data = json.loads((model_repository / "vowels_gru" / "1" / REFERENCE_PROFILE_FILE).read_text())
    edit(data)  # type: ignore[operator]
    path = tmp_path / REFERENCE_PROFILE_FILE
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=message) as caught:
        load_profile(path)
    assert str(path) in str(caught.value)


def test_profile_of_another_kind_is_refused(model_repository: Path) -> None:
    spec = load_model(model_repository / "vowels_gru")
    digits = load_profile(model_repository / "digits_cnn" / "1" / REFERENCE_PROFILE_FILE)
    with pytest.raises(ProfileError, match="re-run `modelgate profile`"):
        DriftWindow(spec, digits, 10, features.extractor(spec))


def test_features_that_fail_leave_the_request_out_instead_of_failing_it(
    model_repository: Path,
) -> None:
    window = vowels_window(model_repository, capacity=10)
    assert window.features("not a sequence", {}) is None  # logged, not raised
    good = window.features(np.ones((5, 12), dtype=np.float32), {})
    assert good is not None
    window.add([good, None], np.zeros((2, 9), np.float32))
    assert window.items == 0
    window.add([good], np.zeros((1, 9), np.float32))
    assert window.items == 1


def test_a_retired_window_stops_being_published_unless_replaced(model_repository: Path) -> None:
    registry = CollectorRegistry()
    monitor = DriftMonitor(registry, window_items=50, min_items=1, refresh_s=1.0)
    spec = load_model(model_repository / "vowels_gru")
    old = monitor.window_for(spec)
    new = monitor.window_for(spec)  # the same version re-read: a new runtime, a new window
    assert old is not None and new is not None
    labels = {"model": "vowels_gru", "version": spec.version}
    monitor.forget(old)  # the old runtime drains after the new one took over: nothing changes
    assert registry.get_sample_value("modelgate_drift_window_items", labels) == 0
    monitor.forget(new)  # the version leaves: its series go
    monitor.refresh()
    assert registry.get_sample_value("modelgate_drift_window_items", labels) is None
    assert registry.get_sample_value("modelgate_drift_psi", {**labels, "feature": "mean_0"}) is None
    assert monitor.windows == {}
