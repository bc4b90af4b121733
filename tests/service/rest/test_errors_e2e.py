"""Every error class over real HTTP: status, JSON body, no trace; the service keeps serving."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.service.rest.conftest import GatewayFactory, RunningGateway
from tests.service.rest.payloads import PHRASES, SAMPLE_JPEGS, digit_pngs, vowel_sequences

pytestmark = [pytest.mark.triton, pytest.mark.gateway]


def post(gateway: RunningGateway, model: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/models/{model}/predict", timeout=30, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def assert_still_serving(gateway: RunningGateway) -> None:
    response = post(gateway, "langid_transformer", json={"inputs": "the weather is nice today"})
    assert response.status_code == 200, response.text


def _truncated_jpeg() -> str:
    return base64.b64encode((SAMPLE_JPEGS / "china.jpg").read_bytes()[:5000]).decode()


# (model, request keyword arguments (built when the case runs), status, error code)
CLIENT_ERRORS: list[tuple[str, Callable[[], dict[str, Any]], int, str]] = [
    ("nope", lambda: {"json": {"inputs": "x"}}, 404, "not_found"),
    ("digits_cnn", lambda: {"json": {"inputs": "%%% not base64"}}, 400, "bad_input"),
    ("digits_cnn", lambda: {"json": {"inputs": _truncated_jpeg()}}, 400, "bad_input"),
    ("digits_cnn", lambda: {"files": [("files", ("a.txt", b"hello there", "text/plain"))]}, 415,
     "unsupported_media"),
    ("digits_cnn", lambda: {"files": [("other", ("a.png", digit_pngs()[0][0], "image/png"))]},
     400, "bad_input"),
    ("langid_transformer",
     lambda: {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media"),
    ("langid_transformer", lambda: {"files": [("files", ("a.png", b"x", "image/png"))]}, 415,
     "unsupported_media"),
    ("langid_transformer", lambda: {"json": {"text": "missing inputs"}}, 422, "bad_input"),
    ("langid_transformer", lambda: {"content": b"{not json", "headers": {"content-type":
     "application/json"}}, 422, "bad_input"),
    ("langid_transformer", lambda: {"json": {"inputs": ""}}, 400, "bad_input"),
    ("langid_transformer", lambda: {"json": {"inputs": [1, 2]}}, 400, "bad_input"),
    ("langid_transformer", lambda: {"json": {"inputs": ["a"] * 65}}, 400, "bad_input"),
    ("langid_transformer", lambda: {"json": {"inputs": "x"}, "params": {"top_k": 0}}, 422,
     "bad_input"),
    ("vowels_gru", lambda: {"json": {"inputs": [[0.1] * 11] * 5}}, 400, "bad_input"),
    ("vowels_gru", lambda: {"json": {"inputs": [[0.1] * 12] * 65}}, 400, "bad_input"),
    ("vowels_gru", lambda: {"json": {"inputs": [[0.1] * 12, [0.2] * 11]}}, 400, "bad_input"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "request_kwargs", "status", "code"), CLIENT_ERRORS)
def test_client_error(
    gateway: RunningGateway,
    model: str,
    request_kwargs: Callable[[], dict[str, Any]],
    status: int,
    code: str,
) -> None:
    assert_error(post(gateway, model, **request_kwargs()), status, code)
    assert_still_serving(gateway)


def test_unknown_route_is_a_json_not_found(gateway: RunningGateway) -> None:
    assert_error(httpx.get(f"{gateway.url}/no/such/route"), 404, "not_found")


def test_decompression_bomb_is_refused(gateway: RunningGateway) -> None:
    big = Image.new("1", (6000, 6000))  # 36 Mpx, a few kB as PNG
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    response = post(
        gateway, "digits_cnn", files=[("files", ("b.png", buffer.getvalue(), "image/png"))]
    )
    assert_error(response, 413, "too_large")
    assert_still_serving(gateway)


def test_body_size_limit(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(max_body_bytes=4096)
    big = {"inputs": ["word " * 2000]}
    assert_error(post(gateway, "langid_transformer", json=big), 413, "too_large")

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        yield b'{"inputs": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = post(
        gateway,
        "langid_transformer",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert_error(response, 413, "too_large")
    assert_still_serving(gateway)


def test_declared_but_unsent_body_is_rejected_before_reading(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(max_body_bytes=4096)
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/models/langid_transformer/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer


def test_api_key_protects_inference_only(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(api_key="s3cret")
    body = {"inputs": "the weather is nice today"}
    assert_error(post(gateway, "langid_transformer", json=body), 401, "unauthorized")
    wrong = {"Authorization": "Bearer nope"}
    assert_error(post(gateway, "langid_transformer", json=body, headers=wrong), 401, "unauthorized")
    assert_error(httpx.get(f"{gateway.url}/v1/models"), 401, "unauthorized")
    good = {"Authorization": "Bearer s3cret"}
    assert post(gateway, "langid_transformer", json=body, headers=good).status_code == 200
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    assert httpx.get(f"{gateway.url}/metrics").status_code == 200


def test_overload_sheds_with_503_and_retry_after(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(max_queue_size=2, batch_concurrency=1, max_batch_size=2)
    sequences, _ = vowel_sequences()

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/models/vowels_gru/predict", json={"inputs": sequences[i % 16]})
                    for i in range(60)
                )
            )

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}
    shed = [r for r in responses if r.status_code == 503]
    assert shed and statuses.count(200) >= 2  # at least a full queue was accepted
    for response in shed:
        assert_error(response, 503, "overload")
        assert response.headers["retry-after"] == "1"
    assert_still_serving(gateway)


def test_deadline_gives_504(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(request_timeout_s=0.000001)
    response = post(gateway, "langid_transformer", json={"inputs": list(PHRASES)})
    assert_error(response, 504, "timeout")
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'modelgate_errors_total{model="langid_transformer",reason="timeout"} 1.0' in metrics
