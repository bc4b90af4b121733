"""MNIST-style normalisation of one digit image: the layout `"digit"` of an image model.

What users send varies in everything the model should not care about: dark ink on white paper or
light ink on a dark screen, a digit filling the frame or small in a corner, a 12-pixel glyph or a
600-pixel photo. This brings every image to the form MNIST was built in (LeCun et al.): bright ink
on black, cropped to the ink, scaled into a 20x20 box keeping its aspect, placed in 28x28 so its
centre of mass is the centre. Training runs every example through this same function
(training/features.py), so what the model learnt is exactly what the gateway feeds it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.errors import BadInput
from service.repository import ImageSpec

# Median absolute deviation of a normal distribution, in standard deviations.
_MAD_TO_SIGMA = 1.4826


class NoInk(BadInput):
    """The image is one flat background: there is no digit to classify."""


def median(values: np.ndarray) -> float:
    """np.median of a 1-D array, without its generic machinery (this runs on every request)."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def border(pixels: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of a 2-D array (the paper around a digit)."""
    if min(pixels.shape) <= 2:
        return pixels.ravel()
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


def bright_ink(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """(H, W) grey levels 0..255 -> ink 0..255 on 0, whatever the polarity; NoInk if none.

    The background is the border's median: light borders mean dark ink, which is flipped. Grey
    levels within `noise_sigmas` robust standard deviations of the background (scanner or sensor
    noise, JPEG ripples; the deviation capped at `max_noise`, since a photo's busy border is not
    noise) count as background, and the rest is stretched so the brightest ink is 255.
    """
    ring = border(pixels)
    background = median(ring)
    if background > 127.5:
        pixels = 255.0 - pixels
        ring = 255.0 - ring
        background = 255.0 - background
    spread = min(median(np.abs(ring - np.float32(background))) * _MAD_TO_SIGMA, spec.max_noise)
    floor = background + spec.noise_sigmas * spread
    ink = np.maximum(pixels - np.float32(floor), np.float32(0.0))
    peak = float(ink.max())
    if peak < spec.min_contrast:
        raise NoInk(
            f"image has no ink: nothing stands out from the background by {spec.min_contrast:g} "
            f"grey levels or more (the brightest mark reaches {peak:.0f}); send one digit, "
            "dark on light or light on dark"
        )
    stretched: np.ndarray = ink * np.float32(255.0 / peak)
    return stretched


def centre_digit(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """(H, W) grey levels 0..255 of one digit -> (height, width) float32 ink 0..255, MNIST-style."""
    ink = bright_ink(np.asarray(pixels, dtype=np.float32), spec)
    marked = ink >= spec.ink_threshold * 255.0
    rows = np.flatnonzero(marked.any(axis=1))
    cols = np.flatnonzero(marked.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

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
