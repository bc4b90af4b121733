"""OIP HTTP routes (`/v2/...`): a thin translation between the protocol and the data plane.

Errors are the protocol's `{"error": "<message>"}` with the status of the gateway's error table,
so tritonclient raises `InferenceServerException` with the message and status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format

from service import __version__, checks
from service.dataplane import DataPlane
from service.errors import ModelGateError, ModelNotFound
from service.oip import core
from service.oip.http_codec import HEADER_LENGTH, decompress, encode_response, parse_request
from service.routing import CLIENT_HEADER

log = logging.getLogger(__name__)

router = APIRouter(tags=["open inference protocol"])

INFER_PATH = "/v2/models/{model}/infer"
INFER_VERSION_PATH = "/v2/models/{model}/versions/{version}/infer"


def _dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def protocol_error(exc: ModelGateError) -> JSONResponse:
    """The OIP error body with the error's HTTP status (and Retry-After where it has one)."""
    return JSONResponse({"error": exc.message}, status_code=exc.http_status, headers=exc.headers)


def _internal_error() -> JSONResponse:
    return JSONResponse({"error": "internal server error"}, status_code=500)


def check_api_key(request: Request) -> None:
    """`service.checks.check_api_key` on this request's Authorization header."""
    checks.check_api_key(_dataplane(request).settings, request.headers.get("authorization"))


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    """Name, version and the protocol extensions this server supports."""
    return {
        "name": core.SERVER_NAME,
        "version": __version__,
        "extensions": list(core.SERVER_EXTENSIONS),
    }


@router.get("/v2/health/live", summary="Server liveness")
async def server_live() -> Response:
    """200 while the process runs."""
    return Response(status_code=200)


@router.get("/v2/health/ready", summary="Server readiness")
async def server_ready(request: Request) -> Response:
    """200 when every model can be served now; 400 (the protocol's "false") otherwise."""
    readiness = await _dataplane(request).ready()
    if readiness.ready:
        return Response(status_code=200)
    return JSONResponse({"error": f"not ready: {readiness.reason}"}, status_code=400)


@router.get("/v2/models/{model}/ready", summary="Model readiness")
@router.get("/v2/models/{model}/versions/{version}/ready", summary="Model version readiness")
async def model_ready(request: Request, model: str, version: str | None = None) -> Response:
    """200 when the model (version) can be served now; 400 otherwise (also for unknown models)."""
    dataplane = _dataplane(request)
    try:
        spec = dataplane.model(model, version)
    except ModelNotFound as exc:
        return JSONResponse({"error": exc.message}, status_code=400)
    readiness = await dataplane.model_ready(spec)
    if readiness.ready:
        return Response(status_code=200)
    return JSONResponse({"error": f"model {model} not ready: {readiness.reason}"}, status_code=400)


@router.get("/v2/models/{model}/config", summary="Model configuration")
@router.get("/v2/models/{model}/versions/{version}/config", summary="Model version configuration")
async def model_config(request: Request, model: str, version: str | None = None) -> Response:
    """The model's config.pbtxt as Triton's JSON (what tritonclient and perf tools read)."""
    try:
        check_api_key(request)
        spec = _dataplane(request).model(model, version)
    except ModelGateError as exc:
        return protocol_error(exc)
    config = json_format.MessageToDict(spec.config, preserving_proto_field_name=True)
    return JSONResponse(config)


@router.get("/v2/models/{model}", summary="Model metadata")
@router.get("/v2/models/{model}/versions/{version}", summary="Model version metadata")
async def model_metadata(request: Request, model: str, version: str | None = None) -> Response:
    """Inputs (the model's own plus its raw-payload BYTES input) and outputs with shapes."""
    try:
        check_api_key(request)
        spec = _dataplane(request).model(model, version)
    except ModelGateError as exc:
        return protocol_error(exc)
    return JSONResponse(core.model_metadata(spec).as_dict())


@router.post(INFER_PATH, summary="Inference")
@router.post(INFER_VERSION_PATH, summary="Inference on a version")
async def infer(request: Request, model: str, version: str | None = None) -> Response:
    """Tensor passthrough or raw payloads, JSON or binary tensor data (see docs/oip.md)."""
    dataplane = _dataplane(request)
    headers = request.headers
    try:
        async with dataplane.track(
            model, "infer", "v2_http", request.state.request_id, headers
        ) as scope:
            checks.check_api_key(dataplane.settings, headers.get("authorization"))
            spec = dataplane.model(model, version)
            if model in dataplane.routing:  # only a routing policy can use the client's id
                scope.client_key = headers.get(CLIENT_HEADER)
            checks.check_declared_size(dataplane.settings, headers.get("content-length"))
            body = decompress(
                await request.body(),
                headers.get("content-encoding"),
                dataplane.settings.max_body_bytes,
            )
            decoded = parse_request(body, headers.get(HEADER_LENGTH))
            outputs = await core.infer(
                dataplane, model, version, decoded.inputs, decoded.outputs, decoded.top_k, scope
            )
            answered = scope.spec or spec
            content, header_length = encode_response(spec.name, answered.version, decoded, outputs)
    except ModelGateError as exc:
        return protocol_error(exc)
    except Exception:  # already logged with its trace by `track`
        return _internal_error()
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )


@router.api_route(
    "/v2/{path:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
    include_in_schema=False,
)
async def not_supported(path: str) -> Response:
    """Other protocol routes (shared memory, repository control, ...) in the protocol's format."""
    return JSONResponse({"error": f"/v2/{path} is not supported by this server"}, status_code=404)
