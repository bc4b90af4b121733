"""Ready-to-run example requests for each model (printed by `modelgate up`, used in tests)."""

from __future__ import annotations

import base64
import io
import json
import shlex
from typing import Any

from PIL import Image, ImageDraw

from service.repository import ModelSpec

EXAMPLE_TEXT = "the quick brown fox jumps over the lazy dog"


def example_image(spec: ModelSpec) -> bytes:
    """A PNG of a hand-drawn-looking seven, dark on light or light on dark as the model expects."""
    assert spec.image is not None
    size = 28
    # The digit layout reads either polarity, so draw what users send: dark ink on white paper.
    # Otherwise `invert` says whether the model expects dark on light (true) or light on dark.
    dark_on_light = spec.image.layout == "digit" or spec.image.invert
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    image = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    draw.line([(7, 6), (21, 6), (12, 23)], fill=ink, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def example_body(spec: ModelSpec) -> dict[str, Any]:
    """A JSON body for `POST /v1/models/{model}/predict`."""
    if spec.image is not None:
        return {"inputs": [base64.b64encode(example_image(spec)).decode()], "top_k": 3}
    if spec.text is not None:
        return {"inputs": [EXAMPLE_TEXT], "top_k": 3}
    assert spec.sequence is not None
    seq = spec.sequence
    length = max(seq.min_length, min(20, seq.max_length))
    # the training mean, wobbling by one standard deviation: a plausible, in-range recording
    steps = [
        [round(m + (s if t % 2 else -s) * 0.5, 4) for m, s in zip(seq.mean, seq.std, strict=True)]
        for t in range(length)
    ]
    return {"inputs": steps, "top_k": 3}


def curl_command(spec: ModelSpec, base_url: str, api_key: str | None = None) -> str:
    """A shell command that calls the model through the gateway."""
    parts = ["curl", "-s", "-X", "POST", f"{base_url}/v1/models/{spec.name}/predict"]
    parts += ["-H", "Content-Type: application/json"]
    if api_key:
        parts += ["-H", f"Authorization: Bearer {api_key}"]
    parts += ["-d", json.dumps(example_body(spec), separators=(",", ":"))]
    return shlex.join(parts)
