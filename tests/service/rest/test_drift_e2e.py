"""Drift monitoring in a real gateway in front of the real Triton: every answered item enters its
model version's window over every transport that sends raw payloads, failed items do not, and
the setting turns it off completely."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.service.rest.conftest import GatewayFactory
from tests.service.rest.payloads import PHRASES, digit_pngs, vowel_sequences

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def drift_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("modelgate_drift")
    }


def window_items(gateway_url: str) -> dict[str, float]:
    found = drift_samples(httpx.get(f"{gateway_url}/metrics").text)
    return {
        dict(labels)["model"]: value
        for (name, labels), value in found.items()
        if name == "modelgate_drift_window_items"
    }


def test_answered_items_enter_the_window_of_their_model(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(drift_min_items=3)
    url = f"{gateway.url}/v1/models"
    assert window_items(gateway.url) == {"digits_cnn": 0, "langid_transformer": 0, "vowels_gru": 0}
    images = [base64.b64encode(png).decode() for png in digit_pngs(4)[0]]
    assert httpx.post(f"{url}/digits_cnn/predict", json={"inputs": images}).status_code == 200
    phrases = list(PHRASES)[:2]
    assert (
        httpx.post(f"{url}/langid_transformer/predict", json={"inputs": phrases}).status_code == 200
    )
    # refused items (no ink; one bad sequence fails the whole request) are not counted
    paper = io.BytesIO()
    Image.new("L", (16, 16), 255).save(paper, format="PNG")
    blank = base64.b64encode(paper.getvalue()).decode()
    assert httpx.post(f"{url}/digits_cnn/predict", json={"inputs": [blank]}).status_code == 400
    sequences = vowel_sequences(2)[0]
    bad = [sequences[0], [[1.0, 2.0]]]
    assert httpx.post(f"{url}/vowels_gru/predict", json={"inputs": bad}).status_code == 400
    # OIP over gRPC with raw payloads (BYTES text) goes through the same data plane
    client = grpcclient.InferenceServerClient(gateway.grpc_url)
    text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"hej och v\xc3\xa4lkommen"]], dtype=object))
    client.infer("langid_transformer", [text])
    client.close()
    assert window_items(gateway.url) == {"digits_cnn": 4, "langid_transformer": 3, "vowels_gru": 0}

    found = drift_samples(httpx.get(f"{gateway.url}/metrics").text)
    digits_psi = {
        dict(labels)["feature"]: value
        for (name, labels), value in found.items()
        if name == "modelgate_drift_psi" and dict(labels)["model"] == "digits_cnn"
    }
    assert set(digits_psi) >= {"intensity_mean", "dark_on_light", "prediction_class"}
    assert all(np.isfinite(v) for v in digits_psi.values())  # 4 items >= drift_min_items
    vowels_psi = [
        value
        for (name, labels), value in found.items()
        if name == "modelgate_drift_psi" and dict(labels)["model"] == "vowels_gru"
    ]
    assert len(vowels_psi) == 27 and all(np.isnan(v) for v in vowels_psi)  # empty window


def test_drift_monitoring_off_exports_and_stores_nothing(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(drift_monitoring=False)
    images = [base64.b64encode(png).decode() for png in digit_pngs(2)[0]]
    response = httpx.post(f"{gateway.url}/v1/models/digits_cnn/predict", json={"inputs": images})
    assert response.status_code == 200
    assert drift_samples(httpx.get(f"{gateway.url}/metrics").text) == {}
    dataplane = gateway.app.state.dataplane
    assert dataplane.drift is None
    assert all(
        model.drift is None
        for served in dataplane._served.values()
        for model in served.versions.values()
    )
