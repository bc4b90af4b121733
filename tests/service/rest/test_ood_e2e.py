"""Out-of-distribution scores and flags in answers, through the real gateway and the real Triton."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.monitoring.ood import OodDetector
from tests.service.rest.conftest import GatewayFactory, OnnxReference, RunningGateway
from tests.service.rest.payloads import SAMPLE_JPEGS, digit_pngs

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

# Whole-photo and corner crops of scikit-learn's china.jpg: far from any digit.
PHOTO_BOXES = ((0, 0, 427, 427), (300, 100, 400, 200))


def photo_png(box: tuple[int, int, int, int]) -> bytes:
    crop = Image.open(SAMPLE_JPEGS / "china.jpg").convert("L").crop(box)
    buffer = io.BytesIO()
    crop.save(buffer, "PNG")
    return buffer.getvalue()


def reference_score(onnx_reference: OnnxReference, model_repository: Path, payload: Any) -> float:
    """The committed detector on the model's own tensors and ONNX Runtime's logits."""
    spec = onnx_reference.spec("digits_cnn")
    detector = OodDetector.load(model_repository / "digits_cnn" / spec.version)
    assert detector is not None
    tensors = {k: v[None, ...] for k, v in onnx_reference.tensors("digits_cnn", payload).items()}
    session = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([spec.output], tensors)
    return float(detector.score(tensors, logits)[0])


def ood_counts(gateway: RunningGateway) -> dict[str, float]:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("modelgate_ood_scored", "modelgate_ood_flagged"):
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["model"] == "digits_cnn":
                    counts[family.name] = sample.value
                    assert sample.labels["version"] == "1"
    return counts


def test_rest_scores_match_the_detector_and_flag_photos_not_digits(
    gateway: RunningGateway, onnx_reference: OnnxReference, model_repository: Path
) -> None:
    digits, _ = digit_pngs()
    photos = [photo_png(box) for box in PHOTO_BOXES]
    payloads = [digits[0], *photos]
    before = ood_counts(gateway)
    response = httpx.post(
        f"{gateway.url}/v1/models/digits_cnn/predict",
        files=[("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(payloads)],
        timeout=30,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for prediction, payload in zip(predictions, payloads, strict=True):
        expected = reference_score(onnx_reference, model_repository, payload)
        assert prediction["ood_score"] == pytest.approx(expected, abs=2e-4)
    assert [p["ood"] for p in predictions] == [False, True, True]
    after = ood_counts(gateway)
    assert after["modelgate_ood_scored"] - before.get("modelgate_ood_scored", 0) == 3
    assert after["modelgate_ood_flagged"] - before.get("modelgate_ood_flagged", 0) == 2


def test_held_out_digits_are_rarely_flagged(gateway: RunningGateway) -> None:
    digits, _ = digit_pngs()
    response = httpx.post(
        f"{gateway.url}/v1/models/digits_cnn/predict",
        files=[("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(digits)],
        timeout=30,
    )
    flags = [p["ood"] for p in response.json()["predictions"]]
    assert len(flags) == len(digits) and sum(flags) <= 2  # calibrated at a few percent


def test_stock_tritonclient_gets_ood_outputs_over_grpc_and_http(gateway: RunningGateway) -> None:
    digits, _ = digit_pngs()
    raw = np.array([[digits[0]], [photo_png(PHOTO_BOXES[0])]], dtype=object)
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    image = grpcclient.InferInput("IMAGE_BYTES", [2, 1], "BYTES")
    image.set_data_from_numpy(raw)
    result = client.infer("digits_cnn", [image])
    assert result.as_numpy("OOD").tolist() == [[False], [True]]
    scores = result.as_numpy("OOD_SCORE")
    assert scores.dtype == np.float32 and scores.shape == (2, 1) and scores[1, 0] > scores[0, 0]
    client.close()

    http = httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))
    pixels = httpclient.InferInput("IMAGE", [1, 1, 28, 28], "FP32")
    pixels.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    answer = http.infer(
        "digits_cnn",
        [pixels],
        outputs=[httpclient.InferRequestedOutput(n) for n in ("OOD_SCORE", "OOD")],
    )
    assert answer.as_numpy("OOD_SCORE").shape == (1, 1)
    assert answer.as_numpy("OOD").dtype == np.bool_
    http.close()


def test_the_setting_turns_scoring_off(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(ood_enabled=False)
    digits, _ = digit_pngs()
    response = httpx.post(
        f"{gateway.url}/v1/models/digits_cnn/predict",
        files=[("files", ("d.png", digits[0], "image/png"))],
        timeout=30,
    )
    prediction = response.json()["predictions"][0]
    assert "ood" not in prediction and "ood_score" not in prediction
    assert ood_counts(gateway) == {}
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    image = grpcclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[digits[0]]], dtype=object))
    names = [o.name for o in client.infer("digits_cnn", [image]).get_response().outputs]
    assert names == ["LOGITS", "PROBABILITIES", "LABELS"]
    asked = [grpcclient.InferRequestedOutput("OOD")]
    with pytest.raises(Exception, match="out-of-distribution monitoring"):
        client.infer("digits_cnn", [image], outputs=asked)
    client.close()


def test_the_embedded_backend_scores_too(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(backend="embedded")
    response = httpx.post(
        f"{gateway.url}/v1/models/langid_transformer/predict",
        json={"inputs": ["guten morgen meine freunde", "ğüşıçö ğüşıçö ğüşıçö"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    flags = [p["ood"] for p in response.json()["predictions"]]
    assert flags == [False, True]
