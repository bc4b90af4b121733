"""Real requests for the local stack: held-out payloads per model, and bad ones."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.service.rest.payloads import PHRASES, digit_pngs, vowel_sequences


@dataclass(frozen=True)
class Request:
    model: str
    body: dict[str, Any]


def valid_requests(repository: Path, count: int = 4) -> list[Request]:
    """`count` predict bodies per model of the repository, one real input each."""
    images = [base64.b64encode(png).decode() for png in digit_pngs(count)[0]]
    texts = list(PHRASES)[:count]
    sequences = vowel_sequences(count)[0]
    by_kind: dict[str, list[Any]] = {"image": images, "text": texts, "sequence": sequences}
    requests = []
    for pre_path in sorted(repository.glob("*/preprocessing.json")):
        kind = json.loads(pre_path.read_text())["kind"]
        for payload in by_kind[kind]:
            requests.append(Request(pre_path.parent.name, {"inputs": [payload], "top_k": 2}))
    assert requests, f"no models with preprocessing.json in {repository}"
    return requests


def bad_requests(repository: Path) -> list[Request]:
    """Requests the gateway must refuse with a 4xx (they feed the error metrics)."""
    models = sorted(p.parent.name for p in repository.glob("*/preprocessing.json"))
    return [Request(models[0], {"inputs": 42}), Request("no_such_model", {"inputs": ["x"]})]


def send(client: httpx.Client, request: Request) -> httpx.Response:
    return client.post(f"/v1/models/{request.model}/predict", json=request.body, timeout=10.0)
