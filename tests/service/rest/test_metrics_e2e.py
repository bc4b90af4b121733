"""/metrics agrees with the requests sent (a fresh gateway, so counts are exact)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from service.metrics import LATENCY_BUCKETS, STAGE_BUCKETS
from tests.service.rest.conftest import GatewayFactory
from tests.service.rest.payloads import PHRASES, digit_pngs

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    all_samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum over the samples of `name` that carry `labels` (other labels: any value)."""
    wanted = frozenset(labels.items())
    return sum(v for (n, have), v in all_samples.items() if n == name and wanted <= have)


def test_metrics_match_the_traffic(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway()
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    url = f"{gateway.url}/v1/models"
    phrases = list(PHRASES)
    for phrase in phrases[:5]:
        assert (
            httpx.post(f"{url}/langid_transformer/predict", json={"inputs": phrase}).status_code
            == 200
        )
    files, _ = digit_pngs()
    upload = [("files", ("d.png", files[0], "image/png"))]
    assert httpx.post(f"{url}/digits_cnn/predict", files=upload).status_code == 200
    assert httpx.post(f"{url}/langid_transformer/predict", json={"inputs": ""}).status_code == 400
    assert httpx.post(f"{url}/langid_transformer/predict", json={"inputs": 3}).status_code == 400
    assert httpx.post(f"{url}/nope/predict", json={"inputs": "x"}).status_code == 404

    response = httpx.get(f"{gateway.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    s = samples(response.text)
    rest = {"endpoint": "predict", "protocol": "rest"}
    assert (
        value(s, "modelgate_requests_total", model="langid_transformer", status_class="2xx", **rest)
        == 5
    )
    assert (
        value(s, "modelgate_requests_total", model="langid_transformer", status_class="4xx", **rest)
        == 2
    )
    assert value(s, "modelgate_requests_total", model="digits_cnn", status_class="2xx", **rest) == 1
    # the version label names the version that answered ("none": ended before one was chosen)
    assert value(s, "modelgate_requests_total", model="digits_cnn", version="1", **rest) == 1
    assert value(s, "modelgate_requests_total", model="unknown", version="none", **rest) == 1
    assert value(s, "modelgate_requests_total", model="unknown", status_class="4xx", **rest) == 1
    assert value(s, "modelgate_errors_total", model="langid_transformer", reason="bad_input") == 2
    assert value(s, "modelgate_errors_total", model="unknown", reason="not_found") == 1
    assert value(s, "modelgate_errors_total", model="digits_cnn", reason="overload") == 0
    assert (
        value(
            s,
            "modelgate_request_duration_seconds_count",
            model="langid_transformer",
            status_class="2xx",
            **rest,
        )
        == 5
    )
    for stage in ("decode", "preprocess", "queue_wait", "triton", "postprocess"):
        assert (
            value(
                s, "modelgate_stage_duration_seconds_count", model="langid_transformer", stage=stage
            )
            == 5
        )
    assert (
        value(s, "modelgate_stage_duration_seconds_count", model="digits_cnn", stage="decode") == 1
    )
    assert value(s, "modelgate_batch_size_sum", model="langid_transformer") == 5
    assert value(s, "modelgate_inflight_requests") == 0
    assert value(s, "modelgate_queue_depth", model="langid_transformer") == 0
    assert value(s, "modelgate_triton_up", endpoint=gateway.settings.triton_url) == 1
    # each histogram exposes exactly the buckets service.metrics defines for it
    for histogram, buckets in (
        ("modelgate_request_duration_seconds_bucket", LATENCY_BUCKETS),
        ("modelgate_stage_duration_seconds_bucket", STAGE_BUCKETS),
    ):
        les = {dict(labels)["le"] for (name, labels) in s if name == histogram}
        assert les == {*map(floatToGoString, buckets), "+Inf"}
    # the stage buckets resolve tens of microseconds
    assert STAGE_BUCKETS[0] <= 0.00001 and STAGE_BUCKETS[2] <= 0.00005
