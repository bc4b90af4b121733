"""MNIST-style digit normalisation: polarity, crop, 20x20 box, centre of mass, no-ink refusal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from PIL import Image, ImageDraw

from service.errors import BadInput
from service.preprocess.digit import NoInk, centre_digit
from service.preprocess.image import ImagePreprocessor
from service.repository import ImageSpec

SPEC = ImageSpec(
    input="IMAGE", height=28, width=28, channels=1, color_mode="L", resample="bilinear",
    scale=1 / 255, mean=(0.0,), std=(1.0,), layout="digit",
)  # fmt: skip


def scan(index: int = 0) -> np.ndarray:
    """A real scikit-learn digit, 8-bit, bright ink on dark."""
    digits = sklearn.datasets.load_digits()
    return np.round(digits.images[index] * 255.0 / 16.0).astype(np.uint8)


def seven(
    canvas: tuple[int, int], box: tuple[int, int, int, int], ink: int, paper: int
) -> Image.Image:
    """A drawn seven inside `box` (left, top, right, bottom) on a `canvas` of (width, height)."""
    image = Image.new("L", canvas, paper)
    left, top, right, bottom = box
    width = max(1, (right - left) // 8)
    ImageDraw.Draw(image).line(
        [(left, top), (right, top), (left + (right - left) // 3, bottom)], fill=ink, width=width
    )
    return image


def normalised(image: Image.Image | np.ndarray) -> np.ndarray:
    return centre_digit(np.asarray(image, dtype=np.float32), SPEC)


def test_dark_ink_on_light_paper_equals_light_ink_on_dark() -> None:
    pixels = scan(3)
    np.testing.assert_array_equal(normalised(pixels), normalised(255 - pixels))


def test_ink_is_scaled_into_the_box_and_centred_by_mass() -> None:
    out = normalised(seven((300, 200), (40, 30, 120, 170), ink=20, paper=240))
    rows = np.flatnonzero(out.max(axis=1) > 0)
    cols = np.flatnonzero(out.max(axis=0) > 0)
    assert rows[-1] - rows[0] + 1 == SPEC.digit_box  # the taller side fills the box
    assert cols[-1] - cols[0] + 1 < SPEC.digit_box  # aspect kept: narrower than tall
    y, x = np.indices(out.shape)
    centre = ((out * y).sum() / out.sum(), (out * x).sum() / out.sum())
    assert centre == pytest.approx((13.5, 13.5), abs=0.5)
    assert out.max() > 240  # ink brought to full contrast (dark grey ink on light grey)


def test_position_and_size_in_the_frame_do_not_matter() -> None:
    small_corner = normalised(seven((200, 200), (5, 5, 45, 75), ink=0, paper=255))
    large_centre = normalised(seven((400, 400), (120, 60, 280, 340), ink=0, paper=255))
    assert np.abs(small_corner - large_centre).mean() < 12  # grey levels of 255: same shape


def test_noise_on_the_paper_is_not_ink() -> None:
    clean = seven((120, 120), (30, 20, 90, 100), ink=30, paper=220)
    noise = np.random.default_rng(0).normal(0, 6, size=(120, 120))
    noisy = np.clip(np.asarray(clean, np.float32) + noise, 0, 255)
    assert np.abs(normalised(noisy) - normalised(clean)).mean() < 6


@pytest.mark.parametrize(
    "pixels",
    [
        np.full((28, 28), 255, np.uint8),  # white page
        np.zeros((64, 48), np.uint8),  # black screen
        np.full((10, 10), 128, np.uint8),  # grey
        np.clip(np.random.default_rng(1).normal(235, 4, (80, 80)), 0, 255).astype(np.uint8),
        np.full((1, 1), 0, np.uint8),  # a single pixel
    ],
    ids=["white", "black", "grey", "noisy-paper", "one-pixel"],
)
def test_an_image_without_ink_is_bad_input(pixels: np.ndarray) -> None:
    with pytest.raises(NoInk, match="no ink") as caught:
        normalised(pixels)
    assert isinstance(caught.value, BadInput)  # 400 bad_input through every transport


def test_the_preprocessor_applies_the_digit_layout_and_normalisation() -> None:
    spec = ImageSpec(**{**SPEC.__dict__, "mean": (0.1,), "std": (0.3,)})
    pre = ImagePreprocessor(spec, max_pixels=10**6)
    buffer = io.BytesIO()
    Image.fromarray(255 - scan(5)).save(buffer, format="PNG")  # dark on light, as users send
    tensor = pre.preprocess(pre.decode(buffer.getvalue()))["IMAGE"]
    assert tensor.shape == (1, 28, 28) and tensor.dtype == np.float32
    expected = (normalised(scan(5)) / np.float32(255) - np.float32(0.1)) / np.float32(0.3)
    np.testing.assert_allclose(tensor[0], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "change",
    [{"channels": 3, "mean": (0, 0, 0), "std": (1, 1, 1)}, {"digit_box": 30}, {"layout": "x"}],
    ids=["rgb", "box-too-big", "unknown-layout"],
)
def test_unusable_digit_specs_are_refused_at_startup(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImagePreprocessor(ImageSpec(**{**SPEC.__dict__, **change}), max_pixels=10**6)


def test_a_photo_with_a_busy_border_is_laid_out_not_refused() -> None:
    photo = Image.open(Path(sklearn.datasets.__file__).parent / "images" / "china.jpg")
    out = normalised(photo.convert("L"))
    assert out.shape == (28, 28) and out.max() > 0  # a (meaningless) digit, as documented


def _numpy_ink_and_box(
    pixels: np.ndarray, spec: ImageSpec
) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """The normalisation's ink step as numpy wrote it when the committed model was trained
    (None: no ink)."""
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])

    def median(values: np.ndarray) -> float:
        ordered, middle = np.sort(values), len(values) // 2
        if len(ordered) % 2:
            return float(ordered[middle])
        return float((ordered[middle - 1] + ordered[middle]) / 2)

    background = median(ring)
    if background > 127.5:
        pixels, ring, background = 255.0 - pixels, 255.0 - ring, 255.0 - background
    spread = min(median(np.abs(ring - np.float32(background))) * 1.4826, spec.max_noise)
    ink = np.maximum(pixels - np.float32(background + spec.noise_sigmas * spread), np.float32(0))
    if float(ink.max()) < spec.min_contrast:
        return None
    ink = ink * np.float32(255.0 / float(ink.max()))
    marked = ink >= spec.ink_threshold * 255.0
    rows, cols = np.flatnonzero(marked.any(axis=1)), np.flatnonzero(marked.any(axis=0))
    return ink, (rows[0], rows[-1], cols[0], cols[-1])


def test_the_compiled_ink_step_gives_numpys_values_bit_for_bit() -> None:
    """The model was trained on images normalised by numpy; the compiled step must give the
    same float32 values (noisy paper, both polarities, odd and even border lengths)."""
    from service.preprocess.digit import _ink_and_box_compiled

    rng = np.random.default_rng(0)
    compared = 0
    for index in range(200):
        height, width = rng.integers(3, 60, size=2)
        paper, ink_level = rng.integers(0, 256, size=2)
        pixels = np.full((height, width), paper, np.float32)
        pixels += rng.normal(0, rng.uniform(0, 20), size=pixels.shape).astype(np.float32)
        pixels[height // 4 : 3 * height // 4, width // 3 : 2 * width // 3 + 1] = ink_level
        pixels = np.clip(np.round(pixels), 0, 255).astype(np.float32)
        reference = _numpy_ink_and_box(pixels, SPEC)
        got, _, *got_box = _ink_and_box_compiled(
            pixels, SPEC.noise_sigmas, SPEC.max_noise, SPEC.min_contrast, SPEC.ink_threshold * 255
        )
        if reference is None:  # no ink: the compiled step says so with an empty array
            assert got.size == 0, index
            continue
        expected, box = reference
        np.testing.assert_array_equal(got, expected, err_msg=f"image {index}")
        assert tuple(got_box) == box, index
        compared += 1
    assert compared >= 100  # the rest have no ink above the noise floor, on both sides
