"""Images: any Pillow format to a normalised [C, H, W] float tensor.

`image_tensor` is the one definition of the arithmetic: training (training/features.py) calls it
on every example, the gateway on every decoded payload.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadInput, PayloadTooLarge, UnsupportedMediaType
from service.preprocess.base import Preprocessor
from service.preprocess.digit import centre_digit
from service.repository import ImageSpec

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def decode_base64(value: Any) -> bytes:
    """Bytes from a base64 string (a `data:` URL prefix is accepted)."""
    if not isinstance(value, str):
        raise BadInput(f"image inputs in JSON must be base64 strings, got {type(value).__name__}")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"image input is not valid base64: {exc}") from exc


class ImagePreprocessor(Preprocessor):
    """Decodes with Pillow (modes, EXIF orientation, bombs), then `image_tensor` per the spec."""

    def __init__(self, spec: ImageSpec, max_pixels: int) -> None:
        check_spec(spec)
        self.spec = spec
        self.max_pixels = max_pixels

    def from_json(self, value: Any) -> list[Any]:
        values = value if isinstance(value, list) else [value]
        return [decode_base64(v) for v in values]

    def decode(self, payload: Any) -> Image.Image:
        if isinstance(payload, bytearray | memoryview):
            payload = bytes(payload)
        if not isinstance(payload, bytes):
            raise BadInput(f"an image payload must be bytes, got {type(payload).__name__}")
        if not payload:
            raise BadInput("empty image payload")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image: Image.Image = Image.open(io.BytesIO(payload))
                # Check the declared size before decoding any pixel: a tiny file may claim
                # gigapixels (decompression bomb).
                width, height = image.size
                if width * height > self.max_pixels:
                    raise PayloadTooLarge(
                        f"image of {width}x{height} pixels exceeds the limit of {self.max_pixels}"
                    )
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PayloadTooLarge(f"image rejected as a decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise UnsupportedMediaType(
                "payload is not an image in a format the server reads"
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise BadInput(f"image could not be decoded: {exc}") from exc
        image = ImageOps.exif_transpose(image) or image
        return self._to_mode(image)

    def _to_mode(self, image: Image.Image) -> Image.Image:
        mode = self.spec.color_mode
        if image.mode == mode:
            return image
        # Transparent pixels become white paper rather than whatever colour they hide.
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # 16-bit / float greyscale: scale to 8 bits the way training images were stored
            array = np.asarray(image, dtype=np.float64)
            peak = float(array.max()) or 1.0
            image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), "L")
        return image.convert(mode)

    def preprocess(self, decoded: Image.Image) -> dict[str, np.ndarray]:
        return {self.spec.input: image_tensor(decoded, self.spec)}


def check_spec(spec: ImageSpec) -> None:
    """ValueError when the spec cannot work, before any image is seen."""
    if spec.resample not in _RESAMPLE:
        raise ValueError(f"unknown resample {spec.resample!r}")
    if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        raise ValueError("mean and std need one value per channel")
    if spec.layout not in ("resize", "digit"):
        raise ValueError(f"unknown image layout {spec.layout!r}")
    if spec.layout == "digit" and (
        spec.channels != 1 or not 0 < spec.digit_box <= min(spec.height, spec.width)
    ):
        raise ValueError("the digit layout needs 1 channel and a box that fits the canvas")


def image_tensor(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """One image in the spec's colour mode -> the model's [C, H, W] float32 input."""
    if spec.layout == "digit":
        pixels = centre_digit(np.asarray(image, dtype=np.float32), spec)[None]
    else:
        resized = image.resize((spec.width, spec.height), _RESAMPLE[spec.resample])
        pixels = np.asarray(resized, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        pixels = pixels.transpose(2, 0, 1)  # HWC -> CHW
        if spec.invert:
            pixels = 255.0 - pixels
    if pixels.shape[0] != spec.channels:
        raise BadInput(
            f"image has {pixels.shape[0]} channels after conversion, "
            f"the model needs {spec.channels}"
        )
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    tensor = (pixels * np.float32(spec.scale) - mean) / std
    return np.ascontiguousarray(tensor, dtype=np.float32)
