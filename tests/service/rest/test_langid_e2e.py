"""The served language identifier answers everyday phrases correctly, through the real gateway."""

from __future__ import annotations

import httpx
import pytest

from tests.service.rest.conftest import RunningGateway

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

EVERYDAY_PHRASES = {
    "ich habe hunger": "de",
    "où est la gare": "fr",
    "wo ist der bahnhof": "de",
    "dónde está la biblioteca": "es",
}


@pytest.mark.parametrize(("phrase", "language"), EVERYDAY_PHRASES.items())
def test_everyday_phrase_is_identified(gateway: RunningGateway, phrase: str, language: str) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/models/langid_transformer/predict",
        json={"inputs": phrase, "top_k": 3},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [prediction] = response.json()["predictions"]
    assert prediction["label"] == language, prediction


def test_case_and_unicode_forms_are_normalised_by_the_served_tokenizer(
    gateway: RunningGateway,
) -> None:
    # NFKC and lowercasing live in tokenizer.json, so the gateway needs no text rules of its own.
    variants = ["OÙ EST LA GARE", "où est la gare", "ou\u0300 est  la gare"]
    response = httpx.post(
        f"{gateway.url}/v1/models/langid_transformer/predict",
        json={"inputs": variants},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert {p["label"] for p in predictions} == {"fr"}
    assert predictions[0]["probability"] == pytest.approx(predictions[1]["probability"], abs=1e-6)
    assert predictions[2]["probability"] == pytest.approx(predictions[1]["probability"], abs=1e-6)
