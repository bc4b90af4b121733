"""Compiled loops of the out-of-distribution score (numba), one call per term and batch.

On the request path a batch is usually one row, and each numpy call costs a few microseconds
whatever its size: the image statistics alone took ~20 numpy calls (24 us in a tight loop, ~45
us between ONNX Runtime calls in a serving process). Written as loops over one row's values,
each term is one call, and the `add_*` kernels add their scaled value into the score in place,
so no numpy call joins the terms (`benchmarks/ood_cost.py`, docs/out-of-distribution.md).
Training (training/ood.py) fits and calibrates with these same functions, so the figures
describe exactly what is served.

Every kernel has one signature, compiled and cached as service/compiled.py says. The wrappers
in service/monitoring/ood.py and features.py bring arrays to the declared types and layouts.
Sums are accumulated in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types

from service.compiled import (
    F32_1,
    F32_2,
    F32_3,
    I64_1,
    I64_2,
    OUT_F32_2,
    OUT_F64_1,
    U8_2,
    border_ring,
    compiled,
)


@compiled(OUT_F32_2(F32_3))
def image_stats(images: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """[N, H, W] model-ready images -> [N, 5]: mean, standard deviation, mean absolute change
    between horizontal and between vertical neighbours, share of pixels above mean + std."""
    n, rows, side = images.shape
    out = np.empty((n, 5), dtype=np.float32)
    count = rows * side
    for i in range(n):
        x = images[i]
        total = np.float64(0.0)
        squares = np.float64(0.0)
        across = np.float64(0.0)
        down = np.float64(0.0)
        for r in range(rows):
            for c in range(side):
                v = np.float64(x[r, c])
                total += v
                squares += v * v
                if c + 1 < side:
                    across += abs(np.float64(x[r, c + 1]) - v)
                if r + 1 < rows:
                    down += abs(np.float64(x[r + 1, c]) - v)
        mean = total / count
        spread = math.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        cut = mean + spread
        bright = 0
        for r in range(rows):
            for c in range(side):
                if x[r, c] > cut:
                    bright += 1
        out[i, 0] = mean
        out[i, 1] = spread
        out[i, 2] = across / max(rows * (side - 1), 1)
        out[i, 3] = down / max((rows - 1) * side, 1)
        out[i, 4] = bright / count
    return out


@compiled(types.void(F32_2, F32_2, F32_1, types.float64, OUT_F64_1))
def add_whitened_distance(
    features: np.ndarray, lower: np.ndarray, center: np.ndarray, scale: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out += scale * |features @ lower - center|^2 per row: a squared Mahalanobis distance
    when lower @ lower.T is the precision and center the mean times lower."""
    n, width = features.shape
    k = lower.shape[1]
    z = np.empty(k, dtype=np.float64)
    for i in range(n):
        for j in range(k):
            z[j] = -np.float64(center[j])
        for m in range(width):
            f = np.float64(features[i, m])
            for j in range(k):
                z[j] += f * lower[m, j]
        total = np.float64(0.0)
        for j in range(k):
            total += z[j] * z[j]
        out[i] += scale * total


