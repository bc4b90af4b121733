"""The compiled loops of the OOD score against numpy's answers, on read-only inputs too."""

from __future__ import annotations

import numpy as np

from service.monitoring import kernels


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view, like a tensor decoded from a backend's raw bytes."""
    view = np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)
    assert not view.flags.writeable
    return view


def test_energy_is_minus_logsumexp_and_higher_when_no_class_fits() -> None:
    logits = np.array([[10.0, 0.0, 0.0], [0.1, 0.0, -0.1], [1000.0, 999.0, 0.0]], np.float32)
    energy = np.zeros(3)
    kernels.add_energy(_read_only(logits), 1.0, energy)
    expected = -np.log(np.exp(logits[:2].astype(np.float64)).sum(axis=1))
    np.testing.assert_allclose(energy[:2], expected, rtol=1e-6)
    assert energy[1] > energy[0]  # flat logits: higher energy
    assert np.isfinite(energy[2])  # no overflow on large logits


def test_whitened_distance_is_the_squared_norm_of_the_whitened_offset() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 5)).astype(np.float32)
    lower = rng.normal(size=(5, 3)).astype(np.float32)
    center = rng.normal(size=3).astype(np.float32)
    z = features.astype(np.float64) @ lower - center
    expected = (z * z).sum(axis=1)
    out = np.zeros(4)
    kernels.add_whitened_distance(features, lower, center, 1.0, out)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # added into what `out` holds, scaled; read-only inputs as well
    kernels.add_whitened_distance(
        _read_only(features), _read_only(lower), _read_only(center), -0.5, out
    )
    np.testing.assert_allclose(out, 0.5 * expected, rtol=1e-5)


def test_class_distance_uses_the_class_the_logits_rank_first() -> None:
    projected = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 1.0, 2.0]], np.float32)
    offsets = np.array([[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]], np.float32)
    # row 0: class 1, |(1, 2) - (1, 0)|^2 = 4; row 1: class 0, |(0, 0) - (0, 0)|^2 = 0
    out = np.array([1.0, 1.0])
    kernels.add_class_distance(projected, logits, offsets, 2.0, out)
    assert out.tolist() == [9.0, 1.0]
    read_only = [_read_only(a) for a in (projected, logits, offsets)]
    kernels.add_class_distance(*read_only, -2.0, out)
    assert out.tolist() == [1.0, 1.0]


def test_likelihood_terms_take_the_best_language_and_the_background_ratio() -> None:
    # three groups (two languages, then the background), then the token counts; two rows
    rows = np.array([[-2.0, -5.0], [-3.0, -1.0], [-1.5, -4.0], [3.0, 1.0]], np.float32)
    best = np.zeros(2)
    kernels.add_likelihood_term(rows, 2, False, False, 1.0, best)
    assert best.tolist() == [2.0, 1.0]  # minus the better language's log-likelihood
    ratio = np.zeros(2)
    kernels.add_likelihood_term(_read_only(rows), 2, True, False, 2.0, ratio)
    assert ratio.tolist() == [2 * (-1.5 + 2.0), 2 * (-4.0 + 1.0)]
    # whole text: the per-token values times each row's token count (3 and 1)
    best_total = np.zeros(2)
    kernels.add_likelihood_term(rows, 2, False, True, 1.0, best_total)
    assert best_total.tolist() == [6.0, 1.0]
    ratio_total = np.zeros(2)
    kernels.add_likelihood_term(rows, 2, True, True, 2.0, ratio_total)
    assert ratio_total.tolist() == [2 * 3 * (-1.5 + 2.0), 2 * 1 * (-4.0 + 1.0)]


def test_image_stats_and_sequence_features_take_read_only_tensors() -> None:
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(
        kernels.image_stats(_read_only(images)), kernels.image_stats(images)
    )
    values = rng.normal(size=(2, 7, 3)).astype(np.float32)
    mask = np.ones((2, 7), np.float32)
    mask[1, 4:] = 0
    np.testing.assert_array_equal(
        kernels.sequence_features(_read_only(values), _read_only(mask)),
        kernels.sequence_features(values, mask),
    )


def test_token_likelihood_takes_read_only_ids_and_an_empty_pair_table() -> None:
    vocab, start = 4, 3
    table = np.log(np.array([[0.1, 0.4], [0.2, 0.3], [0.3, 0.2], [0.4, 0.1]], np.float32))
    ids = np.array([[1, 2, 0]], np.int64)
    mask = np.array([[1, 1, 0]], np.float32)
    seen = np.zeros(0, np.int64)  # no pair seen: every token reads its unigram term
    expected = np.r_[table[[1, 2]].mean(axis=0), 2.0][:, None]  # then the count of real tokens
    got = kernels.token_likelihood(_read_only(ids), _read_only(mask), seen, table, vocab, start)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
