"""Image preprocessing: real JPEG/PNG files, modes, EXIF orientation, bad and hostile inputs."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from PIL import Image

from service.errors import BadInput, PayloadTooLarge, UnsupportedMediaType
from service.preprocess.image import ImagePreprocessor
from service.repository import ImageSpec

SAMPLE_JPEGS = Path(sklearn.datasets.__file__).parent / "images"

SPEC = ImageSpec(
    input="IMAGE", height=28, width=28, channels=1, color_mode="L", resample="bilinear",
    scale=1 / 255, mean=(0.5,), std=(0.25,), invert=True,
)  # fmt: skip


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def expected_tensor(image: Image.Image, spec: ImageSpec = SPEC) -> np.ndarray:
    """The documented formula, written out independently of the implementation."""
    pixels = np.asarray(image.convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32)
    if spec.invert:
        pixels = 255 - pixels
    return ((pixels * spec.scale - spec.mean[0]) / spec.std[0])[None]


@pytest.fixture
def pre() -> ImagePreprocessor:
    return ImagePreprocessor(SPEC, max_pixels=4_000_000)


def run(pre: ImagePreprocessor, payload: bytes) -> np.ndarray:
    return pre.preprocess(pre.decode(payload))["IMAGE"]


@pytest.mark.parametrize("name", ["china.jpg", "flower.jpg"])
def test_real_jpeg_matches_the_documented_formula(pre: ImagePreprocessor, name: str) -> None:
    data = (SAMPLE_JPEGS / name).read_bytes()
    tensor = run(pre, data)
    assert tensor.shape == (1, 28, 28) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, expected_tensor(Image.open(io.BytesIO(data))), atol=1e-5)


def test_digit_png_and_jpeg_agree(pre: ImagePreprocessor) -> None:
    digits = sklearn.datasets.load_digits()
    image = Image.fromarray((digits.images[0] * 255 / 16).astype(np.uint8), "L")
    png = run(pre, encode(image, "PNG"))
    np.testing.assert_allclose(png, expected_tensor(image), atol=1e-5)
    jpeg = run(pre, encode(image.resize((64, 64)), "JPEG", quality=95))
    assert np.abs(jpeg - run(pre, encode(image.resize((64, 64)), "PNG"))).mean() < 0.1


def test_exif_orientation_is_applied(pre: ImagePreprocessor) -> None:
    array = np.zeros((40, 20), np.uint8)
    array[:5, :] = 255  # a bright bar at the top of a tall image
    upright = Image.fromarray(array, "L")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways (wide)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    payload = encode(stored, "JPEG", exif=exif.tobytes(), quality=100)
    np.testing.assert_allclose(run(pre, payload), expected_tensor(upright), atol=0.15)


def test_transparent_pixels_become_white(pre: ImagePreprocessor) -> None:
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # fully transparent black
    tensor = run(pre, encode(rgba))
    np.testing.assert_allclose(tensor, expected_tensor(Image.new("L", (28, 28), 255)), atol=1e-6)


def test_rgb_palette_and_16_bit_images(pre: ImagePreprocessor) -> None:
    rgb = Image.new("RGB", (30, 30), (200, 10, 10))
    np.testing.assert_allclose(run(pre, encode(rgb)), expected_tensor(rgb), atol=1e-5)
    palette = rgb.convert("P")
    assert run(pre, encode(palette)).shape == (1, 28, 28)
    wide = Image.fromarray(np.full((28, 28), 65535, np.uint16))
    assert np.allclose(run(pre, encode(wide)), expected_tensor(Image.new("L", (28, 28), 255)))


def test_base64_json_inputs(pre: ImagePreprocessor) -> None:
    png = encode(Image.new("L", (28, 28), 10))
    text = base64.b64encode(png).decode()
    assert pre.from_json(text) == [png]
    assert pre.from_json([text, "data:image/png;base64," + text]) == [png, png]
    with pytest.raises(BadInput, match="base64"):
        pre.from_json("not base64 !!")
    with pytest.raises(BadInput, match="base64 strings"):
        pre.from_json([12])


def test_non_image_is_415(pre: ImagePreprocessor) -> None:
    with pytest.raises(UnsupportedMediaType):
        pre.decode(b"%PDF-1.4 this is not an image at all")


def test_truncated_image_is_400(pre: ImagePreprocessor) -> None:
    data = (SAMPLE_JPEGS / "china.jpg").read_bytes()
    with pytest.raises(BadInput, match="could not be decoded"):
        pre.decode(data[: len(data) // 3])
    with pytest.raises(BadInput):
        pre.decode(b"")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height pixels."""
    png = encode(Image.new("1", (8, 8)))
    ihdr = png[16:29]
    patched = struct.pack(">II", width, height) + ihdr[8:]
    chunk = b"IHDR" + patched
    return png[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def test_decompression_bomb_is_413_before_decoding(pre: ImagePreprocessor) -> None:
    bomb = _png_claiming(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLarge):
        pre.decode(bomb)
    small_limit = ImagePreprocessor(SPEC, max_pixels=100)
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        small_limit.decode(encode(Image.new("L", (20, 20))))
