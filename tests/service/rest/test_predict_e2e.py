"""Each model end to end through the real gateway and the real Triton, from raw payloads."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from prometheus_client.parser import text_string_to_metric_families

from service.local_triton import LocalTriton
from tests.service.rest.conftest import GatewayFactory, OnnxReference, RunningGateway
from tests.service.rest.payloads import PHRASES, SAMPLE_JPEGS, digit_pngs, vowel_sequences
from training import digit_fonts

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def predict(gateway: RunningGateway, model: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.post(f"{gateway.url}/v1/models/{model}/predict", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_matches_reference(
    prediction: dict[str, Any], reference: dict[str, float], k: int
) -> None:
    best = max(reference, key=reference.__getitem__)
    assert prediction["label"] == best
    assert prediction["probability"] == pytest.approx(reference[best], abs=1e-4)
    assert len(prediction["top_k"]) == k
    for entry in prediction["top_k"]:
        assert entry["probability"] == pytest.approx(reference[entry["label"]], abs=1e-4)


def test_digits_from_png_uploads_match_onnx_and_the_truth(
    gateway: RunningGateway, onnx_reference: OnnxReference
) -> None:
    files, truth = digit_pngs()
    body = predict(
        gateway,
        "digits_cnn",
        files=[("files", (f"d{i}.png", data, "image/png")) for i, data in enumerate(files)],
        params={"top_k": 3},
    )
    assert body["model"] == "digits_cnn" and body["version"] == "1" and body["request_id"]
    assert len(body["predictions"]) == len(files)
    for prediction, data in zip(body["predictions"], files, strict=True):
        assert_matches_reference(
            prediction, onnx_reference.label_probabilities("digits_cnn", data), 3
        )
    correct = sum(p["label"] == t for p, t in zip(body["predictions"], truth, strict=True))
    assert correct >= 0.8 * len(truth)  # preprocessing agrees with training


def typed_digit(font_file: str, digit: int, dark_on_light: bool) -> bytes:
    """A digit typed in a font at 48 px, somewhere on a 96x80 page, as a user would send it."""
    ink, paper = (0, 255) if dark_on_light else (255, 0)
    page = Image.new("L", (96, 80), paper)
    font = ImageFont.truetype(str(digit_fonts.font_dir() / font_file), 48)
    ImageDraw.Draw(page).text((30 + 3 * digit, 12 + digit), str(digit), fill=ink, font=font)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("dark_on_light", [True, False], ids=["black-on-white", "white-on-black"])
@pytest.mark.parametrize("font", ["DejaVuSerif.ttf", "cmss10.ttf"])
def test_typed_digits_in_a_held_out_font_are_read_correctly(
    gateway: RunningGateway, font: str, dark_on_light: bool
) -> None:
    assert {f.family for f in digit_fonts.held_out_fonts() if f.file == font}  # never trained on
    files = [typed_digit(font, d, dark_on_light) for d in range(10)]
    body = predict(
        gateway,
        "digits_cnn",
        files=[("files", (f"{d}.png", data, "image/png")) for d, data in enumerate(files)],
    )
    assert [p["label"] for p in body["predictions"]] == [str(d) for d in range(10)]


def test_real_jpegs_as_base64_json(gateway: RunningGateway, onnx_reference: OnnxReference) -> None:
    jpegs = [(SAMPLE_JPEGS / name).read_bytes() for name in ("china.jpg", "flower.jpg")]
    body = predict(
        gateway,
        "digits_cnn",
        json={"inputs": [base64.b64encode(j).decode() for j in jpegs], "top_k": 10},
    )
    for prediction, data in zip(body["predictions"], jpegs, strict=True):
        assert_matches_reference(
            prediction, onnx_reference.label_probabilities("digits_cnn", data), 10
        )


def test_text_matches_onnx(gateway: RunningGateway, onnx_reference: OnnxReference) -> None:
    phrases = list(PHRASES)
    body = predict(gateway, "langid_transformer", json={"inputs": phrases, "top_k": 2})
    for prediction, phrase in zip(body["predictions"], phrases, strict=True):
        reference = onnx_reference.label_probabilities("langid_transformer", phrase)
        assert_matches_reference(prediction, reference, 2)
    correct = sum(
        p["label"] == PHRASES[t] for p, t in zip(body["predictions"], phrases, strict=True)
    )
    assert correct >= 5  # a trained language identifier, not noise (8 languages)
    single = predict(gateway, "langid_transformer", json={"inputs": "guten morgen meine freunde"})
    assert len(single["predictions"]) == 1


def test_sequences_match_onnx(gateway: RunningGateway, onnx_reference: OnnxReference) -> None:
    sequences, truth = vowel_sequences()
    body = predict(gateway, "vowels_gru", json={"inputs": sequences, "top_k": 3})
    for prediction, sequence in zip(body["predictions"], sequences, strict=True):
        assert_matches_reference(
            prediction, onnx_reference.label_probabilities("vowels_gru", sequence), 3
        )
    correct = sum(p["label"] == t for p, t in zip(body["predictions"], truth, strict=True))
    assert correct >= 0.7 * len(truth)
    one = predict(gateway, "vowels_gru", json={"inputs": sequences[0]})
    assert one["predictions"][0]["label"] == body["predictions"][0]["label"]


def test_model_listing_shows_input_contracts(gateway: RunningGateway) -> None:
    listing = httpx.get(f"{gateway.url}/v1/models").json()
    by_name = {m["name"]: m for m in listing["models"]}
    assert set(by_name) == {"digits_cnn", "langid_transformer", "vowels_gru"}
    assert by_name["vowels_gru"]["payload"]["channels"] == 12
    assert by_name["digits_cnn"]["inputs"] == [
        {"name": "IMAGE", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    ]
    one = httpx.get(f"{gateway.url}/v1/models/langid_transformer").json()
    assert one["labels"][:3] == ["en", "de", "fr"]
    schema = httpx.get(f"{gateway.url}/openapi.json").json()
    assert "/v1/models/{model}/predict" in schema["paths"]


def _histogram_buckets(text: str, name: str, model: str) -> dict[float, float]:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return {
                float(s.labels["le"]): s.value
                for s in family.samples
                if s.name.endswith("_bucket") and s.labels.get("model") == model
            }
    return {}


def test_concurrent_callers_are_batched_and_each_gets_its_own_answer(
    start_gateway: GatewayFactory, onnx_reference: OnnxReference
) -> None:
    gateway = start_gateway(batch_concurrency=1)
    sequences, _ = vowel_sequences()
    sequences = (sequences * 3)[:40]

    async def call_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/models/vowels_gru/predict", json={"inputs": s, "top_k": 9})
                    for s in sequences
                )
            )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json() for r in responses]

    bodies = asyncio.run(call_all())
    for body, sequence in zip(bodies, sequences, strict=True):
        assert_matches_reference(
            body["predictions"][0], onnx_reference.label_probabilities("vowels_gru", sequence), 9
        )
    assert len({b["request_id"] for b in bodies}) == len(bodies)
    buckets = _histogram_buckets(
        httpx.get(f"{gateway.url}/metrics").text, "modelgate_batch_size", "vowels_gru"
    )
    total_batches = buckets[float("inf")]
    assert buckets[1.0] < total_batches  # some batches carried more than one request
    assert total_batches < len(sequences)


def test_embedded_backend_gives_the_same_answers(
    start_gateway: GatewayFactory, gateway: RunningGateway
) -> None:
    embedded = start_gateway(backend="embedded", triton_url="127.0.0.1:1")  # no Triton used
    assert httpx.get(f"{embedded.url}/readyz").status_code == 200
    phrases = list(PHRASES)
    via_triton = predict(gateway, "langid_transformer", json={"inputs": phrases})
    in_process = predict(embedded, "langid_transformer", json={"inputs": phrases})
    for a, b in zip(via_triton["predictions"], in_process["predictions"], strict=True):
        assert a["label"] == b["label"]
        assert np.isclose(a["probability"], b["probability"], atol=1e-5)


def test_triton_over_http_and_round_robin_with_a_dead_endpoint(
    start_gateway: GatewayFactory, triton_server: LocalTriton, gateway: RunningGateway
) -> None:
    reference = predict(gateway, "langid_transformer", json={"inputs": list(PHRASES)})
    over_http = start_gateway(triton_url=triton_server.http_url, triton_protocol="http")
    body = predict(over_http, "langid_transformer", json={"inputs": list(PHRASES)})
    assert [p["label"] for p in body["predictions"]] == [
        p["label"] for p in reference["predictions"]
    ]

    dead = "127.0.0.1:1"
    spread = start_gateway(triton_url=f"{dead},{triton_server.grpc_url}")
    readiness = httpx.get(f"{spread.url}/readyz").json()
    assert readiness["ready"] is True
    assert readiness["endpoints"] == {dead: False, triton_server.grpc_url: True}
    for _ in range(4):  # every other batch goes to the dead endpoint first and fails over
        again = predict(spread, "langid_transformer", json={"inputs": list(PHRASES)})
        assert [p["label"] for p in again["predictions"]] == [
            p["label"] for p in reference["predictions"]
        ]
