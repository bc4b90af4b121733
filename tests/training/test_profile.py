"""The committed reference profiles are what `modelgate profile` computes from the committed
models and the real data, and they describe the held-out data the way the gateway measures it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.model_contract import REFERENCE_PROFILE_FILE, is_model_dir
from service.monitoring import features
from service.monitoring.profile import load_profile
from service.repository import load_model
from training.profile import NOISE_WINDOW_ITEMS, build_profile

REPO = Path(__file__).resolve().parents[2] / "model_repository"
MODELS = sorted(p.name for p in REPO.iterdir() if is_model_dir(p))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_committed_profile_is_recomputed_from_the_committed_model(name: str) -> None:
    committed = load_profile(REPO / name / "1" / REFERENCE_PROFILE_FILE)
    fresh = build_profile(REPO / name, 1)
    assert fresh.names == committed.names
    for mine, theirs in zip(fresh.features, committed.features, strict=True):
        np.testing.assert_allclose(mine.edges, theirs.edges, rtol=1e-6, err_msg=mine.name)
        assert mine.counts.tolist() == theirs.counts.tolist(), mine.name
        if mine.training_counts is not None:
            assert theirs.training_counts is not None
            assert mine.training_counts.tolist() == theirs.training_counts.tolist(), mine.name
    assert fresh.training_psi == committed.training_psi
    assert fresh.noise_psi_p99 == pytest.approx(committed.noise_psi_p99, abs=2e-4)


@pytest.mark.parametrize("name", MODELS)
def test_profile_covers_every_feature_the_gateway_measures(name: str) -> None:
    spec = load_model(REPO / name)
    profile = load_profile(REPO / name / spec.version / REFERENCE_PROFILE_FILE)
    assert (profile.model, profile.version, profile.kind) == (name, spec.version, spec.kind)
    assert profile.names == (*features.input_feature_names(spec), *features.OUTPUT_FEATURES)
    sizes = {int(f.counts.sum()) for f in profile.features}
    assert len(sizes) == 1 and sizes.pop() >= 300  # every feature over the same held-out items
    (classes,) = [f for f in profile.features if f.name == features.PREDICTED_CLASS]
    assert classes.labels == spec.labels and len(classes.counts) == len(spec.labels)
    # In-distribution windows of the default size read far below the alert threshold (0.25).
    assert profile.noise_window_items == NOISE_WINDOW_ITEMS
    assert max(profile.noise_psi_p99.values()) < 0.1


def test_profile_command_writes_into_the_version_directory(tmp_path: Path) -> None:
    """`modelgate profile` on a copy of a built model, without retraining it."""
    import shutil

    model_dir = tmp_path / "vowels_gru"
    shutil.copytree(REPO / "vowels_gru", model_dir)
    (model_dir / "1" / REFERENCE_PROFILE_FILE).unlink()
    result = subprocess.run(
        [sys.executable, "-m", "modelgate", "profile", "-r", str(tmp_path), "-m", "vowels_gru"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = model_dir / "1" / REFERENCE_PROFILE_FILE
    assert result.stdout.strip().endswith(str(written))
    fresh, committed = (
        load_profile(written),
        load_profile(REPO / "vowels_gru" / "1" / REFERENCE_PROFILE_FILE),
    )
    assert fresh.names == committed.names
    assert [f.counts.tolist() for f in fresh.features] == [
        f.counts.tolist() for f in committed.features
    ]
    # the model itself is untouched
    assert (model_dir / "1" / "model.onnx").read_bytes() == (
        REPO / "vowels_gru" / "1" / "model.onnx"
    ).read_bytes()


def test_profile_command_names_an_unknown_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelgate", "profile", "-r", str(REPO), "-m", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "unknown model(s) ['nope']" in result.stderr
