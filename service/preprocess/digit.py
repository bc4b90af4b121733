"""MNIST-style normalisation of one digit image: the layout `"digit"` of an image model.

What users send varies in everything the model should not care about: dark ink on white paper or
light ink on a dark screen, a digit filling the frame or small in a corner, a 12-pixel glyph or a
600-pixel photo. This brings every image to the form MNIST was built in (LeCun et al.): bright ink
on black, cropped to the ink, scaled into a 20x20 box keeping its aspect, placed in 28x28 so its
centre of mass is the centre. Training runs every example through this same function
(training/features.py), so what the model learnt is exactly what the gateway feeds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import types
from PIL import Image

from service.compiled import F32_2, OUT_F32_2, border_ring, compiled
from service.errors import BadInput
from service.repository import ImageSpec

# Median absolute deviation of a normal distribution, in standard deviations.
_MAD_TO_SIGMA = 1.4826


class NoInk(BadInput):
    """The image is one flat background: there is no digit to classify."""


@compiled(None)
def _float32_median(ordered: Any) -> Any:  # pragma: no cover - compiled
    """The median of sorted float32 values (held in any float dtype) as numpy computes it for a
    float32 array: the middle value, or the float32 sum of the two middle ones, halved."""
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return np.float64(ordered[middle])
    return np.float64((np.float32(ordered[middle - 1]) + np.float32(ordered[middle])) / 2)


def _ink_and_box(
    pixels: np.ndarray,
    noise_sigmas: float,
    max_noise: float,
    min_contrast: float,
    ink_level: float,
) -> tuple[np.ndarray, np.floating[Any], int, int, int, int]:  # pragma: no cover
    """(H, W) grey levels 0..255 -> (ink 0..255 on 0, its peak before stretching, first and
    last row and column holding ink at `ink_level` or more); an empty array when the peak is
    below `min_contrast`.

    The background is the border's median: light borders mean dark ink, which is flipped. Grey
    levels within `noise_sigmas` robust standard deviations of the background (scanner or sensor
    noise, JPEG ripples; the deviation capped at `max_noise`, since a photo's busy border is not
    noise) count as background, and the rest is stretched so the brightest ink is 255.

    Every step is the float32 arithmetic numpy did before this was compiled (the medians of
    sorted float32 values, float32 differences, maxima and products), so the model sees the
    values it was trained on.
    """
    rows, cols = pixels.shape
    ring = border_ring(pixels)  # float64 copies of the float32 values, sorted
    background = _float32_median(ring)
    flip = background > 127.5
    if flip:
        background = 255.0 - background
    centre = np.float32(background)
    deviation = np.empty(len(ring), dtype=np.float32)
    for i in range(len(ring)):
        value = np.float32(ring[i])
        level = np.float32(255.0) - value if flip else value
        deviation[i] = abs(level - centre)
    deviation.sort()
    spread = np.minimum(_float32_median(deviation) * _MAD_TO_SIGMA, max_noise)
    floor = np.float32(background + noise_sigmas * spread)
    ink = np.empty((rows, cols), dtype=np.float32)
    peak = np.float32(0.0)
    for r in range(rows):
        for c in range(cols):
            level = np.float32(255.0) - pixels[r, c] if flip else pixels[r, c]
            value = max(level - floor, np.float32(0.0))
            ink[r, c] = value
            peak = max(peak, value)
    if np.float64(peak) < min_contrast:
        return np.empty((0, 0), dtype=np.float32), np.float64(peak), 0, -1, 0, -1
    scale = np.float32(255.0 / np.float64(peak))
    threshold = np.float32(ink_level)
    top, bottom, left, right = rows, -1, cols, -1
    for r in range(rows):
        for c in range(cols):
            value = ink[r, c] * scale
            ink[r, c] = value
            if value >= threshold:
                top = min(top, r)
                bottom = max(bottom, r)
                left = min(left, c)
                right = max(right, c)
    return ink, np.float64(peak), top, bottom, left, right


_ink_and_box_compiled = compiled(
    types.Tuple((OUT_F32_2, types.float64, types.int64, types.int64, types.int64, types.int64))(
        F32_2, types.float64, types.float64, types.float64, types.float64
    )
)(_ink_and_box)


def centre_digit(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """(H, W) grey levels 0..255 of one digit -> (height, width) float32 ink 0..255, MNIST-style."""
    ink, peak, top, bottom, left, right = _ink_and_box_compiled(
        np.ascontiguousarray(pixels, dtype=np.float32),
        spec.noise_sigmas,
        spec.max_noise,
        spec.min_contrast,
        spec.ink_threshold * 255.0,
    )
    if peak < spec.min_contrast or bottom < top:
        raise NoInk(
            f"image has no ink: nothing stands out from the background by {spec.min_contrast:g} "
            f"grey levels or more (the brightest mark reaches {peak:.0f}); send one digit, "
            "dark on light or light on dark"
        )
    crop = ink[top : bottom + 1, left : right + 1]

    # Scale the longer side to the box, keeping aspect (a "1" stays narrow). Pillow's resize
    # filters are antialiased when shrinking, so a large photo does not alias into speckle.
    height, width = crop.shape
    factor = spec.digit_box / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    scaled = np.asarray(
        Image.fromarray(np.ascontiguousarray(crop), mode="F").resize(
            size, Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    scaled = np.minimum(np.maximum(scaled, np.float32(0.0)), np.float32(255.0))

    # Place the box so the ink's centre of mass falls on the canvas centre, staying inside it.
    canvas = np.zeros((spec.height, spec.width), dtype=np.float32)
    mass = float(scaled.sum())
    box_h, box_w = scaled.shape
    if mass > 0:
        centre_y = float((scaled.sum(axis=1) * np.arange(box_h)).sum()) / mass
        centre_x = float((scaled.sum(axis=0) * np.arange(box_w)).sum()) / mass
    else:  # an ink speck thinner than the resize could keep
        centre_y, centre_x = (box_h - 1) / 2, (box_w - 1) / 2
    top = min(max(round((spec.height - 1) / 2 - centre_y), 0), spec.height - box_h)
    left = min(max(round((spec.width - 1) / 2 - centre_x), 0), spec.width - box_w)
    canvas[top : top + box_h, left : left + box_w] = scaled
    return canvas