@compiled(types.void(F32_2, F32_2, F32_2, types.float64, OUT_F64_1))
def add_class_distance(
    projected: np.ndarray, logits: np.ndarray, offsets: np.ndarray, scale: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out += scale * |projected - offsets[predicted class]|^2 per row (the class the logits
    rank first)."""
    n, k = projected.shape
    for i in range(n):
        best = 0
        for c in range(1, logits.shape[1]):
            if logits[i, c] > logits[i, best]:
                best = c
        total = np.float64(0.0)
        for j in range(k):
            d = np.float64(projected[i, j]) - np.float64(offsets[best, j])
            total += d * d
        out[i] += scale * total


@compiled(types.void(F32_2, types.float64, OUT_F64_1))
def add_energy(logits: np.ndarray, scale: float, out: np.ndarray) -> None:  # pragma: no cover
    """out += scale * -logsumexp(logits) per row (shifted by the row's maximum: no overflow)."""
    n, classes = logits.shape
    for i in range(n):
        top = np.float64(logits[i, 0])
        for c in range(1, classes):
            top = np.maximum(top, np.float64(logits[i, c]))
        total = np.float64(0.0)
        for c in range(classes):
            total += math.exp(np.float64(logits[i, c]) - top)
        out[i] += scale * -(top + math.log(total))


@compiled(types.void(F32_2, types.int64, types.boolean, types.boolean, types.float64, OUT_F64_1))
def add_likelihood_term(
    rows: np.ndarray, languages: int, ratio: bool, total: bool, scale: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """From `token_likelihood`'s [groups + 1, N]: out += scale * -(best of the first `languages`
    groups) per row, or with `ratio` scale * (group `languages`, the background, - that best).
    With `total` the value is for the whole text (times the last row, its token count) instead
    of per token."""
    count = rows.shape[0] - 1
    for i in range(rows.shape[1]):
        best = np.float64(rows[0, i])
        for g in range(1, languages):
            best = np.maximum(best, np.float64(rows[g, i]))
        value = np.float64(rows[languages, i]) - best if ratio else -best
        if total:
            value *= np.float64(rows[count, i])
        out[i] += scale * value


@compiled(OUT_F32_2(I64_2, F32_2, I64_1, F32_2, types.int64, types.int64))
def token_likelihood(
    ids: np.ndarray,
    mask: np.ndarray,
    seen: np.ndarray,
    table: np.ndarray,
    vocab: int,
    start: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """[groups + 1, N]: the mean log-likelihood of each row's real tokens (mask 1) under each
    group's token-bigram model, then the row's count of real tokens (at least 1).

    `table` is [vocab + pairs, groups]: the unigram term of each token, then the bigram term of
    each pair in `seen` (sorted keys previous * vocab + token). A pair not in `seen` reads its
    token's unigram term. The first token's previous one is `start`; ids are clipped into the
    vocabulary."""
    n, length = ids.shape
    groups = table.shape[1]
    out = np.zeros((groups + 1, n), dtype=np.float32)
    sums = np.empty(groups, dtype=np.float64)
    last = len(seen) - 1
    for i in range(n):
        sums[:] = 0.0
        weight = np.float64(0.0)
        previous = start
        for t in range(length):
            token = min(max(ids[i, t], 0), vocab - 1)
            m = np.float64(mask[i, t])
            if m != 0.0:
                key = previous * vocab + token
                at = min(np.searchsorted(seen, key), last)
                row = at + vocab if last >= 0 and seen[at] == key else token
                for g in range(groups):
                    sums[g] += m * table[row, g]
                weight += m
            previous = token
        weight = np.maximum(weight, 1.0)
        for g in range(groups):
            out[g, i] = sums[g] / weight
        out[groups, i] = weight
    return out


@compiled(OUT_F32_2(F32_3, F32_2))
def sequence_features(values: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover
    """[N, T, C] frames and [N, T] mask -> [N, 3C + 1]: per channel the mean, standard
    deviation and mean absolute change between consecutive real frames, then log(length)."""
    n, steps, channels = values.shape
    out = np.empty((n, 3 * channels + 1), dtype=np.float32)
    for i in range(n):
        length = np.float64(0.0)
        for t in range(steps):
            length += mask[i, t]
        frames = np.maximum(length, 1.0)
        pairs = np.maximum(length - 1.0, 1.0)
        for c in range(channels):
            total = np.float64(0.0)
            squares = np.float64(0.0)
            change = np.float64(0.0)
            for t in range(steps):
                w = np.float64(mask[i, t])
                v = np.float64(values[i, t, c]) * w
                total += v
                squares += v * v
                if t > 0:
                    change += abs(
                        v - np.float64(values[i, t - 1, c]) * np.float64(mask[i, t - 1])
                    ) * (w * np.float64(mask[i, t - 1]))
            mean = total / frames
            out[i, c] = mean
            out[i, channels + c] = math.sqrt(np.maximum(squares / frames - mean * mean, 0.0))
            out[i, 2 * channels + c] = change / pairs
        out[i, 3 * channels] = math.log(frames)
    return out


# --- drift features (service/monitoring/features.py): one call per request's item ---------------


def _grey_features(pixels: np.ndarray, ink_level: float) -> np.ndarray:  # pragma: no cover
    """[H, W] grey levels -> [mean, standard deviation, ink share, background level]. The
    background is the median of the border ring (all pixels when the image is 2 wide or less);
    ink is any pixel more than `ink_level` from it."""
    rows, side = pixels.shape
    count = rows * side
    ring = border_ring(pixels)
    background = ring[len(ring) // 2]
    total = np.float64(0.0)
    squares = np.float64(0.0)
    ink = 0
    for r in range(rows):
        for c in range(side):
            v = np.float64(pixels[r, c])
            total += v
            squares += v * v
            if abs(v - background) > ink_level:
                ink += 1
    mean = total / count
    out = np.empty(4, dtype=np.float64)
    out[0] = mean
    out[1] = math.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    out[2] = ink / count
    out[3] = background
    return out


grey_features_u8 = compiled(OUT_F64_1(U8_2, types.float64))(_grey_features)
grey_features_f32 = compiled(OUT_F64_1(F32_2, types.float64))(_grey_features)


@compiled(OUT_F64_1(F32_2))
def sequence_moments(values: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """[T, C] frames -> [T, each channel's mean over time, each channel's standard deviation]."""
    steps, channels = values.shape
    out = np.zeros(1 + 2 * channels, dtype=np.float64)
    out[0] = steps
    for t in range(steps):
        for c in range(channels):
            v = np.float64(values[t, c])
            out[1 + c] += v
            out[1 + channels + c] += v * v
    length = np.float64(max(steps, 1))
    for c in range(channels):
        mean = out[1 + c] / length
        out[1 + c] = mean
        out[1 + channels + c] = math.sqrt(
            np.maximum(out[1 + channels + c] / length - mean * mean, 0.0)
        )
    return out
