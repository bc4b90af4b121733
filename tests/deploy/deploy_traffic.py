"""Real requests for the local stack: one valid REST payload per model kind, plus bad ones."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Request:
    model: str
    body: dict[str, Any]


def valid_requests(repository: Path, seed: int = 0) -> list[Request]:
    """A few predict bodies per model, built from each model's preprocessing.json contract."""
    rng = np.random.default_rng(seed)
    requests = []
    for pre_path in sorted(repository.glob("*/preprocessing.json")):
        model = pre_path.parent.name
        pre = json.loads(pre_path.read_text())
        for _ in range(4):
            if pre["kind"] == "image":
                spec = pre["image"]
                pixels = rng.integers(0, 256, (spec["height"], spec["width"]), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
                payload: Any = base64.b64encode(buffer.getvalue()).decode()
            elif pre["kind"] == "text":
                payload = str(rng.choice(["hello world", "bonjour le monde", "hola mundo"]))
            else:
                spec = pre["sequence"]
                length = int(rng.integers(spec["min_length"], min(spec["max_length"], 24) + 1))
                payload = rng.normal(size=(length, spec["channels"])).round(4).tolist()
            requests.append(Request(model, {"inputs": [payload], "top_k": 2}))
    assert requests, f"no models with preprocessing.json in {repository}"
    return requests


def bad_requests(repository: Path) -> list[Request]:
    """Requests the gateway must refuse with a 4xx (they feed the error metrics)."""
    models = sorted(p.parent.name for p in repository.glob("*/preprocessing.json"))
    return [Request(models[0], {"inputs": 42}), Request("no_such_model", {"inputs": ["x"]})]


def send(client: httpx.Client, request: Request) -> httpx.Response:
    return client.post(f"/v1/models/{request.model}/predict", json=request.body, timeout=10.0)
